"""Anycost GAN training: the three stages on a tiny model (each from the previous one's checkpoint), sampled
sub-generators, the conditioned D, distillation from the frozen teacher, exact resume, TensorBoard grids and
consistency."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

import asap.config  # noqa: F401
import asap.pretrained
from asap.cli import compose
from asap.data.collate import collate
from asap.errors import AsapError
from asap.models.anycost import AnycostDiscriminator, AnycostGenerator
from asap.pretrained.anycost import to_official
from asap.training.run import build_task
from asap.training.trainer import Trainer
from tests.test_train_stylegan import write_images

TINY = ["model.generator.style_dim=16", "model.generator.n_mlp=2", "model.generator.channel_multiplier=0.0625",
        "model.generator.channel_max=16", "data.image_size=32", "data.batch_size=4", "data.num_workers=0",
        "model.samples.num=4", "model.anycost.dynamic_channels.sort_samples=256",
        "model.anycost.distill.lpips_pretrained=false", "model.anycost.distill.lpips_net=alex",
        "metrics.lpips_pretrained=false",
        "model.loss.d_reg_every=2", "model.loss.g_reg_every=2"]


def cfg_for(tmp_path: Path, model: str, *extra: str):
    root = write_images(tmp_path / "images", size=36)
    return compose("train", [f"model={model}", "data=images", f"data.root={root}", *TINY, *extra])


def run(cfg, run_dir: Path, steps: int, **kw):
    task = build_task(cfg)
    args = dict(max_steps=steps, batch_size=4, seed=0, collate_fn=collate, log_every=1, image_every=steps,
                val_every=0, ckpt_every=steps, keep_last=5, progress=False, config={"note": "test"})
    args.update(kw)
    trainer = Trainer(task, instantiate(cfg.data.train), None, run_dir, **args)
    return task, trainer


def _stage1(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    task, tr = run(cfg_for(tmp_path, "anycost"), tmp_path / "s1", 2)
    assert isinstance(task.G, AnycostGenerator) and task.D.resolutions == [32]
    tr.fit()
    return tmp_path / "s1" / "checkpoints" / "step_0000002.pt"


def test_three_stages_each_from_the_previous(tmp_path):
    s1 = _stage1(tmp_path)
    G1 = asap.pretrained.load(s1)
    assert isinstance(G1, AnycostGenerator)

    # stage 2: multi-resolution D (new from-RGB layers), path length off
    torch.manual_seed(1)
    task2, tr2 = run(cfg_for(tmp_path, "anycost_multires", f"model.anycost.init_from={s1}"), tmp_path / "s2", 1)
    assert task2.D.resolutions == [32, 16, 8, 4] and task2.n_sampled_res == 2
    assert [p.name for p in task2.phases()] == ["D", "Dreg", "G"]
    D1 = asap.pretrained.load(s1, part="discriminator")
    for k, v in D1.state_dict().items():  # the stage-1 D came along
        assert torch.equal(task2.D.state_dict()[k], v), k
    for k, v in G1.state_dict().items():
        assert torch.equal(task2.G_ema.state_dict()[k], v), k
    tr2.fit()
    data = instantiate(cfg_for(tmp_path, "anycost").data.train)
    batch = collate([data[i] for i in range(4)])
    batch.pop("skipped")
    logs = tr2.train_step(batch)
    assert "loss/D" in logs and "loss/G" in logs and all(math.isfinite(float(v)) for v in logs.values())
    assert sum(k.startswith("loss/D_") and k.endswith("px") for k in logs) == 2  # 2 of 4 resolutions scored
    s2 = tmp_path / "s2" / "checkpoints" / "step_0000001.pt"

    # stage 3: sorted channels, sampled sub-generators, conditioned D, distillation from the frozen stage-2 G
    G2 = asap.pretrained.load(s2)
    torch.manual_seed(2)
    cfg3 = cfg_for(tmp_path, "anycost_adaptive", f"model.anycost.init_from={s2}", f"model.anycost.distill.teacher={s2}")
    task3, tr3 = run(cfg3, tmp_path / "s3", 1)
    assert task3.D.modulate and task3.dynamic and task3.teacher is not None
    z = torch.randn(3, G2.z_dim)
    with torch.no_grad():  # sorting keeps the full output
        torch.testing.assert_close(task3.G_ema(z), G2(z), atol=1e-5, rtol=1e-5)
    assert any("sorted" in n for n in task3.notes) and any("teacher" in n for n in task3.notes)
    tr3.fit()
    ckpt = torch.load(tmp_path / "s3" / "checkpoints" / "step_0000001.pt", weights_only=True)
    assert ckpt["external"]["teacher"]["path"] == str(s2.resolve())  # recorded, not copied
    D3 = asap.pretrained.load(tmp_path / "s3" / "checkpoints" / "step_0000001.pt", part="discriminator")
    assert isinstance(D3, AnycostDiscriminator) and D3.modulate


def test_sub_generator_sampling_modes_and_distillation_loss(tmp_path):
    cfg = cfg_for(tmp_path, "anycost_adaptive", "model.anycost.dynamic_channels.min_channel=2",
                  "model.anycost.dynamic_channels.divided_by=2")
    task = build_task(cfg)
    full, bottom = task.G.full_channels, task.G.ratio_channels(0.25)
    seen = {}
    for mode in ("uniform", "flexible", "sandwich"):
        task.sampling = mode
        for s in range(40):
            widths, ratios = task.sample_sub_generator(torch.Generator().manual_seed(s))
            widths = widths or full
            assert len(widths) == len(ratios) == task.G.num_ws
            assert all(b <= w <= f or w == f for w, f, b in zip(widths, full, bottom))
            assert all(w % 2 == 0 for w in widths)
            seen.setdefault(mode, set()).add(tuple(ratios))
    assert len(seen["uniform"]) == 4 and all(len(set(r)) == 1 for r in seen["uniform"])
    assert any(len(set(r)) > 1 for r in seen["flexible"])
    # distillation: zero against itself, positive against a different teacher
    task.teacher = task.add_frozen("teacher", AnycostGenerator(32, 16, 2, channel_multiplier=0.0625,
                                                               channel_max=16), tmp_path / "images" / "img_00.png")
    task.teacher.load_state_dict(task.G.state_dict())
    lat = (torch.randn(2, 16), None, None)
    noise = [torch.randn(s) for s in task.G.synthesis.noise_shapes()]
    with torch.no_grad():
        rgbs = task.G.synthesis(task.ws_of(task.G, lat), noise=noise, return_rgbs=True)[1][-4:]
        mse, perc = task.distill_losses([rgbs[-1]], lat, noise)
        assert float(mse) == 0 and abs(float(perc)) < 1e-6
        with task.G.sub_generator(ratio=0.25):
            sub = task.G.synthesis(task.ws_of(task.G, lat), noise=noise, return_rgbs=True)[1][-4:]
        mse, perc = task.distill_losses(sub, lat, noise)
        assert float(mse) > 0 and float(perc) > 0


def test_stage3_resume_equals_uninterrupted_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    torch.manual_seed(5)  # a previous stage written in the official layout (what stage 3 reads from stage 2)
    G = AnycostGenerator(32, 16, 2, channel_multiplier=0.0625, channel_max=16)
    D = AnycostDiscriminator(32, channel_multiplier=0.0625, channel_max=16, n_res=4, modulate=False)
    prev = tmp_path / "stage2.pt"
    torch.save({**to_official(generator=G, discriminator=D, g=G), "epoch": 1, "fid": 0.0, "best_fid": 0.0}, prev)
    cfg = cfg_for(tmp_path, "anycost_adaptive", f"model.anycost.init_from={prev}",
                  f"model.anycost.distill.teacher={prev}")
    torch.manual_seed(0)
    full_task, full = run(cfg, tmp_path / "full", 3, ckpt_every=2, image_every=3)
    full.val_set, full.val_every, full.val_batches = instantiate(cfg.data.train), 3, 1
    full.fit()
    torch.manual_seed(0)
    _, part = run(cfg, tmp_path / "part", 3, ckpt_every=2, stop_after=2)
    part.fit()
    torch.manual_seed(123)
    res_task, res = run(cfg, tmp_path / "part", 3, ckpt_every=2, resume="auto")
    res.fit()
    assert res.step == 3
    for name in ("generator", "g_ema", "discriminator"):
        a, b = full_task.networks[name].state_dict(), res_task.networks[name].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=f"{name} {k}")
    acc = EventAccumulator(str(tmp_path / "full" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/D", "loss/G", "loss/G_distill", "loss/G_distill_lpips", "loss/D_r1",
            "val/consistency_lpips_x0.5", "val/consistency_lpips_x0.25"} <= scalars
    img = acc.Images("train/samples_ema_full_x0.5_x0.25")[-1]
    assert img.width == 3 * 32 + 4 * 2 and img.height == 4 * 32 + 5 * 2  # columns full | x0.5 | x0.25


def test_bad_stage_settings_are_one_line(tmp_path):
    with pytest.raises(AsapError, match="path_weight must be 0"):
        build_task(cfg_for(tmp_path, "anycost_multires", "model.loss.path_weight=2"))
    with pytest.raises(AsapError, match="mode must be one of"):
        build_task(cfg_for(tmp_path, "anycost_adaptive", "model.anycost.dynamic_channels.mode=random"))
    with pytest.raises(AsapError, match="init_from"):
        build_task(cfg_for(tmp_path, "anycost_multires", f"model.anycost.init_from={tmp_path / 'missing.pt'}"))
