"""tools/benchmark.py on the ASAPNet and SPADE families: MACs as defined and as run, ratios, memory, files."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from tests.conftest import REPO


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), *args], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=900)


def test_compare_asapnet_spade_reports_macs_ratio_and_memory(tmp_path):
    out = tmp_path / "bench.json"
    r = _bench("compare=[asapnet,spade]", "res=[256x512,256x256]", "runs=2", "warmup=1", "threads=2", f"out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(row["model"], row["res"]) for row in rows] == [("asapnet", "256x512"), ("spade", "256x512"),
                                                            ("asapnet", "256x256"), ("spade", "256x256")]
    for row in rows:
        for key in ("model", "res", "batch", "params", "macs", "latency_ms_median", "peak_mem_mb"):
            assert row[key] is not None, key
        assert row["threads"] == 2 and row["latency_ms_median"] > 0 and row["peak_mem_mb"] > 0
    by = {(row["model"], row["res"]): row for row in rows}
    asap, spade = by["asapnet", "256x512"], by["spade", "256x512"]
    # Cityscapes defaults: the official ASAPNet generator is 83.2 M params and 48.9 GMAC at 256x512
    assert abs(asap["params"] / 1e6 - 83.20) < 0.01 and abs(asap["macs"] / 1e9 - 48.88) < 0.05
    assert asap["macs_executed"] < 0.7 * asap["macs"]  # the wide convs ran as Winograd
    assert spade["macs_executed"] == spade["macs"]
    assert abs(by["asapnet", "256x256"]["macs"] / asap["macs"] - 0.5) < 0.01  # square now builds (S = 16)
    ratio = spade["latency_ms_median"] / asap["latency_ms_median"]
    assert f"256x512: asapnet is {ratio:.2f}x faster than spade (MAC ratio {spade['macs'] / asap['macs']:.2f}x)" \
        in r.stdout
    assert "run GMACs" in r.stdout and "1 MAC = 2 FLOPs" in r.stdout


def test_csv_output_and_bad_arguments(tmp_path):
    out = tmp_path / "bench.csv"
    r = _bench("models=[asapnet]", "res=[256x512]", "runs=1", "warmup=0", "memory=false", f"out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["model"] == "asapnet" and float(rows[0]["macs"]) > 4e10
    for args, msg in [(("models=[nope]",), "unknown benchmark model 'nope'"),
                      (("models=[asapnet]", "res=[256by512]"), "HxW sizes, e.g. [256x512"),
                      (("models=[asapnet]", "res=[384x768]"), "power of two"),
                      (("models=[asapnet]", "dtype=int8"), "must be one of float32, bfloat16, float16")]:
        r = _bench(*args, "runs=1", "warmup=0")
        assert r.returncode != 0
        lines = [ln for ln in r.stderr.strip().splitlines() if ln]
        assert len(lines) == 1 and msg in lines[0], r.stderr[-1000:]
        assert "Traceback" not in r.stderr
