"""StyleGAN2 training: regularisers against hand-computed values, the lazy-regularisation optimiser settings of the
official checkpoint, a few CPU steps, exact resume (with ADA), TensorBoard grids and tools/train.py end to end."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

import asap.config  # noqa: F401
import asap.pretrained
from asap.cli import compose
from asap.data.collate import collate
from asap.losses.adversarial import logistic_d_loss, logistic_g_loss
from asap.losses.regularizers import path_length_penalty, r1_penalty
from asap.training.run import build_task
from asap.training.trainer import Trainer, prepare_phases
from tests.conftest import REPO, fixture_dir

TINY = ["model.generator.style_dim=16", "model.generator.n_mlp=2", "model.generator.channels=[16,16,8]",
        "data.image_size=16", "data.batch_size=4", "data.num_workers=0", "model.samples.num=4"]


def write_images(root: Path, n: int = 12, size: int = 24) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.png")
    return root


def tiny_cfg(tmp_path: Path, *extra: str):
    root = write_images(tmp_path / "images")
    return compose("train", ["model=stylegan2", "data=images", f"data.root={root}", *TINY, *extra])


def test_r1_penalty_matches_hand_computed_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    a = torch.randn(2, 4, 4)
    logits = (a * x.pow(2)).sum((1, 2, 3))  # d logits / dx = 2 a x
    expected = (2 * a * x.detach()).pow(2).sum((1, 2, 3)).mean()
    r1 = r1_penalty(logits, x)
    torch.testing.assert_close(r1, expected)
    r1.backward()  # differentiable for the D update
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_path_length_penalty_matches_hand_computed_values():
    torch.manual_seed(0)
    b, n_ws, w_dim, h, w = 2, 3, 5, 4, 4
    ws = torch.randn(b, n_ws, w_dim, requires_grad=True)
    A = torch.randn(n_ws, w_dim, 3 * h * w)
    img = torch.einsum("blw,lwp->bp", ws, A).reshape(b, 3, h, w)  # linear G: J^T y is exact
    torch.manual_seed(1)
    penalty, new_mean, lengths = path_length_penalty(img, ws, torch.tensor(0.5), decay=0.01)
    torch.manual_seed(1)
    y = torch.randn(b, 3, h, w) / math.sqrt(h * w)
    grad = torch.einsum("lwp,bp->blw", A, y.reshape(b, -1))
    exp_lengths = grad.pow(2).sum(2).mean(1).sqrt()
    exp_mean = 0.5 + 0.01 * (exp_lengths.mean() - 0.5)
    torch.testing.assert_close(lengths, exp_lengths)
    torch.testing.assert_close(new_mean, exp_mean)
    torch.testing.assert_close(penalty.detach(), (exp_lengths - exp_mean).pow(2).mean())


def test_logistic_losses():
    r, f = logistic_d_loss(torch.tensor([[0.0], [2.0]]), torch.tensor([[0.0], [-1.0]]))
    torch.testing.assert_close(r, torch.tensor((math.log(2) + math.log1p(math.exp(-2))) / 2))
    torch.testing.assert_close(f, torch.tensor((math.log(2) + math.log1p(math.exp(-1))) / 2))
    torch.testing.assert_close(logistic_g_loss(torch.tensor([[0.0]])), torch.tensor(math.log(2)))


def test_lazy_regularisation_optimisers_match_the_official_checkpoint(tmp_path):
    meta = json.loads((fixture_dir("stylegan2") / "meta.json").read_text())["checkpoint"]
    task = build_task(tiny_cfg(tmp_path))
    phases = prepare_phases(task)  # the Trainer applies the lazy-regularisation correction (once)
    prepare_phases(task)
    for name, key in (("G", "g_optim_param_groups"), ("D", "d_optim_param_groups")):
        ours, ref = task.optimizers[name].param_groups[0], meta[key][0]
        assert ours["lr"] == pytest.approx(ref["lr"], rel=1e-12)
        assert ours["betas"][0] == ref["betas"][0] and ours["betas"][1] == pytest.approx(ref["betas"][1], rel=1e-12)
    names = [(p.name, p.interval, p.lazy, p.networks) for p in phases]
    assert names == [("D", 1, False, ("discriminator",)), ("Dreg", 16, True, ("discriminator",)),
                     ("G", 1, False, ("generator",)), ("Greg", 4, True, ("generator",))]
    assert task.ema_beta(0, 16) == pytest.approx(0.5 ** (32 / 10000))


def test_d_loss_falls_on_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path, "model.optim.lr=0.004")
    task = build_task(cfg)
    batch = collate([instantiate(cfg.data.train)[i] for i in range(4)])
    batch.pop("skipped")
    trainer = Trainer(task, None, None, tmp_path / "run", max_steps=100, batch_size=4, progress=False)
    phases = {p.name: p for p in trainer.setup()}
    d_losses = []
    for step in range(20):  # D only: it learns to tell these reals from G's samples
        out = trainer.run_phase(phases["D"], [batch], [torch.arange(4)], step)
        d_losses.append(float(out["loss/D_real"] + out["loss/D_fake"]))
    assert np.mean(d_losses[-3:]) < 0.75 * np.mean(d_losses[:3])
    before = [p.detach().clone() for p in task.G.parameters()]
    d_before = [p.detach().clone() for p in task.D.parameters()]
    ema_before = [p.detach().clone() for p in task.G_ema.parameters()]
    trainer.step = 0
    out = trainer.train_step(batch)  # D, Dreg, G, Greg, then the EMA
    assert {"loss/D_real", "loss/D_r1", "loss/G", "loss/G_path"} <= set(out)
    assert all(math.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, p) for a, p in zip(before, task.G.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(d_before, task.D.parameters()))
    moved = [p for a, p in zip(ema_before, task.G_ema.parameters()) if not torch.equal(a, p)]
    assert moved  # the EMA follows G
    assert all(not p.requires_grad for p in task.G.parameters())  # no gradients outside a phase


def _trainer(cfg, run_dir, **kw):
    task = build_task(cfg)
    args = dict(max_steps=10, batch_size=4, seed=0, collate_fn=collate, log_every=2, image_every=5, val_every=0,
                ckpt_every=3, keep_last=5, progress=False, config={"note": "test"})
    args.update(kw)
    return task, Trainer(task, instantiate(cfg.data.train), None, run_dir, **args)


def test_resume_with_augmentation_equals_uninterrupted(tmp_path):
    extra = ("model.augment.enabled=true", "model.augment.p=0.5", "model.augment.interval=2",
             "model.augment.speed_kimg=0.01", "model.loss.d_reg_every=4", "model.loss.g_reg_every=2")
    cfg = tiny_cfg(tmp_path, *extra)
    torch.manual_seed(0)
    full_task, full = _trainer(cfg, tmp_path / "full")
    full.fit()
    torch.manual_seed(0)  # the same initial weights
    _, part = _trainer(cfg, tmp_path / "part", stop_after=7)
    part.fit()
    torch.manual_seed(123)
    res_task, res = _trainer(cfg, tmp_path / "part", resume="auto")
    res.fit()
    assert res.step == 10
    for name in ("generator", "g_ema", "discriminator"):
        a, b = full_task.networks[name].state_dict(), res_task.networks[name].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=f"{name} {k}")
    assert full_task.augment.probability == res_task.augment.probability != 0.5  # p adapted and was restored
    assert full_task.ada.state_dict() == res_task.ada.state_dict()
    assert torch.equal(full_task.mean_path_length, res_task.mean_path_length)


def test_tensorboard_has_losses_regularisers_and_sample_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = tiny_cfg(tmp_path, "model.augment.enabled=true")
    _, tr = _trainer(cfg, tmp_path / "run", max_steps=6)
    tr.fit()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/D_real", "loss/D_fake", "loss/D_r1", "loss/G", "loss/G_path", "path/mean_length",
            "augment/p", "D/real_score", "lr/G", "lr/D", "perf/images_per_s"} <= scalars
    img = acc.Images("train/samples_ema")[-1]
    assert img.width == img.height == 2 * 16 + 3 * 2  # 4 samples of 16 px in a 2x2 grid with padding


def test_train_tool_then_load_generate(tmp_path):
    root = write_images(tmp_path / "images")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "model=stylegan2", "data=images",
                        f"data.root={root}", *TINY, "trainer.max_steps=4", "trainer.ckpt_every=2",
                        "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000004.pt"
    G = asap.pretrained.load(ckpt)
    assert G.has_w_avg()  # the truncation centre is saved with the EMA generator
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim), truncation_psi=0.7)
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    D = asap.pretrained.load(ckpt, part="discriminator")
    assert D(img).shape == (2, 1)


def test_bad_batch_size_is_one_line(tmp_path):
    from asap.errors import AsapError
    with pytest.raises(AsapError, match="divisible by the minibatch-stddev group 4"):
        build_task(tiny_cfg(tmp_path, "data.batch_size=6"))
    with pytest.raises(AsapError, match="mixing_prob"):
        build_task(tiny_cfg(tmp_path, "model.loss.mixing_prob=2"))


def test_stylegan2_composes_with_unconditional_data():
    for data in ("images", "synthetic_images"):
        cfg = compose("train", ["model=stylegan2", f"data={data}"])
        assert cfg.model.generator.size == cfg.data.image_size == cfg.model.discriminator.size
    cfg = compose("train", ["model=stylegan2", "data=synthetic_images"])
    assert cfg.data.image_size == 64 and cfg.trainer.max_steps == 1000  # the CPU preset applies


def test_validation_does_not_change_the_training_run(tmp_path):
    cfg = tiny_cfg(tmp_path)
    finals = []
    for val_every in (0, 2):  # held-out metrics every 2 steps, or never
        torch.manual_seed(0)
        task, tr = _trainer(cfg, tmp_path / f"run{val_every}", max_steps=6, val_every=val_every, val_batches=1,
                            ckpt_every=100)
        tr.val_set = instantiate(cfg.data.train)
        tr.fit()
        finals.append(task.G.state_dict())
    for k in finals[0]:
        torch.testing.assert_close(finals[0][k], finals[1][k], rtol=0, atol=0, equal_nan=True, msg=k)
