"""FastGAN training: the D loss terms against hand computations (hinge with random margins, the three LPIPS
reconstructions summed over the batch), DiffAugment against its definition, a few CPU steps with the official EMA,
exact resume, TensorBoard grids, configs and one-line errors."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

import asap.config  # noqa: F401
import asap.pretrained
from asap.cli import compose
from asap.data.collate import collate
from asap.errors import AsapError
from asap.models.fastgan import crop_quadrant
from asap.nn.diffaugment import cutout, diff_augment, parse_policy, translate
from asap.tasks.fastgan import hinge_d_terms
from asap.training.phase import StepContext
from asap.training.run import build_task
from asap.training.trainer import Trainer

# 256 px (FastGAN's smallest size) with very thin layers, and the cheap AlexNet LPIPS with a random backbone
TINY = ["model.generator.channels=[16,8,8,4,4,4,2]", "model.discriminator.channels=[8,8,8,4,4,2,2]",
        "model.discriminator.decoder_channels=[4,4,4,4]", "model.generator.nz=8", "data.batch_size=2",
        "data.num_workers=0", "model.samples.num=4", "model.loss.lpips_pretrained=false", "model.loss.lpips_net=alex"]


def write_images(root: Path, n: int = 6, size: int = 256) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"img_{i:02d}.png")
    return root


def tiny_cfg(tmp_path: Path, *extra: str):
    root = write_images(tmp_path / "images")
    return compose("train", ["model=fastgan", "data=images", f"data.root={root}", *TINY, *extra])


def test_hinge_terms_by_hand():
    logits = torch.tensor([0.5, 1.2, -0.3, 2.0])
    margin = torch.tensor([0.9, 0.8, 1.0, 0.85])
    real, fake = hinge_d_terms(logits, logits, margin, margin)
    torch.testing.assert_close(real, torch.tensor((0.4 + 0.0 + 1.3 + 0.0) / 4))
    torch.testing.assert_close(fake, torch.tensor((1.4 + 2.0 + 0.7 + 2.85) / 4))


def test_diffaugment_matches_its_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    p = torch.rand(2, 7)
    color = diff_augment(x, ("color",), p)
    b = x + (p[:, 0] - 0.5).view(-1, 1, 1, 1)
    m = b.mean(1, keepdim=True)
    s = (b - m) * (2 * p[:, 1]).view(-1, 1, 1, 1) + m
    m = s.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(color, (s - m) * (p[:, 2] + 0.5).view(-1, 1, 1, 1) + m)
    t = translate(x, [2, -1], [0, 3])
    assert torch.equal(t[0, :, :14], x[0, :, 2:]) and torch.equal(t[0, :, 14:], torch.zeros(3, 2, 16))
    assert torch.equal(t[1, :, 1:, :13], x[1, :, :15, 3:]) and (t[1, :, 0] == 0).all() and (t[1, :, :, 13:] == 0).all()
    c = cutout(torch.ones(1, 1, 16, 16), [0], [8])  # an 8x8 square centred at (0, 8), clipped at the top
    assert c[0, 0, :4, 4:12].sum() == 0 and c.sum() == 256 - 32
    shifts = diff_augment(torch.ones(64, 1, 16, 16), ("translation",), torch.rand(64, 7))
    assert 0 < (shifts == 0).float().mean() < 0.25  # shifts up to 1/8 of the size, zero filled
    x.requires_grad_(True)
    diff_augment(x, parse_policy("color,translation,cutout"), p).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable
    with pytest.raises(ValueError, match="unknown DiffAugment policy 'flip'"):
        parse_policy("color,flip")


def test_d_loss_is_hinge_plus_three_lpips_sums_by_hand(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path, "model.augment.policy=''", "model.loss.rec_weight=1.0")
    task = build_task(cfg)
    task.train(False)  # eval mode: D is the same function on every call, so its outputs can be recomputed
    batch = collate([instantiate(cfg.data.train)[i] for i in range(2)])
    ctx = StepContext(step=3, phase="D", seed=0, positions=torch.arange(2), batch_size=2)
    total, logs = task.d_loss(batch, ctx)
    real = batch["image"]
    part = int(torch.randint(0, 4, (), generator=ctx.generator("part")))
    with torch.no_grad():
        real_logits, (rb, rs, rp) = task.D(real, part=part)
        fake_logits = task.D(list(task.fakes(ctx)))
    u_real, u_fake = ctx.rand(2, 25, stream="margin/real"), ctx.rand(2, 25, stream="margin/fake")
    m_real = 0.8 + 0.2 * torch.cat([u_real[:, 0].reshape(-1), u_real[:, 1].reshape(-1)])
    m_fake = 0.8 + 0.2 * torch.cat([u_fake[:, 0].reshape(-1), u_fake[:, 1].reshape(-1)])
    hinge_real = sum(max(0.0, float(m - l)) for m, l in zip(m_real, real_logits)) / real_logits.numel()
    hinge_fake = sum(max(0.0, float(m + l)) for m, l in zip(m_fake, fake_logits)) / fake_logits.numel()
    lp = task.lpips
    rec = [float(lp(rb, F.interpolate(real, 128)).sum()), float(lp(rs, F.interpolate(real, 128)).sum()),
           float(lp(rp, F.interpolate(crop_quadrant(real, part), 128)).sum())]  # the official three calls
    assert math.isclose(float(logs["loss/D_real"]), hinge_real, rel_tol=1e-5)
    assert math.isclose(float(logs["loss/D_fake"]), hinge_fake, rel_tol=1e-5)
    for name, want in zip(("rec_big", "rec_small", "rec_part"), rec):
        assert math.isclose(float(logs[f"loss/{name}"]), want, rel_tol=1e-4), name
    assert math.isclose(float(total), hinge_real + hinge_fake + sum(rec), rel_tol=1e-4)
    assert real_logits.shape == fake_logits.shape == (2 * 2 * 25,)


def _trainer(cfg, run_dir, **kw):
    task = build_task(cfg)
    args = dict(max_steps=3, batch_size=2, seed=0, collate_fn=collate, log_every=1, image_every=3, val_every=0,
                ckpt_every=2, keep_last=5, progress=False, config={"note": "test"})
    args.update(kw)
    return task, Trainer(task, instantiate(cfg.data.train), None, run_dir, **args)


def test_steps_update_both_networks_and_the_official_ema(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg(tmp_path)
    task, tr = _trainer(cfg, tmp_path / "run")
    batch = collate([instantiate(cfg.data.train)[i] for i in range(2)])
    batch.pop("skipped")
    g0 = [p.detach().clone() for p in task.G.parameters()]
    d0 = [p.detach().clone() for p in task.D.parameters()]
    ema0 = [p.detach().clone() for p in task.G_ema.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(g0, ema0))
    task.train(True)
    out = tr.train_step(batch)
    assert {"loss/D_real", "loss/D_fake", "loss/rec_big", "loss/rec_small", "loss/rec_part", "loss/G",
            "D/margin"} <= set(out)
    assert all(math.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, p) for a, p in zip(g0, task.G.parameters()))
    assert any(not torch.equal(a, p) for a, p in zip(d0, task.D.parameters()))
    for e0, g, e in zip(ema0, task.G.parameters(), task.G_ema.parameters()):  # G_ema <- lerp(G_ema, G, 0.001)
        torch.testing.assert_close(e, e0 + 0.001 * (g.detach() - e0), rtol=0, atol=1e-7)
    for b, be in zip(task.G.buffers(), task.G_ema.buffers()):  # the live buffers, as the official EMA generator
        assert torch.equal(b, be)
    assert all(not p.requires_grad for p in task.G.parameters()) and not task._fakes
    opt = task.optimizers["G"].param_groups[0]
    assert (opt["lr"], opt["betas"]) == (2e-4, (0.5, 0.999))


def test_resume_equals_uninterrupted_and_tensorboard_has_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = tiny_cfg(tmp_path, "model.augment.policy='color,translation,cutout'")
    torch.manual_seed(0)
    full_task, full = _trainer(cfg, tmp_path / "full")
    full.fit()
    torch.manual_seed(0)
    _, part = _trainer(cfg, tmp_path / "part", stop_after=2)
    part.fit()
    torch.manual_seed(123)
    res_task, res = _trainer(cfg, tmp_path / "part", resume="auto")
    res.fit()
    assert res.step == 3
    for name in ("generator", "g_ema", "discriminator"):
        a, b = full_task.networks[name].state_dict(), res_task.networks[name].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name} {k}")
    acc = EventAccumulator(str(tmp_path / "full" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"loss/D_real", "loss/D_fake", "loss/G", "loss/rec_part", "D/margin", "D/real_logit",
            "D/fake_logit"} <= set(acc.Tags()["scalars"])
    grid = acc.Images("train/samples_ema")[-1]
    assert grid.width == grid.height == 2 * 256 + 3 * 2  # 4 fixed-latent samples in a 2x2 grid
    rec = acc.Images("train/reconstructions")[-1]
    assert (rec.width, rec.height) == (2 * 128 + 3 * 2, 4 * 128 + 5 * 2)  # real | big | small | part rows
    # our checkpoint -> the EMA generator through the public loader
    G = asap.pretrained.load(full.last_checkpoint)
    with torch.no_grad():
        img = G(torch.randn(1, 8))
    assert img.shape == (1, 3, 256, 256) and torch.isfinite(img).all()


def test_configs_compose_and_bad_values_are_one_line(tmp_path, monkeypatch):
    cfg = compose("train", ["model=fastgan", "data=images"])
    assert cfg.data.batch_size == 8 and cfg.data.image_size == cfg.model.generator.im_size == 256
    # measured: F(4x4, 3x3) beats the direct conv from 128 inputs on (64-input VGG convs stay direct)
    assert cfg.model.loss.lpips_winograd_min_channels == 128 and cfg.model.loss.lpips_winograd_tile == 4
    from asap.losses.lpips_loss import FrozenConv3x3
    task = build_task(tiny_cfg(tmp_path, "model.loss.lpips_net=vgg")).to("cpu")
    frozen = [m for m in task.lpips.modules() if isinstance(m, FrozenConv3x3)]
    assert len(frozen) == 10 and {m.tile for m in frozen} == {4}  # conv2_2 .. conv5_3
    task = build_task(tiny_cfg(tmp_path, "model.loss.lpips_net=vgg", "model.loss.lpips_winograd_tile=2",
                               "model.loss.lpips_winograd_min_channels=256")).to("cpu")
    frozen = [m for m in task.lpips.modules() if isinstance(m, FrozenConv3x3)]
    assert len(frozen) == 8 and {m.tile for m in frozen} == {2}  # conv3_2 .. conv5_3
    with pytest.raises(AsapError, match="lpips_winograd_tile must be 2 or 4, got 3"):
        build_task(tiny_cfg(tmp_path, "model.loss.lpips_winograd_tile=3"))
    for size in (512, 1024):
        cfg = compose("train", ["model=fastgan", "data=images", f"preset=fastgan_{size}"])
        assert cfg.model.discriminator.im_size == size and cfg.data.batch_size == 8
    with pytest.raises(AsapError, match="256, 512 or 1024"):
        build_task(tiny_cfg(tmp_path, "data.image_size=128"))
    with pytest.raises(AsapError, match="unknown DiffAugment policy"):
        build_task(tiny_cfg(tmp_path, "model.augment.policy='color,zoom'"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))  # no ImageNet weights there
    with pytest.raises(AsapError, match=r"vgg16-397923af.pth .*model.loss.lpips_pretrained=false") as e:
        build_task(tiny_cfg(tmp_path, "model.loss.lpips_pretrained=true", "model.loss.lpips_net=vgg"))
    assert "\n" not in str(e.value)
