"""FastGAN in the tools: seeds -> images (eval mode by default, the official train-mode sampling as an option),
ONNX export checked with onnxruntime, the generator benchmark numbers and the training-step benchmark entry."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

import asap.pretrained
from asap.errors import AsapError
from asap.inference.export import export, max_difference
from asap.inference.fastgan import FastGANExport, export_inputs, generate_fastgan, seed_inputs
from tests.conftest import REPO, fixture_dir
from tests.test_train_fastgan import TINY


@pytest.fixture(scope="module")
def G():
    return asap.pretrained.load(fixture_dir("fastgan") / "checkpoint.pt", family="fastgan")


def test_eval_sampling_depends_only_on_the_seed_and_train_mode_is_the_official_one(G):
    images, ips = generate_fastgan(G, [3, 5, 7], batch_size=3)
    alone, _ = generate_fastgan(G, [5], batch_size=1)
    assert images.dtype == torch.uint8 and images.shape == (3, 3, 256, 256) and ips > 0
    # eval mode: an image does not depend on its batch (up to the float rounding of batched convolutions)
    assert (images[1].int() - alone[0].int()).abs().max() <= 1
    z, noise = seed_inputs(G, 5)
    with torch.no_grad():
        want = ((G(z, noise=noise) + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)
    assert torch.equal(alone[0], want[0])
    before = {k: v.clone() for k, v in G.state_dict().items()}
    train, _ = generate_fastgan(G, [3, 5, 7], mode="train", batch_size=3)
    zs, ns = zip(*[seed_inputs(G, s) for s in (3, 5, 7)])
    ref = asap.pretrained.load(fixture_dir("fastgan") / "checkpoint.pt", family="fastgan").train()
    with torch.no_grad():  # the official eval.py: train mode, batch statistics, one power iteration
        want = ref(torch.cat(zs), noise=[torch.cat(n) for n in zip(*ns)])
    assert torch.equal(train, ((want + 1) * 127.5).clamp(0, 255).round().to(torch.uint8))
    assert not torch.equal(train, images)
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items()) and not G.training  # state restored
    with pytest.raises(AsapError, match="mode='batch'"):
        generate_fastgan(G, [0], mode="batch")


def test_onnx_export_matches_pytorch_with_onnxruntime(G, tmp_path):
    pytest.importorskip("onnxruntime")
    model = FastGANExport(G)
    x, names = export_inputs(G, batch=2)
    out = export(model, x, tmp_path / "g.onnx", "onnx", input_names=names)
    assert names == ["z"] + [f"noise_{i}" for i in range(6)]
    diff = max_difference(model, out, x, "onnx", input_names=names)
    assert diff is not None and diff < 1e-4
    x3, _ = export_inputs(G, batch=3, seed=1)  # the batch dimension is dynamic
    assert max_difference(model, out, x3, "onnx", input_names=names) < 1e-4


def test_generate_and_export_tools_on_an_official_file(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ckpt = fixture_dir("fastgan") / "checkpoint_g_d.pt"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "generate.py"), f"checkpoint={ckpt}", "seeds=0-1",
                        "mode=train", f"out={tmp_path / 'gen'}"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["grid.png", "seed0000.png", "seed0001.png"]
    r = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), f"checkpoint={ckpt}",
                        f"out={tmp_path / 'g.onnx'}"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0 and "max abs difference vs PyTorch" in r.stdout, r.stderr[-2000:]


def test_benchmark_generator_and_training_step_entries():
    sys.path.insert(0, str(REPO / "tools"))
    import benchmark

    import asap.config  # noqa: F401
    bench = OmegaConf.load(REPO / "conf" / "bench" / "fastgan.yaml")
    g, fn = benchmark.build(bench, 256, 256, 1, torch.device("cpu"), torch.float32)
    from asap.metrics.profile import count_macs, count_params
    assert round(count_params(g) / 1e6, 2) == 29.13
    # the architecture's 9.73 G (official count); the fused nearest-up + 3x3 convs execute 5.71 G
    arch, executed = benchmark.architecture_and_executed_macs(g, fn)
    assert round(arch / 1e9, 2) == 9.73 and round(executed / 1e9, 2) == 5.71 and g.fast_inference
    g.fast_inference = False
    assert count_macs(fn) == arch
    cfg = OmegaConf.create({"variants": [TINY], "seed": 0, "warmup": 1, "runs": 1})
    rows = benchmark.train_step_rows(cfg, {"fastgan": bench}, [(256, 256)], torch.device("cpu"))
    assert len(rows) == 1 and rows[0]["batch"] == 2 and rows[0]["step_s_median"] > 0
    assert rows[0]["reference_s"] == 14.9 and rows[0]["ratio_to_reference"] == rows[0]["step_s_median"] / 14.9
