"""Translation training end to end on a tiny model: configs compose, G loss falls, exact resume, TensorBoard
grids, and tools/train.py -> evaluate.py -> translate.py on the embedded synthetic data."""
from __future__ import annotations

import json
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
from asap.cli import compose
from asap.data.collate import collate
from asap.training.run import build_task
from asap.training.trainer import Trainer
from tests.conftest import REPO

TINY = ["model.generator.lr_width=4", "model.generator.lr_max_width=8", "model.generator.lr_depth=1",
        "model.generator.hr_width=8", "model.generator.hr_depth=2", "model.discriminator.ndf=4",
        "model.discriminator.n_layers_D=2", "data.generate.num_train=12", "data.generate.num_val=4",
        "data.batch_size=2", "data.num_workers=0"]


def tiny_cfg(tmp_path: Path, *extra: str):
    return compose("train", [f"data.root={tmp_path / 'synthetic'}", *TINY, *extra])


@pytest.mark.parametrize("model", ["asapnet", "spade"])
@pytest.mark.parametrize("data", ["synthetic", "cityscapes", "ade20k", "facades", "pairs"])
def test_every_translation_pair_composes(model, data):
    extra = ["data.label_nc=5"] if data == "pairs" else []
    cfg = compose("train", [f"model={model}", f"data={data}", *extra])
    gen = dict(cfg.model.generator)
    assert gen["label_nc"] == cfg.data.label_nc
    assert cfg.model.task._target_ == "asap.tasks.translation.TranslationTask"
    assert cfg.trainer.batch_size == cfg.data.batch_size


def test_wrong_override_fails_with_hydra_message():
    from asap.errors import AsapError
    with pytest.raises(AsapError, match="model=nonexistent|nonexistent"):
        compose("train", ["model=nonexistent"])


def test_g_loss_decreases_on_a_fixed_batch(tmp_path):
    from asap.training.trainer import seed_everything
    seed_everything(0)  # torch, numpy and python RNGs: the batch's augmentation must not depend on earlier tests
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0", "model.loss.lambda_l1=10.0", "model.optim.lr=0.004")
    task = build_task(cfg)
    train, _ = (instantiate(cfg.data.train), None)
    batch = collate([train[i] for i in range(2)])
    batch.pop("skipped")
    trainer = Trainer(task, None, None, tmp_path / "run", max_steps=100, batch_size=2, progress=False)
    totals = []
    for step in range(25):
        trainer.step = step
        out = trainer.train_step(batch)  # G then D, as in training
        totals.append(float(out["loss/G_L1"]))
    assert np.mean(totals[-3:]) < 0.88 * np.mean(totals[:3])  # measured about 0.81 on this batch


def _trainer(cfg, run_dir, **kw):
    task = build_task(cfg)
    train, val = instantiate(cfg.data.train), instantiate(cfg.data.val)
    args = dict(max_steps=8, batch_size=2, seed=0, collate_fn=collate, log_every=2, image_every=4, val_every=4,
                ckpt_every=3, keep_last=5, progress=False, config={"note": "test"})
    args.update(kw)
    return task, Trainer(task, train, val, run_dir, **args)


def test_translation_resume_equals_uninterrupted(tmp_path):
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0")
    torch.manual_seed(0)
    full_task, full = _trainer(cfg, tmp_path / "full")
    full.fit()
    torch.manual_seed(0)
    _, part = _trainer(cfg, tmp_path / "part", stop_after=5)
    part.fit()
    torch.manual_seed(123)  # a different process state: the checkpoint must restore everything
    res_task, res = _trainer(cfg, tmp_path / "part", resume="auto")
    res.fit()
    for name in ("generator", "discriminator"):
        a, b = full_task.networks[name].state_dict(), res_task.networks[name].state_dict()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)


def test_tensorboard_has_losses_and_grids(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0")
    _, tr = _trainer(cfg, tmp_path / "run")
    tr.fit()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"loss/G_GAN", "loss/G_feat", "loss/D_real", "loss/D_fake", "D/real_score", "D/fake_score", "lr/G",
            "lr/D", "perf/images_per_s", "val/psnr", "val/l1", "val/lpips"} <= scalars
    assert {"train/label_real_fake", "val/label_real_fake"} <= set(acc.Tags()["images"])
    img = acc.Images("train/label_real_fake")[-1]
    assert img.width > 3 * 64 and img.height >= 2 * 32


def run_tool(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / name), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_train_evaluate_translate_tools(tmp_path):
    root = tmp_path / "synthetic"
    common = [f"data.root={root}", *TINY]
    r = run_tool("train.py", *common, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.val_every=4",
                 "trainer.image_every=2", f"hydra.run.dir={tmp_path / 'run'}", "trainer.progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpts = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert [c.name for c in ckpts] == ["step_0000002.pt", "step_0000004.pt"]
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    r = run_tool("evaluate.py", f"checkpoint={ckpts[-1]}", *[c for c in common if c.startswith("data.")],
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"psnr", "l1", "lpips", "baseline_psnr"} <= set(result)
    assert 0 < result["psnr"] < 100 and 0 <= result["l1"] <= 1 and result["baseline_psnr"] > 5
    label = next((root / "gtFine" / "val").glob("*/*_labelIds.png"))
    r = run_tool("translate.py", str(label), f"checkpoint={ckpts[-1]}", f"out={tmp_path / 'out'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = np.array(Image.open(tmp_path / "out" / f"{label.stem}.png"))
    assert out.shape == (128, 256, 3) and out.dtype == np.uint8
    # resume=auto from a new run folder continues the previous run
    r = run_tool("train.py", *common, "trainer.max_steps=6", "trainer.ckpt_every=2", "trainer.resume=auto",
                 f"hydra.run.dir={tmp_path / 'run'}", "trainer.progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stderr + r.stdout
    assert (tmp_path / "run" / "checkpoints" / "step_0000006.pt").is_file()


def test_bad_pair_stops_training_with_file_name(tmp_path):
    root = tmp_path / "synthetic"
    cfg = tiny_cfg(tmp_path)
    instantiate(cfg.data.train)  # generates the data
    label = sorted((root / "gtFine" / "train").glob("*/*_labelIds.png"))[3]
    Image.fromarray(np.full((128, 256), 40, np.uint8)).save(label)  # id 40 >= label_nc 35
    r = run_tool("train.py", f"data.root={root}", *TINY, "trainer.max_steps=30", "trainer.ckpt_every=1",
                 f"hydra.run.dir={tmp_path / 'run'}", "trainer.progress=false", cwd=tmp_path)
    assert r.returncode != 0
    err = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(err) == 1 and label.name in err[0] and "Traceback" not in r.stderr
    r = run_tool("train.py", f"data.root={root}", *TINY, "trainer.max_steps=12", "data.skip_bad=true",
                 f"hydra.run.dir={tmp_path / 'run2'}", "trainer.progress=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped 2 bad sample" in r.stdout + r.stderr


def test_bf16_steps_are_finite_and_close_to_float32(tmp_path):
    """trainer.precision=bf16 on CPU: 3 steps run; the first step's losses (same weights, same batch) agree with
    float32 within 5% (bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding, a few roundings deep)."""
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0", "model.loss.lambda_l1=10.0")
    train = instantiate(cfg.data.train)
    batch = collate([train[i] for i in range(2)])
    batch.pop("skipped")
    runs = {}
    for precision in ("32", "bf16"):
        torch.manual_seed(0)
        task = build_task(cfg)
        trainer = Trainer(task, None, None, tmp_path / precision, max_steps=3, batch_size=2, progress=False,
                          precision=precision)
        logs = []
        for step in range(3):
            trainer.step = step
            logs.append(trainer.train_step(batch))
        runs[precision] = logs
        assert trainer._nonfinite is None
        assert all(np.isfinite(v) for out in logs for v in out.values())
        assert all(p.dtype == torch.float32 for p in task.G.parameters())  # weights stay float32
    for k in ("loss/G_GAN", "loss/G_L1", "loss/D_real", "loss/D_fake"):
        a, b = runs["32"][0][k], runs["bf16"][0][k]
        assert abs(a - b) <= 0.05 * abs(a) + 1e-3, (k, a, b)


def test_d_steps_per_g_is_the_g_phase_interval(tmp_path):
    """Official --D_steps_per_G=k: D on every batch, G on every k-th."""
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0", "model.optim.d_steps_per_g=2")
    task = build_task(cfg)
    assert [(p.name, p.interval, p.networks) for p in task.phases()] == [
        ("G", 2, ("generator",)), ("D", 1, ("discriminator",))]
    train = instantiate(cfg.data.train)
    batch = collate([train[i] for i in range(2)])
    batch.pop("skipped")
    trainer = Trainer(task, None, None, tmp_path / "run", max_steps=10, batch_size=2, progress=False)
    changed = []
    for step in range(4):
        g = [p.detach().clone() for p in task.G.parameters()]
        d = [p.detach().clone() for p in task.D.parameters()]
        trainer.step = step
        trainer.train_step(batch)
        changed.append((any(not torch.equal(a, p) for a, p in zip(g, task.G.parameters())),
                        any(not torch.equal(a, p) for a, p in zip(d, task.D.parameters()))))
    assert changed == [(True, True), (False, True), (True, True), (False, True)]


def test_training_never_takes_the_inference_path(tmp_path, monkeypatch):
    """The D phase runs G without gradients but in train mode: the training kernels, not the fast inference path
    (which also rebuilds cached Winograd filters); the held-out evaluation (eval mode, no grad) does use it."""
    import asap.models.asapnet as asapnet_module
    calls = []

    def spy(*args, **kwargs):
        calls.append(1)
        return real_blocks(*args, **kwargs)
    real_blocks = asapnet_module.pixelwise_mlp_blocks
    monkeypatch.setattr(asapnet_module, "pixelwise_mlp_blocks", spy)
    cfg = tiny_cfg(tmp_path, "model.loss.lambda_vgg=0.0")
    task, trainer = _trainer(cfg, tmp_path / "run", max_steps=2, val_every=0, image_every=0)
    trainer.fit()
    assert calls == []
    trainer.validate()
    assert calls  # evaluation is inference


def test_task_constructor_errors_are_one_line(tmp_path):
    from asap.errors import AsapError
    with pytest.raises(AsapError) as e:
        build_task(tiny_cfg(tmp_path, "model.generator.learned_ds_factor=3"))
    assert str(e.value).startswith("model=asapnet: learned_ds_factor must be a power of two") and "\n" not in str(e.value)
    with pytest.raises(AsapError, match="model.loss.lambda_l1 must be >= 0"):
        build_task(tiny_cfg(tmp_path, "model.loss.lambda_l1=-1"))
    r = run_tool("train.py", f"data.root={tmp_path / 'synthetic'}", *TINY, "model.generator.learned_ds_factor=3",
                 f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert [l for l in r.stderr.splitlines() if l.startswith("error:")] == [
        "error: model=asapnet: learned_ds_factor must be a power of two <= downsampling (8), got 3"]
