"""MobileStyleGAN distillation: the loss falls in a few CPU steps, exact resume, the frozen teacher stays out of
checkpoints, TensorBoard losses and teacher|student grids, teachers from every file kind, tools/train.py end to
end, one-line errors."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import asap.pretrained
from asap.cli import compose
from asap.errors import AsapError
from asap.losses.distillation import wavelet_distillation_terms
from asap.models.mobilestylegan import MobileStyleGANGenerator
from asap.models.stylegan2 import StyleGAN2Generator
from asap.nn.diffaug import NUM_UNIFORMS, DistillAugment
from asap.pretrained.common import read_file
from asap.pretrained.stylegan2 import to_rosinality
from asap.tasks.mobilestylegan import load_teacher
from asap.training.run import build_task
from asap.training.trainer import Trainer
from tests.conftest import REPO, fixture_dir

FAST = ["model.loss.lpips_pretrained=false", "model.loss.perceptual=0", "data.batch_size=2", "model.samples.num=2"]


@pytest.fixture(autouse=True)
def one_thread():
    """These networks are tiny: one thread avoids OpenMP spin-waiting on a shared, loaded CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def teacher_file(tmp_path):
    torch.manual_seed(0)
    T = StyleGAN2Generator(size=16, style_dim=16, n_mlp=2, channels=[16, 16, 8])
    for name, p in T.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.3)
    T.mean_w(256)
    path = tmp_path / "teacher.pt"
    torch.save(to_rosinality(T), path)  # a rosinality-layout file
    return path


def _cfg(teacher, *extra):
    return compose("train", ["model=mobilestylegan", f"model.teacher={teacher}", *FAST, *extra])


def _trainer(task, run_dir, **kw):
    args = dict(max_steps=6, batch_size=2, seed=0, log_every=2, image_every=3, val_every=0, ckpt_every=3,
                keep_last=5, progress=False, config={"note": "test"})
    args.update(kw)
    return Trainer(task, None, None, run_dir, **args)


def _distill_error(task, z, noise):
    with torch.no_grad():
        w = task.T.mapping(z)
        img, freqs = task.student(w, noise)
        l1, l2 = wavelet_distillation_terms(freqs, task.T.synthesis(w, noise=noise))
    return float(l1 + l2)


def test_a_few_steps_reduce_the_distillation_loss(teacher_file, tmp_path):
    torch.manual_seed(0)
    task = build_task(_cfg(teacher_file, "model.optim.lr_student=0.005", "model.loss.d_reg_every=4"))
    assert [(p.name, p.interval) for p in task.phases()] == [("G", 1), ("D", 1), ("Dreg", 4)]
    gen = torch.Generator().manual_seed(9)
    z = torch.randn(16, 16, generator=gen)
    noise = [torch.randn(s, generator=gen) for s in task.T.synthesis.noise_shapes()]
    before = _distill_error(task, z, noise)
    teacher_before = {k: v.clone() for k, v in task.T.state_dict().items()}
    _trainer(task, tmp_path / "run", max_steps=25, ckpt_every=100, image_every=0).fit()
    after = _distill_error(task, z, noise)
    assert after < 0.7 * before, (before, after)
    for k, v in task.T.state_dict().items():  # the teacher never moves and stays in eval mode
        assert torch.equal(v, teacher_before[k]), k
    assert not task.T.training and all(not p.requires_grad for p in task.T.parameters())
    torch.testing.assert_close(task.S.mapping.state_dict(), task.T.mapping.state_dict(), rtol=0, atol=0)
    torch.testing.assert_close(task.S.w_avg, task.T.w_avg, rtol=0, atol=0)


def test_resume_equals_uninterrupted_and_teacher_is_not_copied(teacher_file, tmp_path):
    cfg = _cfg(teacher_file, "model.loss.d_reg_every=2")
    torch.manual_seed(0)
    full_task = build_task(cfg)
    _trainer(full_task, tmp_path / "full").fit()
    torch.manual_seed(0)
    _trainer(build_task(cfg), tmp_path / "part", stop_after=4).fit()
    torch.manual_seed(123)
    res_task = build_task(cfg)
    res = _trainer(res_task, tmp_path / "part", resume="auto")
    res.fit()
    assert res.step == 6
    for name in ("generator", "discriminator"):
        a, b = full_task.networks[name].state_dict(), res_task.networks[name].state_dict()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"{name} {k}")
    ck = read_file(res.last_checkpoint)
    assert set(ck["networks"]) == {"generator", "discriminator"}
    assert ck["external"]["teacher"]["path"] == str(teacher_file.resolve())
    S = asap.pretrained.load(res.last_checkpoint)
    assert isinstance(S, MobileStyleGANGenerator) and S.has_w_avg() and S.channels == [16, 16]
    with torch.no_grad():
        assert S(torch.randn(2, 16), truncation_psi=0.7).shape == (2, 3, 16, 16)


def test_tensorboard_losses_and_teacher_student_grid(teacher_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    task = build_task(_cfg(teacher_file, "model.loss.perceptual=1", "model.loss.lpips_net=alex",
                           "model.loss.perceptual_size=64",
                           "model.loss.d_reg_every=2"))
    _trainer(task, tmp_path / "run", max_steps=4, ckpt_every=100).fit()
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert {"loss/l1", "loss/l2", "loss/perceptual", "loss/distill", "loss/G_gan", "loss/G", "loss/D_real",
            "loss/D_fake", "loss/D_r1"} <= set(acc.Tags()["scalars"])
    img = acc.Images("train/teacher_student")[-1]
    assert (img.width, img.height) == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # 2 latents: teacher row over student row


def test_augmentation_is_keyed_and_differentiable():
    x = torch.randn(3, 3, 16, 16, requires_grad=True)
    aug = DistillAugment()
    u = torch.rand(3, NUM_UNIFORMS, generator=torch.Generator().manual_seed(0))
    y = aug(x, u)
    torch.testing.assert_close(y, aug(x, u))
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    off = torch.ones(3, NUM_UNIFORMS)  # every probability test fails: identity
    torch.testing.assert_close(aug(x, off), x, rtol=0, atol=1e-5)
    flip = off.clone()
    flip[:, 0] = 0
    torch.testing.assert_close(aug(x, flip), x.flip(-1), rtol=0, atol=1e-5)
    erase = off.clone()
    erase[:, 6] = 0
    assert (aug(x, erase) == 0).any() and (aug(x, erase) != 0).any()


def test_teachers_from_every_kind_of_file(teacher_file):
    d = fixture_dir("mobilestylegan")
    T, files = load_teacher(teacher_file)
    assert isinstance(T, StyleGAN2Generator) and files == [teacher_file]
    T, files = load_teacher(d / "teacher_synthesis_network.ckpt")  # the converter pair, mapping found beside it
    assert files[1].name == "teacher_mapping_network.ckpt" and T.channels == [64, 64, 48, 32, 16]
    inp = torch.load(d / "inputs.pt", weights_only=True)
    exp = torch.load(d / "expected.pt", weights_only=True)
    noise = [inp["noise"][0]] + [m for pair in inp["noise"][1:] for m in (pair[0], pair[1])]
    with torch.no_grad():
        torch.testing.assert_close(T(inp["z"], noise=noise), exp["teacher_img"], atol=1e-4, rtol=1e-4)
    T, _ = load_teacher(d / "checkpoint.pt")  # the distiller file: its teacher
    assert T.has_w_avg()
    with pytest.raises(AsapError, match="not a StyleGAN2 generator"):
        load_teacher(d / "teacher_mapping_network.ckpt")
    with pytest.raises(AsapError, match="model.teacher=PATH is required"):
        build_task(compose("train", ["model=mobilestylegan", *FAST]))
    with pytest.raises(AsapError, match="no such file"):
        build_task(_cfg("/nonexistent/teacher.pt"))


def test_train_tool_distils_the_converter_files(tmp_path):
    d = fixture_dir("mobilestylegan")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "model=mobilestylegan",
                        f"model.teacher={d / 'teacher_synthesis_network.ckpt'}", *FAST, "trainer.max_steps=2",
                        "trainer.image_every=2", "trainer.progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    S = asap.pretrained.load(tmp_path / "run" / "checkpoints" / "step_0000002.pt")
    assert isinstance(S, MobileStyleGANGenerator) and S.channels == [64, 64, 48, 32]
    assert any((tmp_path / "run" / "tb").iterdir())
    r = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), "model=mobilestylegan",
                        "trainer.progress=false", f"hydra.run.dir={tmp_path / 'bad'}"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert r.returncode == 2 and "model.teacher=PATH is required" in r.stderr
    assert "Traceback" not in r.stderr
