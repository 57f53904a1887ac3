"""The Trainer's phase machinery on a toy GAN: intervals, requires_grad toggling, the lazy correction and gain,
accumulation equal to a bigger batch, a dataset-free task with a frozen teacher, the time budget and resume=auto's
search rules."""
from __future__ import annotations

import copy
import logging
import time

import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset

from asap.errors import AsapError
from asap.pretrained.common import read_file
from asap.tasks.base import Phase, Task
from asap.training.checkpoint import list_checkpoints
from asap.training.trainer import Trainer


class Points(Dataset):
    """2-D points on a line with a per-sample offset (deterministic)."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int):
        t = torch.tensor(float(i) / 16)
        return {"x": torch.stack([t, 2 * t - 1])}


class ToyGAN(Task):
    """G: z -> 2-D point (linear), D: point -> logit (MLP); non-saturating losses; a lazy D regulariser."""

    family = "toygan"

    def __init__(self, reg_every: int = 3, opt: str = "adam", d_lr: float = 0.01) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.G, self.D = nn.Linear(4, 2), nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        self.networks = {"generator": self.G, "discriminator": self.D}
        self.network_configs = {"generator": {"_target_": "toy.G"}, "discriminator": {"_target_": "toy.D"}}
        make = (lambda p, lr: torch.optim.Adam(p, lr=lr, betas=(0.0, 0.99))) if opt == "adam" else \
            (lambda p, lr: torch.optim.SGD(p, lr=lr))
        self.optimizers = {"G": make(self.G.parameters(), 0.01), "D": make(self.D.parameters(), d_lr)}
        self.reg_every = reg_every
        self.calls: list[tuple[int, str, int]] = []
        self.grad_seen: dict[str, bool] = {}

    def phases(self):
        return [Phase("D", self.d_loss, ("discriminator",), "D"),
                Phase("Dreg", self.reg_loss, ("discriminator",), "D", interval=self.reg_every, lazy=True),
                Phase("G", self.g_loss, ("generator",), "G")]

    def _note(self, ctx):
        self.calls.append((ctx.step, ctx.phase, ctx.size))
        self.grad_seen[ctx.phase] = (any(p.requires_grad for p in self.G.parameters()),
                                     any(p.requires_grad for p in self.D.parameters()))

    def d_loss(self, batch, ctx):
        self._note(ctx)
        fake = self.G(ctx.randn(4, stream="z")).detach()
        loss = nn.functional.softplus(self.D(fake)).mean() + nn.functional.softplus(-self.D(batch["x"])).mean()
        return loss, {"loss/D": loss.detach()}

    def reg_loss(self, batch, ctx):
        self._note(ctx)
        return self.D[0].weight.pow(2).sum() * 0.5, {}

    def g_loss(self, batch, ctx):
        self._note(ctx)
        loss = nn.functional.softplus(-self.D(self.G(ctx.randn(4, stream="z")))).mean()
        return loss, {"loss/G": loss.detach()}

    def visuals(self, batch):
        return torch.zeros(3, 4, 4)


def _trainer(tmp_path, task, run="run", **kw):
    args = dict(max_steps=6, batch_size=4, seed=1, log_every=2, image_every=0, val_every=0, ckpt_every=100,
                progress=False)
    args.update(kw)
    return Trainer(task, Points(), None, tmp_path / run, **args)


def _state(task):
    return {n: copy.deepcopy(net.state_dict()) for n, net in task.networks.items()}


def test_intervals_and_requires_grad_toggling(tmp_path):
    task = ToyGAN(reg_every=3)
    _trainer(tmp_path, task).fit()
    assert [(s, p) for s, p, _ in task.calls] == [
        (0, "D"), (0, "Dreg"), (0, "G"), (1, "D"), (1, "G"), (2, "D"), (2, "G"),
        (3, "D"), (3, "Dreg"), (3, "G"), (4, "D"), (4, "G"), (5, "D"), (5, "G")]
    # each phase sees gradients only for the network it trains; none are left on outside phases
    assert task.grad_seen == {"D": (False, True), "Dreg": (False, True), "G": (True, False)}
    assert not any(p.requires_grad for p in task.G.parameters()) and not any(p.requires_grad for p in task.D.parameters())


def test_g_phase_leaves_no_gradient_on_d(tmp_path):
    task = ToyGAN()
    tr = _trainer(tmp_path, task)
    phases = {p.name: p for p in tr.setup()}
    batch = {"x": torch.randn(4, 2)}
    tr.run_phase(phases["G"], [batch], [torch.arange(4)], 0)
    assert all(p.grad is None for p in task.D.parameters())
    assert all(p.grad is not None for p in task.G.parameters())


def test_lazy_phase_gain_and_optimizer_correction(tmp_path):
    """SGD makes the update visible: a lazy phase with interval k moves the weights by lr * c * k * grad."""
    task = ToyGAN(reg_every=4, opt="sgd", d_lr=0.1)
    tr = _trainer(tmp_path, task)
    phases = {p.name: p for p in tr.setup()}
    c = 4 / 5
    assert task.optimizers["D"].param_groups[0]["lr"] == pytest.approx(0.1 * c)
    assert task.optimizers["G"].param_groups[0]["lr"] == pytest.approx(0.01)  # no lazy phase on G
    w = task.D[0].weight.detach().clone()
    tr.run_phase(phases["Dreg"], [{"x": torch.zeros(4, 2)}], [torch.arange(4)], 0)
    assert torch.allclose(task.D[0].weight, w - 0.1 * c * 4 * w, atol=1e-7)  # grad of 0.5|w|^2 is w


def test_accumulation_equals_the_bigger_batch(tmp_path):
    plain, acc = ToyGAN(), ToyGAN()
    _trainer(tmp_path, plain, "plain", batch_size=4).fit()
    _trainer(tmp_path, acc, "acc", batch_size=4, accumulate=2).fit()
    assert {size for *_, size in acc.calls} == {2} and {size for *_, size in plain.calls} == {4}
    a, b = _state(plain), _state(acc)
    for name in a:
        for k in a[name]:
            torch.testing.assert_close(a[name][k], b[name][k], rtol=0, atol=1e-6)
    with pytest.raises(AsapError, match="accumulate=3 must divide the per-process batch 4"):
        _trainer(tmp_path, ToyGAN(), "bad", accumulate=3)


def test_nonfinite_loss_stops_before_the_update(tmp_path):
    task = ToyGAN()
    tr = _trainer(tmp_path, task, ckpt_every=2)
    original = task.g_loss

    def bad(batch, ctx):
        loss, logs = original(batch, ctx)
        return (loss * float("inf") if ctx.step == 3 else loss), logs
    task.g_loss = bad
    with pytest.raises(AsapError, match=r"loss of phase G is inf at step 3; stopped; last good checkpoint: .*step_0000002.pt"):
        tr.fit()
    assert torch.isfinite(task.G.weight).all()  # the bad update was never applied
    assert [s for s, _ in list_checkpoints(tmp_path / "run")] == [2]


# -- a task without a dataset and with a frozen teacher -------------------------------------------------------------
class Teacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))  # dropout: train mode would be visible

    def forward(self, z):
        return self.net(z)


class Distill(Task):
    family = "toydistill"
    visual_tag = "samples"
    val_visuals = False

    def __init__(self, teacher_path) -> None:
        super().__init__()
        teacher = Teacher()
        teacher.load_state_dict(torch.load(teacher_path, weights_only=True))
        self.teacher = self.add_frozen("teacher", teacher, teacher_path)
        torch.manual_seed(0)
        self.S = nn.Linear(3, 3)
        self.networks = {"student": self.S}
        self.network_configs = {"student": {"_target_": "toy.S"}}
        self.optimizers = {"S": torch.optim.Adam(self.S.parameters(), lr=0.05)}
        self.teacher_modes: set[bool] = set()

    def phases(self):
        return [Phase("S", self.loss, ("student",), "S")]

    def loss(self, batch, ctx):
        assert set(batch) == {"index"} and batch["index"].numel() == ctx.size
        z = ctx.randn(3, stream="z")
        self.teacher_modes.add(self.teacher.training)
        with torch.no_grad():
            target = self.teacher(z)
        loss = (self.S(z) - target).pow(2).mean()
        return loss, {"loss/distill": loss.detach()}

    def visuals(self, batch):
        return torch.zeros(3, 4, 4)


def test_dataset_free_task_with_frozen_teacher(tmp_path):
    torch.manual_seed(5)
    path = tmp_path / "teacher.pt"
    torch.save(Teacher().state_dict(), path)
    task = Distill(path)
    tr = Trainer(task, None, None, tmp_path / "run", max_steps=60, batch_size=8, seed=0, log_every=10,
                 image_every=30, val_every=0, ckpt_every=30, progress=False)
    z = torch.randn(256, 3)
    with torch.no_grad():
        before = (task.S(z) - task.teacher(z)).pow(2).mean()
    tr.fit()
    with torch.no_grad():
        after = (task.S(z) - task.teacher(z)).pow(2).mean()
    assert after < 0.05 * before
    assert task.teacher_modes == {False}  # never switched to train mode
    assert all(not p.requires_grad for p in task.teacher.parameters())
    ck = read_file(tr.last_checkpoint)
    assert set(ck["networks"]) == {"student"}  # the teacher is not copied into the checkpoint
    assert ck["external"]["teacher"]["path"] == str(path.resolve())
    assert len(ck["external"]["teacher"]["sha256"]) == 64
    assert ck["training"]["data"]["position"] == 60
    # resuming against a different teacher file is refused in one line
    torch.manual_seed(6)
    torch.save(Teacher().state_dict(), path)
    with pytest.raises(AsapError, match="the teacher .* is not the file this run started with"):
        Trainer(Distill(path), None, None, tmp_path / "run", max_steps=90, batch_size=8, seed=0, val_every=0,
                image_every=0, progress=False, resume="auto").fit()


# -- time budget -----------------------------------------------------------------------------------------------------
class SlowGAN(ToyGAN):
    def g_loss(self, batch, ctx):
        time.sleep(0.05)
        return super().g_loss(batch, ctx)

    def evaluate(self, batches):
        return {"n": float(sum(1 for _ in batches))}


def test_max_time_stops_with_a_final_checkpoint_and_resumes(tmp_path, caplog):
    task = SlowGAN()
    tr = Trainer(task, Points(), Points(), tmp_path / "run", max_steps=400, batch_size=4, seed=1, log_every=5,
                 image_every=0, val_every=1000, ckpt_every=1000, progress=False, max_time=1.0)
    t0 = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="asap.train"):
        last = tr.fit()
    assert time.perf_counter() - t0 < 2.5
    assert tr.stopped_by_time and 3 <= tr.step < 400
    assert last is not None and read_file(last)["step"] == tr.step
    assert "trainer.max_time=1.0 reached" in caplog.text
    assert f"step {tr.step} validation" in caplog.text  # the held-out evaluation ran at the stop
    stopped_at = tr.step
    more = Trainer(SlowGAN(), Points(), None, tmp_path / "run", max_steps=stopped_at + 3, batch_size=4, seed=1,
                   image_every=0, val_every=0, ckpt_every=1000, progress=False, resume="auto")
    more.fit()
    assert more.step == stopped_at + 3 and not more.stopped_by_time


# -- resume=auto ---------------------------------------------------------------------------------------------------
def test_resume_auto_outside_the_outputs_root_only_looks_at_its_run_dir(tmp_path):
    outputs = tmp_path / "outputs"
    _trainer(outputs, ToyGAN(), "2026-01-01/10-00-00", max_steps=20, stop_after=3, ckpt_every=1).fit()
    elsewhere = tmp_path / "somewhere" / "run"
    tr = _trainer(tmp_path, ToyGAN(), "somewhere/run", max_steps=4, resume="auto", outputs_root=outputs)
    tr.fit()
    assert tr.run_dir == elsewhere and [s for s, _ in list_checkpoints(elsewhere)] == [4]


def test_resume_auto_skips_other_families_architectures_and_finished_runs(tmp_path, caplog):
    outputs = tmp_path / "outputs"
    # an unfinished compatible run, then newer runs that must be skipped
    _trainer(outputs, ToyGAN(), "d1/a_compatible", max_steps=20, stop_after=3, ckpt_every=1).fit()
    time.sleep(0.02)
    finished = ToyGAN()
    _trainer(outputs, finished, "d1/b_finished", max_steps=6, ckpt_every=3).fit()
    time.sleep(0.02)
    other = ToyGAN()
    other.network_configs = {"generator": {"_target_": "toy.G", "width": 8}, "discriminator": {"_target_": "toy.D"}}
    _trainer(outputs, other, "d1/c_wider", max_steps=20, stop_after=2, ckpt_every=1).fit()
    time.sleep(0.02)
    fam = ToyGAN()
    fam.family = "othergan"
    _trainer(outputs, fam, "d1/d_family", max_steps=20, stop_after=2, ckpt_every=1).fit()
    with caplog.at_level(logging.INFO, logger="asap.train"):
        tr = _trainer(outputs, ToyGAN(), "d2/new", max_steps=6, resume="auto", outputs_root=outputs)
        tr.fit()
    assert tr.run_dir == outputs / "d1/a_compatible"
    text = caplog.text
    assert "skipped" in text and "a othergan run, this is toygan" in text
    assert "different generator architecture (width)" in text
    assert "that run is finished (step 6 of 6)" in text
    assert f"resumed from {outputs / 'd1/a_compatible/checkpoints/step_0000003.pt'}" in text
