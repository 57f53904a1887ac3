"""tools/translate.py end to end: outputs, determinism, official fixture rendering, and every bad-input case."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asap.models.asapnet import ASAPNetGenerator
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_torch
from tests.conftest import REPO, fixture_dir

TOOL = str(REPO / "tools" / "translate.py")
TINY = dict(label_nc=5, instance_edge=True, lr_instance=True, downsampling=8, learned_ds_factor=4, lr_width=4,
            lr_max_width=8, lr_depth=1, hr_width=8, hr_depth=2, image_size=[32, 64])


def run_tool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    g = ASAPNetGenerator(**TINY)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (g, {"_target_": "asap.models.asapnet.ASAPNetGenerator", **TINY})},
                               step=0), path)
    return path


def write_label(path: Path, h: int = 32, w: int = 64, seed: int = 0, max_id: int = 5) -> Path:
    rng = np.random.default_rng(seed)
    ids = np.repeat(np.repeat(rng.integers(0, max_id, (h // 8, w // 8)), 8, 0), 8, 1).astype(np.uint8)
    Image.fromarray(ids).save(path)
    return path


def test_translate_writes_one_png_per_input_deterministically(tmp_path, tiny_ckpt):
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(3):
        write_label(labels / f"scene_{i}.png", seed=i)
    write_label(tmp_path / "other.png", h=48, w=80, seed=9)  # another size: resized to the model's 32x64
    r = run_tool(str(labels), str(tmp_path / "other.png"), f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'a'}")
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout
    outs = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert outs == ["other.png", "scene_0.png", "scene_1.png", "scene_2.png"]
    for name in outs:
        arr = np.array(Image.open(tmp_path / "a" / name))
        assert arr.dtype == np.uint8 and arr.shape == (32, 64, 3)
    r = run_tool(str(labels), f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'b'}", "batch_size=1")
    assert r.returncode == 0, r.stderr
    for i in range(3):
        assert np.array_equal(np.array(Image.open(tmp_path / "a" / f"scene_{i}.png")),
                              np.array(Image.open(tmp_path / "b" / f"scene_{i}.png")))
    # different label maps give different images
    assert not np.array_equal(np.array(Image.open(tmp_path / "a" / "scene_0.png")),
                              np.array(Image.open(tmp_path / "a" / "scene_1.png")))


def test_translate_native_size_pads_and_crops(tmp_path, tiny_ckpt):
    write_label(tmp_path / "odd.png", h=40, w=72)
    r = run_tool(str(tmp_path / "odd.png"), f"checkpoint={tiny_ckpt}", f"out={tmp_path / 'o'}", "resize=native")
    assert r.returncode == 0, r.stderr
    assert np.array(Image.open(tmp_path / "o" / "odd.png")).shape == (40, 72, 3)


def test_translate_official_fixture_matches_official_png(tmp_path):
    d = fixture_dir("asapnet")
    meta = json.loads((d / "meta.json").read_text())
    opts = [f"+official.{k}={v}" for k, v in meta["options"].items()]
    for b in range(meta["batch"]):
        r = run_tool(str(d / f"label_{b}.png"), f"instance={d / f'instance_{b}.png'}",
                     f"checkpoint={d / 'latest_net_G.pth'}", f"out={tmp_path}", *opts)
        assert r.returncode == 0, r.stderr
        ours = np.array(Image.open(tmp_path / f"label_{b}.png")).astype(int)
        ref = np.array(Image.open(d / f"expected_{b}.png")).astype(int)
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1


def test_colour_coded_cityscapes_labels(tmp_path):
    from asap.data.palettes import colorize, get_palette
    torch.manual_seed(0)
    kw = dict(TINY, label_nc=35)
    g = ASAPNetGenerator(**kw)
    ckpt = tmp_path / "c.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (g, {"_target_": "asap.models.asapnet.ASAPNetGenerator", **kw})}), ckpt)
    ids = np.repeat(np.repeat(np.array([[7, 8, 11, 21], [23, 24, 26, 7]], np.uint8), 16, 0), 16, 1)
    Image.fromarray(ids).save(tmp_path / "ids.png")
    Image.fromarray(colorize(ids, get_palette("cityscapes"))).save(tmp_path / "color.png")
    r = run_tool(str(tmp_path / "ids.png"), str(tmp_path / "color.png"), f"checkpoint={ckpt}", f"out={tmp_path / 'o'}")
    assert r.returncode == 0, r.stderr
    assert np.array_equal(np.array(Image.open(tmp_path / "o" / "ids.png")), np.array(Image.open(tmp_path / "o" / "color.png")))


def assert_clean_failure(r: subprocess.CompletedProcess, out: Path, *needles: str) -> None:
    assert r.returncode != 0
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["missing", "corrupt", "bad_ids", "channels", "truncated_ckpt", "other_family",
                                  "wrong_options", "missing_ckpt"])
def test_bad_input_one_line_no_output(tmp_path, tiny_ckpt, case):
    out = tmp_path / "out"
    good = write_label(tmp_path / "good.png")
    label, ckpt, extra, needles = good, tiny_ckpt, [], []
    if case == "missing":
        label, needles = tmp_path / "nope.png", ["nope.png", "no such file"]
    elif case == "corrupt":
        label = tmp_path / "corrupt.png"
        label.write_bytes(good.read_bytes()[:60])
        needles = ["corrupt.png", "corrupt"]
    elif case == "bad_ids":
        label = write_label(tmp_path / "bad_ids.png", max_id=40)
        needles = ["bad_ids.png", "label id", "outside 0..4"]
    elif case == "channels":
        label = tmp_path / "two.png"
        Image.fromarray(np.zeros((32, 64, 2), np.uint8), mode="LA").save(label)
        needles = ["two.png", "channels"]
    elif case == "truncated_ckpt":
        ckpt = tmp_path / "trunc.pt"
        ckpt.write_bytes(tiny_ckpt.read_bytes()[:500])
        needles = ["trunc.pt"]
    elif case == "other_family":
        ckpt = tmp_path / "foreign.pt"
        torch.save({"foo.weight": torch.zeros(2)}, ckpt)
        needles = ["foreign.pt", "not an asap checkpoint"]
    elif case == "wrong_options":
        d = fixture_dir("asapnet")
        ckpt = d / "latest_net_G.pth"
        extra = ["+official.label_nc=35", "+official.crop_size=256", "+official.aspect_ratio=2",
                 "+official.learned_ds_factor=8", "+official.lr_width=16", "+official.lr_max_width=64",
                 "+official.lr_depth=3", "+official.hr_width=16", "+official.hr_depth=4"]
        needles = ["latest_net_G.pth", "shape mismatch", "lowres_stream.model.6.0.weight"]
    elif case == "missing_ckpt":
        ckpt, needles = tmp_path / "none.pt", ["none.pt", "no such file"]
    inputs = [str(good)] if label == good else [str(good), str(label)]
    r = run_tool(*inputs, f"checkpoint={ckpt}", f"out={out}", *extra)
    assert_clean_failure(r, out, *needles)


def test_help_documents_keys():
    r = run_tool("--help")
    assert r.returncode == 0
    for key in ("checkpoint=", "+official.", "instance=", "out=", "resize=", "labels=", "device="):
        assert key in r.stdout
