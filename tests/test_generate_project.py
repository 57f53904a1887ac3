"""tools/generate.py and tools/project.py: seeded generation, truncation, official checkpoints, latent projection
and every bad-input case (one line on stderr, exit code 2, no output files)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import asap.pretrained
from asap.cli import tool_main
from asap.inference.generate import generate, parse_seeds, to_uint8
from asap.inference.project import PerceptualToTarget, load_image, noise_regularization, project
from asap.metrics.lpips import build_lpips
from asap.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_png, save_torch
from tests.conftest import REPO, fixture_dir

TINY = dict(size=16, style_dim=32, n_mlp=2, channels=[32, 32, 16])
TARGET = "asap.models.stylegan2.StyleGAN2Generator"


def tool_path(name: str) -> str:
    return str(REPO / "tools" / f"{name}.py")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is as fast, and much faster on a shared, busy CPU (no OpenMP waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_tool(name: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, tool_path(name), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", tool_path(name))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def call_tool(name: str, *args: str) -> int:
    """Run a tool in this process (fast); errors come back as the exit code, like the command line."""
    mod = load_tool(name)
    try:
        return tool_main(name, mod.run, mod.HELP, argv=list(args))
    except SystemExit as e:
        return int(e.code)


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.array(im)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    g_ema, g = StyleGAN2Generator(**TINY), StyleGAN2Generator(**TINY)
    with torch.no_grad():  # noise strengths start at 0; make the noise inputs matter
        for net in (g_ema, g):
            for name, param in net.named_parameters():
                if name.endswith("noise.weight"):
                    param.fill_(0.3)
    path = tmp_path_factory.mktemp("ckpt") / "tiny_sg2.pt"
    cfg = {"_target_": TARGET, **TINY}
    d_cfg = {"_target_": "asap.models.stylegan2.StyleGAN2Discriminator", "size": 16, "channels": [32, 32, 16]}
    d = StyleGAN2Discriminator(size=16, channels=[32, 32, 16])
    save_torch(make_checkpoint("stylegan2", {"g_ema": (g_ema, cfg), "generator": (g, cfg), "discriminator": (d, d_cfg)},
                               step=0), path)
    return path


@pytest.fixture(scope="module")
def asapnet_ckpt(tmp_path_factory) -> Path:
    from asap.models.asapnet import ASAPNetGenerator
    kw = dict(label_nc=5, downsampling=8, learned_ds_factor=4, lr_width=4, lr_max_width=8, lr_depth=1, hr_width=8,
              hr_depth=2, image_size=[32, 32])
    path = tmp_path_factory.mktemp("ckpt") / "asapnet.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (ASAPNetGenerator(**kw),
                                                         {"_target_": "asap.models.asapnet.ASAPNetGenerator", **kw})}),
               path)
    return path


# -- generate --------------------------------------------------------------------------------------------------
def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds([5, 1, 5]) == [5, 1]
    assert parse_seeds(7) == [7]
    assert parse_seeds("1,4,10-11") == [1, 4, 10, 11]
    for bad in ("abc", "3-1", "", [-1], [1.5], None):
        with pytest.raises(Exception, match="seeds="):
            parse_seeds(bad)


def test_generate_tool_files_determinism_and_direct_forward(tmp_path, tiny_ckpt):
    a, b = tmp_path / "a", tmp_path / "b"
    r = run_tool("generate", f"checkpoint={tiny_ckpt}", "seeds=0-2", "truncation_psi=0.7", "batch_size=3", f"out={a}")
    assert r.returncode == 0, r.stderr
    assert "images/s" in r.stdout
    assert "w_avg" in r.stderr  # the tiny file carries no w_avg: a note says it is computed
    assert sorted(p.name for p in a.iterdir()) == ["grid.png", "seed0000.png", "seed0001.png", "seed0002.png"]
    imgs = [read_png(a / f"seed{s:04d}.png") for s in range(3)]
    for im in imgs:
        assert im.dtype == np.uint8 and im.shape == (16, 16, 3)
    grid = read_png(a / "grid.png")
    assert grid.shape[0] > 16 and grid.shape[1] > 16
    assert not np.array_equal(imgs[0], imgs[1])
    # same seeds, batch size 1, in this process: pixel-equal
    assert call_tool("generate", f"checkpoint={tiny_ckpt}", "seeds=[0,1,2]", "truncation_psi=0.7", "batch_size=1",
                     f"out={b}", "grid=false") == 0
    assert sorted(p.name for p in b.iterdir()) == ["seed0000.png", "seed0001.png", "seed0002.png"]
    for s in range(3):
        assert np.array_equal(imgs[s], read_png(b / f"seed{s:04d}.png"))
    # a second run gives the same files
    assert call_tool("generate", f"checkpoint={tiny_ckpt}", "seeds=0-2", "truncation_psi=0.7", "batch_size=3",
                     f"out={tmp_path / 'a2'}") == 0
    for s in range(3):
        assert np.array_equal(imgs[s], read_png(tmp_path / "a2" / f"seed{s:04d}.png"))
    # the values are G(z) for z = randn(1, z_dim) from manual_seed(s)
    G = asap.pretrained.load(tiny_ckpt)
    with torch.no_grad():
        for s in range(3):
            z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(s))
            ref = to_uint8(G(z, truncation_psi=0.7))[0].permute(1, 2, 0).numpy()
            assert np.array_equal(ref, read_png(b / f"seed{s:04d}.png"))


def test_generate_truncation_and_noise_modes(tiny_ckpt):
    G = asap.pretrained.load(tiny_ckpt)
    seeds = [0, 1, 2, 3]
    collapsed, ips = generate(G, seeds, truncation_psi=0.0)
    assert collapsed.dtype == torch.uint8 and collapsed.shape == (4, 3, 16, 16) and ips > 0
    assert G.has_w_avg()
    for i in range(1, 4):
        assert torch.equal(collapsed[0], collapsed[i])  # every seed collapses to w_avg
    free, _ = generate(G, seeds, truncation_psi=1.0)
    assert not torch.equal(free[0], free[1])
    # random noise: seeded per seed, so independent of batch size, and unlike the stored noise
    r1, _ = generate(G, seeds, noise_mode="random", batch_size=4)
    r2, _ = generate(G, seeds, noise_mode="random", batch_size=1)
    assert torch.equal(r1, r2)
    assert not torch.equal(r1, free)
    none, _ = generate(G, seeds, noise_mode="none", batch_size=3)
    assert not torch.equal(none, free)


def test_generate_official_fixture(tmp_path):
    ckpt = fixture_dir("stylegan2") / "checkpoint.pt"
    r = run_tool("generate", f"checkpoint={ckpt}", "seeds=[0,1]", f"out={tmp_path / 'ema'}", "grid=false")
    assert r.returncode == 0, r.stderr
    ema = [read_png(tmp_path / "ema" / f"seed{s:04d}.png") for s in range(2)]
    assert all(im.shape == (32, 32, 3) for im in ema)
    assert call_tool("generate", f"checkpoint={ckpt}", "seeds=[0,1]", f"out={tmp_path / 'g'}", "+official.which=g") == 0
    g = [read_png(tmp_path / "g" / f"seed{s:04d}.png") for s in range(2)]
    assert not np.array_equal(ema[0], g[0])
    # the converted layout carries latent_avg: truncation uses it without computing one
    legacy = fixture_dir("stylegan2") / "checkpoint_converted_layout_legacy.pt"
    G = asap.pretrained.load(legacy)
    assert G.has_w_avg()
    w_avg = G.w_avg.clone()
    generate(G, [0], truncation_psi=0.5)
    assert torch.equal(G.w_avg, w_avg)


# -- project ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def target_png(tmp_path_factory, tiny_ckpt) -> Path:
    """An image the tiny generator itself makes from a known w (truncated seed 123, stored noise)."""
    G = asap.pretrained.load(tiny_ckpt)
    with torch.no_grad():
        w = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(123)))
        img = G.synthesis(G.broadcast(w), noise_mode="const")
    path = tmp_path_factory.mktemp("target") / "face.png"
    save_png(to_uint8(img)[0].permute(1, 2, 0).numpy(), path)
    return path


def test_load_image_resizes_and_crops(tmp_path):
    Image.fromarray(np.full((20, 40, 3), 200, np.uint8)).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 16)
    assert x.shape == (1, 3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, 200 / 127.5 - 1), atol=2 / 127.5)


def test_noise_regularization_prefers_decorrelated_noise():
    smooth = torch.ones(1, 1, 16, 16)
    white = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    assert noise_regularization([white]) < noise_regularization([smooth])


@pytest.fixture(scope="module")
def lpips():
    return build_lpips("vgg", pretrained=False)


def test_cached_target_lpips_equals_lpips(lpips):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1, torch.rand(1, 3, 16, 16, generator=gen) * 2 - 1
    cached = PerceptualToTarget(lpips, b)
    assert cached.cached is not None
    assert torch.allclose(cached(a), lpips(a, b.expand_as(a)), atol=1e-6)


def test_project_function_lowers_the_loss(tiny_ckpt, target_png, lpips):
    """W+ through the function (W through the tool below)."""
    G = asap.pretrained.load(tiny_ckpt)
    space = "w+"
    res = project(G, load_image(target_png, G.size), steps=100, space=space, lpips=lpips, mse=1.0,
                  w_avg_samples=2000)
    assert len(res["loss_history"]) == 100
    assert res["loss_history"][-1] < res["loss_history"][0]
    assert res["loss"] < res["initial_loss"]
    assert res["mse"] < res["initial_mse"]
    assert res["ws"].shape == (1, G.num_ws, G.w_dim)
    assert len(res["noise"]) == G.synthesis.num_noise
    assert "w" not in res and res["space"] == "w+"


def test_project_tool_writes_reconstruction_and_latent(tmp_path, tiny_ckpt, target_png):
    out = tmp_path / "p"
    r = run_tool("project", str(target_png), f"checkpoint={tiny_ckpt}", "steps=100", "mse=1",
                 "lpips_pretrained=false", "w_avg_samples=2000", f"out={out}", "progress=false")
    assert r.returncode == 0, r.stderr
    assert "random" in r.stderr  # the random-backbone note
    m = re.search(r"face\.png: lpips ([\d.]+) mse ([\d.]+) \(start: lpips ([\d.]+) mse ([\d.]+)\)", r.stdout)
    assert m, r.stdout
    lp, mse, lp0, mse0 = map(float, m.groups())
    assert lp + mse < lp0 + mse0
    assert sorted(p.name for p in out.iterdir()) == ["face_latent.pt", "face_projected.png"]
    assert read_png(out / "face_projected.png").shape == (16, 16, 3)
    rec = torch.load(out / "face_latent.pt", weights_only=True)
    assert rec["space"] == "w" and rec["w"].shape == (1, 32) and rec["ws"].shape == (1, 6, 32)
    assert torch.equal(rec["ws"], rec["w"][:, None].expand(-1, 6, -1))
    assert [tuple(n.shape) for n in rec["noise"]] == [(1, 1, 4, 4), (1, 1, 8, 8), (1, 1, 8, 8), (1, 1, 16, 16),
                                                      (1, 1, 16, 16)]
    assert rec["checkpoint"] == str(tiny_ckpt) and rec["lpips"] == pytest.approx(lp, abs=1e-4)
    # W+, in this process
    out2 = tmp_path / "p2"
    assert call_tool("project", str(target_png), f"checkpoint={tiny_ckpt}", "steps=5", "space=w+",
                     "lpips_pretrained=false", "w_avg_samples=500", f"out={out2}", "progress=false") == 0
    rec = torch.load(out2 / "face_latent.pt", weights_only=True)
    assert rec["space"] == "w+" and rec["ws"].shape == (1, 6, 32) and "w" not in rec
    # the latent reproduces the written reconstruction
    G = asap.pretrained.load(tiny_ckpt)
    with torch.no_grad():
        img = to_uint8(G.synthesis(rec["ws"], noise=rec["noise"]))[0].permute(1, 2, 0).numpy()
    assert np.abs(img.astype(int) - read_png(out2 / "face_projected.png").astype(int)).max() <= 1


# -- bad input -------------------------------------------------------------------------------------------------
def assert_one_line(err: str, out: Path, *needles: str) -> None:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out.exists() or not any(out.iterdir())


def test_bad_input_subprocess_no_traceback(tmp_path, tiny_ckpt, asapnet_ckpt, target_png):
    out = tmp_path / "out"
    r = run_tool("generate", f"checkpoint={asapnet_ckpt}", f"out={out}")
    assert r.returncode == 2
    assert_one_line(r.stderr, out, "asapnet.pt", "not a StyleGAN-type generator")
    r = run_tool("project", str(tmp_path / "missing.png"), f"checkpoint={tiny_ckpt}", f"out={out}")
    assert r.returncode == 2
    assert_one_line(r.stderr, out, "missing.png", "no such file")


@pytest.mark.parametrize("case", ["missing_ckpt", "corrupt_ckpt", "not_stylegan", "bad_seeds", "reversed_range",
                                  "psi_text", "noise_mode", "no_ckpt", "discriminator"])
def test_generate_bad_input(tmp_path, tiny_ckpt, asapnet_ckpt, capsys, case):
    out = tmp_path / "out"
    args, needles = {"checkpoint": str(tiny_ckpt)}, []
    if case == "missing_ckpt":
        args["checkpoint"], needles = str(tmp_path / "nope.pt"), ["nope.pt", "no such file"]
    elif case == "corrupt_ckpt":
        bad = tmp_path / "trunc.pt"
        bad.write_bytes(tiny_ckpt.read_bytes()[:400])
        args["checkpoint"], needles = str(bad), ["trunc.pt"]
    elif case == "not_stylegan":
        args["checkpoint"], needles = str(asapnet_ckpt), ["asapnet.pt", "not a StyleGAN-type generator"]
    elif case == "bad_seeds":
        args["seeds"], needles = "zero-seven", ["seeds=", "zero-seven"]
    elif case == "reversed_range":
        args["seeds"], needles = "7-3", ["seeds=", "7-3"]
    elif case == "psi_text":
        args["truncation_psi"], needles = "high", ["truncation_psi", "must be a number"]
    elif case == "noise_mode":
        args["noise_mode"], needles = "loud", ["noise_mode", "loud"]
    elif case == "no_ckpt":
        del args["checkpoint"]
        needles = ["checkpoint=PATH is required"]
    elif case == "discriminator":
        args["+official.part"], needles = "discriminator", ["not a StyleGAN-type generator"]
    code = call_tool("generate", *[f"{k}={v}" for k, v in args.items()], f"out={out}")
    assert code == 2
    assert_one_line(capsys.readouterr().err, out, *needles)


@pytest.mark.parametrize("case", ["missing_image", "corrupt_image", "no_images", "missing_ckpt", "not_stylegan",
                                  "steps0", "space", "lpips_weights"])
def test_project_bad_input(tmp_path, tiny_ckpt, asapnet_ckpt, target_png, capsys, monkeypatch, case):
    out = tmp_path / "out"
    images, needles = [str(target_png)], []
    args = {"checkpoint": str(tiny_ckpt), "lpips_pretrained": "false", "steps": "3", "progress": "false"}
    if case == "missing_image":
        images, needles = [str(tmp_path / "absent.png")], ["absent.png", "no such file"]
    elif case == "corrupt_image":
        bad = tmp_path / "broken.png"
        bad.write_bytes(target_png.read_bytes()[:50])
        images, needles = [str(target_png), str(bad)], ["broken.png", "corrupt"]
    elif case == "no_images":
        images, needles = [], ["no input images"]
    elif case == "missing_ckpt":
        args["checkpoint"], needles = str(tmp_path / "gone.pt"), ["gone.pt", "no such file"]
    elif case == "not_stylegan":
        args["checkpoint"], needles = str(asapnet_ckpt), ["asapnet.pt", "not a StyleGAN-type generator"]
    elif case == "steps0":
        args["steps"], needles = "0", ["steps=0", "must be an integer >= 1"]
    elif case == "space":
        args["space"], needles = "z", ["space=", "one of w, w+"]
    elif case == "lpips_weights":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
        args["lpips_pretrained"], needles = "true", ["vgg16-397923af.pth", "lpips_pretrained=false"]
    code = call_tool("project", *images, *[f"{k}={v}" for k, v in args.items()], f"out={out}")
    assert code == 2
    assert_one_line(capsys.readouterr().err, out, *needles)


def test_help_texts_document_the_keys():
    for name, keys in (("generate", ["checkpoint=", "seeds=", "truncation_psi=", "noise_mode=", "batch_size=",
                                     "grid=", "out=", "+official."]),
                       ("project", ["checkpoint=", "steps=", "space=", "lr=", "mse=", "noise_regularize=",
                                    "lpips_pretrained=", "seed=", "out="])):
        text = load_tool(name).HELP
        for k in keys:
            assert k in text, (name, k)
