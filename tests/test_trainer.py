"""The shared Trainer with a toy task: loss goes down, checkpoints rotate, TensorBoard holds scalars and images,
kill-and-resume equals an uninterrupted run, NaN stops the run keeping the last good checkpoint."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from asap.errors import AsapError
from asap.pretrained.common import read_file
from asap.tasks.base import Phase, Task
from asap.training.checkpoint import list_checkpoints
from asap.training.trainer import Trainer


class ToyData(Dataset):
    """y = 3x - 1 with random (augmentation-like) noise drawn from the global RNGs inside __getitem__."""

    def __init__(self, n: int = 20, bad_after: int | None = None) -> None:
        self.n, self.bad_after, self.calls = n, bad_after, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        self.calls += 1
        if self.bad_after is not None and self.calls > self.bad_after:
            raise AsapError("sample_5.png: label id 99 is outside 0..34")
        x = torch.tensor([float(i) / self.n + random.random() * 0.01 + float(np.random.rand()) * 0.01])
        return {"x": x, "y": 3 * x - 1 + torch.randn(1) * 0.01}


class ToyNet(nn.Module):
    def __init__(self, width: int = 1) -> None:
        super().__init__()
        self.lin = nn.Linear(1, width)


class ToyTask(Task):
    family = "toy"

    def __init__(self, nan_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = ToyNet()
        self.networks = {"generator": self.net}
        self.network_configs = {"generator": {"_target_": "tests.test_trainer.ToyNet"}}
        self.optimizers = {"G": torch.optim.Adam(self.net.parameters(), lr=0.2)}
        self.schedulers = {"G": torch.optim.lr_scheduler.StepLR(self.optimizers["G"], 10, 0.5)}
        self.nan_at = nan_at

    def phases(self):
        return [Phase("G", self.loss, networks=("generator",), optimizer="G"),
                Phase("reg", self.reg_loss, networks=("generator",), optimizer="G", interval=3)]

    def loss(self, batch, ctx, scale=1.0):
        out = self.net.lin(batch["x"])
        loss = ((out - batch["y"]) ** 2).mean() * scale
        if self.nan_at is not None and ctx.step >= self.nan_at:
            loss = loss * float("nan")
        return loss, {f"loss/{ctx.phase}": loss.detach()}

    def reg_loss(self, batch, ctx):
        return self.loss(batch, ctx, 0.1)

    def visuals(self, batch):
        return torch.rand(3, 8, 8)

    def evaluate(self, batches):
        errs = [((self.net.lin(b["x"]) - b["y"]) ** 2).mean().item() for b in batches]
        return {"mse": float(np.mean(errs))}


def make(tmp_path, run="run", **kw):
    args = dict(max_steps=30, batch_size=4, seed=3, log_every=5, image_every=10, val_every=10, ckpt_every=10,
                keep_last=2, progress=False)
    args.update(kw)
    task = args.pop("task", None) or ToyTask()
    return task, Trainer(task, ToyData(), ToyData(8), tmp_path / run, **args)


def weights(task):
    return {k: v.clone() for k, v in task.net.state_dict().items()}


def test_loss_decreases_and_checkpoints_rotate(tmp_path):
    task, tr = make(tmp_path)
    with torch.no_grad():
        before = ((task.net.lin(torch.linspace(0, 1, 8)[:, None]) - (3 * torch.linspace(0, 1, 8)[:, None] - 1)) ** 2).mean()
    last = tr.fit()
    with torch.no_grad():
        after = ((task.net.lin(torch.linspace(0, 1, 8)[:, None]) - (3 * torch.linspace(0, 1, 8)[:, None] - 1)) ** 2).mean()
    assert after < before * 0.5
    steps = [s for s, _ in list_checkpoints(tmp_path / "run")]
    assert steps == [20, 30] and last.name == "step_0000030.pt"
    ck = read_file(last)
    assert ck["step"] == 30 and ck["family"] == "toy" and "rng" in ck["training"] and "data" in ck["training"]
    assert set(ck["networks"]) == {"generator"}


def test_tensorboard_has_scalars_and_images(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    _, tr = make(tmp_path)
    tr.fit()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"loss/G", "loss/reg", "lr/G", "perf/images_per_s", "val/mse"} <= set(tags["scalars"])
    assert "train/label_real_fake" in tags["images"]
    assert [e.step for e in acc.Scalars("loss/G")] == [5, 10, 15, 20, 25, 30]
    assert acc.Scalars("lr/G")[-1].value == pytest.approx(0.2 * 0.5 ** 3)


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    full_task, full = make(tmp_path, "full", max_steps=27, ckpt_every=7)
    full.fit()
    # the interrupted run stops after 16 steps (its last checkpoint is step 14), then resumes from it
    part_task, part = make(tmp_path, "part", max_steps=27, ckpt_every=7, stop_after=16)
    part.fit()
    assert part.step == 16
    res_task, res = make(tmp_path, "part", max_steps=27, ckpt_every=7, resume="auto")
    res.fit()
    assert res.step == 27
    a, b = weights(full_task), weights(res_task)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert res_task.optimizers["G"].param_groups[0]["lr"] == full_task.optimizers["G"].param_groups[0]["lr"]


def test_resume_auto_finds_latest_earlier_run(tmp_path):
    _, first = make(tmp_path / "outputs", "2026-01-01/10-00-00", max_steps=20, stop_after=12)
    first.fit()
    task, second = make(tmp_path / "outputs", "2026-01-01/11-00-00", max_steps=20, resume="auto",
                        outputs_root=tmp_path / "outputs")
    second.fit()
    assert second.run_dir == tmp_path / "outputs" / "2026-01-01/10-00-00"
    assert [s for s, _ in list_checkpoints(second.run_dir)] == [10, 20]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    task, tr = make(tmp_path, task=ToyTask(nan_at=13))
    with pytest.raises(AsapError, match=r"loss of phase G is nan at step 13; stopped; last good checkpoint: .*step_0000010.pt"):
        tr.fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [10]
    assert read_file(list_checkpoints(tmp_path / "run")[0][1])["step"] == 10


def test_bad_sample_stops_with_file_name(tmp_path):
    task = ToyTask()
    tr = Trainer(task, ToyData(bad_after=13), None, tmp_path / "run", max_steps=30, batch_size=4, seed=0, ckpt_every=2,
                 progress=False)
    with pytest.raises(AsapError, match=r"sample_5.png: label id 99 .*stopped at step \d+; last good checkpoint"):
        tr.fit()
    for _, p in list_checkpoints(tmp_path / "run"):
        assert read_file(p)["format"] == "asap"
