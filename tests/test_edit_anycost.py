"""Anycost projection (Adam / L-BFGS, consistency-aware) and editing with boundary-dict and SeFa directions, through
the API and end to end through tools/project.py family=anycost and tools/edit.py."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from asap.errors import AsapError
from asap.inference.edit import (apply_directions, default_edit_layers, edit, load_directions, parse_strengths,
                                 project_wplus, sefa_directions)
from asap.metrics.lpips import build_lpips
from asap.models.anycost import AnycostGenerator
from asap.pretrained.anycost import to_official
from tests.conftest import REPO


def tiny_generator(seed: int = 0) -> AnycostGenerator:
    torch.manual_seed(seed)
    G = AnycostGenerator(32, 16, 2, channel_multiplier=0.0625, channel_max=16).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return G


@pytest.fixture(scope="module")
def lpips():
    return build_lpips("vgg", pretrained=False)


@pytest.mark.parametrize("optimizer,consistency", [("adam", False), ("lbfgs", True)])
def test_projection_lowers_the_loss(lpips, optimizer, consistency):
    G = tiny_generator()
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim))
    lr = 0.05 if optimizer == "adam" else None
    res = project_wplus(G, target, lpips, steps=3, optimizer=optimizer, lr=lr, consistency=consistency,
                        w_avg_samples=256)
    assert res["ws"].shape == (1, G.num_ws, G.w_dim) and res["image"].shape == (1, 3, 32, 32)
    assert res["mse"] < res["initial_mse"]
    assert len(res["loss_history"]) == 3 and all(np.isfinite(res["loss_history"]))
    assert G.sub_channels == G.full_channels and G.sub_resolution == 32  # the selection is left as it was
    with pytest.raises(AsapError, match="optimizer"):
        project_wplus(G, target, lpips, steps=1, optimizer="sgd")


def test_directions_sefa_and_edit(tmp_path):
    G = tiny_generator(1)
    ws = G.broadcast(G.mapping(torch.randn(1, G.z_dim))).detach()
    d = torch.randn(1, G.w_dim)
    torch.save({"00_Smiling": d, "01_Young": torch.randn(1, G.w_dim)}, tmp_path / "boundary.pt")
    dirs = load_directions(tmp_path / "boundary.pt", G.w_dim)
    strengths = parse_strengths("00_Smiling:0.5,1:-0.25", list(dirs))
    assert strengths == {"00_Smiling": 0.5, "01_Young": -0.25}
    k = default_edit_layers(G.num_ws)
    assert default_edit_layers(18) == 12
    edited = apply_directions(ws, dirs, strengths)
    expect = ws.clone()
    expect[:, :k] += 0.5 * d.reshape(-1) - 0.25 * dirs["01_Young"]
    torch.testing.assert_close(edited, expect)
    assert torch.equal(edited[:, k:], ws[:, k:])
    sefa = sefa_directions(G, 3)
    v = torch.stack(list(sefa.values()))
    torch.testing.assert_close(v @ v.T, torch.eye(3), atol=1e-5, rtol=0)  # orthonormal
    out = edit(G, ws, sefa, {"sefa_0": 3.0}, preview={"ratio": 0.25, "resolution": 8})
    assert out["preview"].shape == (1, 3, 8, 8) and out["final"].shape == (1, 3, 32, 32)
    assert out["preview_s"] > 0 and out["final_s"] > 0
    with torch.no_grad():
        assert not torch.allclose(out["final"], G.synthesis(ws, noise_mode="const"))
    with pytest.raises(AsapError, match="unknown direction"):
        parse_strengths("Smile:1", list(dirs))
    torch.save({"bad": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(AsapError, match="expected"):
        load_directions(tmp_path / "bad.pt", G.w_dim)


def test_project_then_edit_end_to_end(tmp_path):
    G = tiny_generator(2)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({**to_official(generator=G, g=G), "epoch": 1, "fid": 0.0, "best_fid": 0.0}, ckpt)
    with torch.no_grad():
        img = G(torch.randn(1, G.z_dim))
    arr = ((img[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    Image.fromarray(arr).save(tmp_path / "face.png")
    torch.save({"00_Smiling": torch.randn(1, G.w_dim)}, tmp_path / "boundary.pt")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "project.py"), str(tmp_path / "face.png"),
                        f"checkpoint={ckpt}", "family=anycost", "anycost.steps=2", "anycost.consistency=true",
                        "lpips_pretrained=false", "w_avg_samples=256", "progress=false", f"out={out}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "consistency-aware" in r.stdout
    latent = torch.load(out / "face_latent.pt", weights_only=True)
    assert latent["space"] == "w+" and latent["ws"].shape == (1, G.num_ws, G.w_dim)
    assert (out / "face_projected.png").is_file()
    r = subprocess.run([sys.executable, str(REPO / "tools" / "edit.py"), f"checkpoint={ckpt}",
                        f"latent={out / 'face_latent.pt'}", f"directions={tmp_path / 'boundary.pt'}",
                        "edit=00_Smiling:0.6", "preview_ratio=0.5", "preview_resolution=16", f"out={out}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "preview x0.5 at 16 px" in r.stdout and "final 32 px" in r.stdout
    assert Image.open(out / "face_preview.png").size == (16, 16)
    assert Image.open(out / "face_edited.png").size == (32, 32)
    rec = torch.load(out / "face_edited_latent.pt", weights_only=True)
    k = default_edit_layers(G.num_ws)
    torch.testing.assert_close(rec["ws"][:, :k] - latent["ws"][:, :k],
                               0.6 * torch.load(tmp_path / "boundary.pt")["00_Smiling"].expand(1, k, -1))
    r = subprocess.run([sys.executable, str(REPO / "tools" / "edit.py"), f"checkpoint={ckpt}",
                        f"latent={out / 'face_latent.pt'}", "directions=sefa", "edit=Smile:1", f"out={out}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "unknown direction 'Smile'" in r.stderr and "Traceback" not in r.stderr
