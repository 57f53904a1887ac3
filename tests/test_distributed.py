"""Data-parallel training on CPU (torchrun, gloo): 2 processes x batch 1 reach the weights of 1 process x batch 2,
share one run folder and one set of checkpoints; a DDP run killed with SIGKILL resumes exactly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

TINY = ["model.generator.lr_width=4", "model.generator.lr_max_width=8", "model.generator.lr_depth=1",
        "model.generator.hr_width=8", "model.generator.hr_depth=2", "model.discriminator.ndf=4",
        "model.discriminator.n_layers_D=2", "data.generate.num_train=12", "data.generate.num_val=4",
        "data.num_workers=0", "trainer.progress=false", "trainer.image_every=0", "trainer.val_every=0"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _cmd(nproc: int, tmp: Path, run: str, *extra: str) -> list[str]:
    args = [str(REPO / "tools" / "train.py"), f"data.root={tmp / 'synthetic'}", *TINY,
            f"hydra.run.dir={tmp / run}", f"trainer.outputs_root={tmp / 'outputs'}", *extra]
    if nproc == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def _train(nproc: int, tmp: Path, run: str, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(_cmd(nproc, tmp, run, *extra), capture_output=True, text=True, cwd=tmp, env=_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _networks(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    ck = torch.load(path, map_location="cpu", weights_only=True)
    return {name: entry["state_dict"] for name, entry in ck["networks"].items()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    _train(1, tmp, "warmup", "trainer.max_steps=1", "trainer.batch_size=2")  # generates the synthetic data once
    return tmp


def test_two_processes_equal_one_process_with_twice_the_batch(workdir):
    r = _train(2, workdir, "ddp", "trainer.max_steps=3", "trainer.batch_size=2")
    assert "world_size=2" in r.stdout + r.stderr
    _train(1, workdir, "single", "trainer.max_steps=3", "trainer.batch_size=2")
    ddp, single = workdir / "ddp", workdir / "single"
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["step_0000003.pt"]
    assert not (workdir / "outputs").exists()  # no second run folder from the other rank
    assert len(list((ddp / "tb").glob("events.out.tfevents.*"))) == 1  # only rank 0 writes TensorBoard
    a, b = _networks(ddp / "checkpoints" / "step_0000003.pt"), _networks(single / "checkpoints" / "step_0000003.pt")
    init = _networks(workdir / "warmup" / "checkpoints" / "step_0000001.pt")["generator"]
    worst = max(float((a["generator"][k].float() - b["generator"][k].float()).abs().max()) for k in a["generator"])
    assert worst <= 1e-5
    moved = max(float((a["generator"][k].float() - init[k].float()).abs().max()) for k in init)
    assert moved > 1e-4  # the runs trained (they are not equal because nothing happened)


def test_batch_must_divide_over_processes(workdir):
    r = subprocess.run(_cmd(2, workdir, "odd", "trainer.max_steps=1", "trainer.batch_size=3"), capture_output=True,
                       text=True, cwd=workdir, env=_env(), timeout=600)
    assert r.returncode != 0
    assert "trainer.batch_size=3 is the global batch: it must be divisible by the number of processes (2)" in r.stderr


def _kill_run(marker: str) -> None:
    """SIGKILL every process whose command line names ``marker`` (torchrun's agent and its workers)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_killed_ddp_run_resumes_exactly(workdir):
    steps = ["trainer.max_steps=10", "trainer.batch_size=2", "trainer.ckpt_every=1", "trainer.keep_last=10"]
    _train(2, workdir, "ddp_full", *steps)
    run = workdir / "ddp_killed"
    proc = subprocess.Popen(_cmd(2, workdir, "ddp_killed", *steps), cwd=workdir, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "step_0000002.pt").exists():
            assert proc.poll() is None and time.time() < deadline, "the DDP run ended before it could be killed"
            time.sleep(0.05)
        _kill_run(str(run))
        proc.wait(timeout=60)
    finally:
        _kill_run(str(run))
    done = sorted(p.name for p in (run / "checkpoints").glob("step_*.pt"))
    assert done and "step_0000010.pt" not in done
    r = _train(2, workdir, "ddp_killed", *steps, "trainer.resume=auto")
    assert "resumed from" in r.stdout + r.stderr
    a, b = _networks(workdir / "ddp_full" / "checkpoints" / "step_0000010.pt"), _networks(run / "checkpoints" / "step_0000010.pt")
    for name in a:
        for k in a[name]:
            assert torch.equal(a[name][k], b[name][k]), (name, k)
