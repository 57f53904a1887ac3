"""MobileStyleGAN through the tools: generate and project with official checkpoints (W+ of 3n+2 slots), ONNX export
with style_inv folded checked by onnxruntime, the benchmark entry."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import asap.pretrained
from asap.inference.export import export, max_difference, prepare
from asap.inference.generate import generate
from asap.inference.project import project
from asap.metrics.lpips import build_lpips
from tests.conftest import REPO, fixture_dir


def _run(tool, *args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_generate_tool_with_the_official_checkpoint(tmp_path):
    d = fixture_dir("mobilestylegan")
    r = _run("generate.py", f"checkpoint={d / 'checkpoint.pt'}", "seeds=0-2", "truncation_psi=0.7",
             f"out={tmp_path / 'out'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "(64x64)" in r.stdout
    S = asap.pretrained.load(d / "checkpoint.pt")
    expected, _ = generate(S, [0, 1, 2], truncation_psi=0.7, noise_mode="const")
    for k, seed in enumerate((0, 1, 2)):
        img = np.asarray(Image.open(tmp_path / "out" / f"seed{seed:04d}.png"))
        assert img.shape == (64, 64, 3)
        np.testing.assert_array_equal(img, expected[k].permute(1, 2, 0).numpy())
    assert (tmp_path / "out" / "grid.png").is_file()
    # the truncation centre is the file's style_mean, and random noise depends on the seed only
    a, _ = generate(S, [5, 6], noise_mode="random", batch_size=2)
    b, _ = generate(S, [6], noise_mode="random")
    assert torch.equal(a[1], b[0])


def test_project_into_the_students_w_plus():
    d = fixture_dir("mobilestylegan")
    S = asap.pretrained.load(d / "checkpoint.pt")
    with torch.no_grad():
        target = S.synthesis(S.mapping(torch.randn(1, S.z_dim)), noise_mode="const")
    lpips = build_lpips("alex", pretrained=False)
    out = project(S, target.clamp(-1, 1), steps=6, space="w+", lpips=lpips, lr=0.05, w_avg_samples=256)
    assert out["ws"].shape == (1, S.num_ws, S.w_dim) == (1, 11, 64)
    assert [tuple(n.shape) for n in out["noise"]] == S.synthesis.noise_shapes()
    assert out["loss"] < out["initial_loss"]
    torch.testing.assert_close(S.w_avg, torch.load(d / "inputs.pt", weights_only=True)["style_mean"][0, 0])


def test_onnx_export_folds_style_inv_and_matches_pytorch(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    d = fixture_dir("mobilestylegan")
    shutil.copy(d / "checkpoint.pt", tmp_path / "distiller.ckpt")
    r = _run("export.py", f"checkpoint={tmp_path / 'distiller.ckpt'}", "format=onnx", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    path = tmp_path / "distiller.onnx"
    assert "max abs difference vs PyTorch" in r.stdout and path.is_file()
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert not ops & {"Pow", "ReduceSum", "Sqrt"}  # no demodulation computed at run time: it is folded
    assert [i.name for i in graph.input] == ["w"]
    S = asap.pretrained.load(d / "checkpoint.pt")
    w = S.mapping(torch.randn(3, S.z_dim)).detach()  # a batch of 3 through the dynamic batch axis
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"w": w.numpy()})[0]
    S.synthesis.fast_inference = False
    with torch.no_grad():
        ref = S.synthesis(w, noise_mode="const")
    torch.testing.assert_close(torch.from_numpy(got), ref, atol=1e-4, rtol=1e-4)
    # the in-process API: the folded module, its example input, and torchscript as well
    module, x, name = prepare(S, None, batch=2)
    assert name == "w" and x.shape == (2, 64)
    export(module, x, tmp_path / "s.ts.pt", "torchscript", input_name=name)
    assert max_difference(module, tmp_path / "s.ts.pt", x, "torchscript", name) < 1e-5


def test_benchmark_entry_counts_the_student(tmp_path):
    r = _run("benchmark.py", "models=[mobilestylegan]", "res=[32x32]", "runs=1", "warmup=0", "memory=false",
             f"out={tmp_path / 'b.json'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import json
    row = json.loads((tmp_path / "b.json").read_text())[0]
    assert row["model"] == "mobilestylegan" and row["res"] == "32x32"
    assert row["macs_executed"] < row["macs"]  # the timed inference path skips the auxiliary heads
