#!/usr/bin/env python
"""Edit a projected latent of an Anycost generator: a fast preview with a sub-generator, then the full image."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/edit.py latent=X_latent.pt checkpoint=PATH edit=NAME:A[,NAME:A ...] [directions=FILE|sefa] ...

Applies w+[:, :layers] += sum(a * d) to the latent written by tools/project.py, renders a preview with a
sub-generator (preview_ratio, preview_resolution) and the final image with the full generator, and writes
<stem>_preview.png, <stem>_edited.png and <stem>_edited_latent.pt (ws, noise, the edit) into out=DIR. Prints the
time of each render.

Keys (conf/edit.yaml):
  checkpoint=PATH        Anycost generator (ours, an official ckpt.pt or a model-zoo file)
  latent=PATH            <stem>_latent.pt from tools/project.py (ws [1, num_ws, w_dim], noise maps)
  directions=FILE|sefa   the official boundary dict ('{idx:02d}_{Attr}' -> (1, w_dim)) or an [n, w_dim] tensor;
                         sefa: closed-form directions of the generator (sefa_components=5, sefa_layers=null)
  edit=NAME:A,...        direction names (or positions) and strengths (the official slider range is +-0.6)
  layers=K               edit the first K w+ entries (default: two thirds, the official 12 of 18)
  preview_ratio=R        0.25 | 0.5 | 0.75 | 1.0 (default 0.25); preview_resolution=N (default size/4)
  device=auto|cpu|cuda; out=DIR (default outputs/edit)

Errors (missing files, a latent of another generator, unknown directions, bad values) print one line, exit 2.
"""


def run(cfg, positional):
    import torch
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.edit import check_anycost, edit, load_directions, parse_strengths, sefa_directions
    from asap.inference.generate import hwc, to_uint8
    from asap.pretrained.common import read_file
    from asap.utils.device import resolve_device
    from asap.utils.io import save_png, save_torch

    for key in ("checkpoint", "latent", "edit"):
        if OmegaConf.is_missing(cfg, key) or cfg[key] is None:
            raise AsapError(f"{key}=... is required (see --help)")
    if positional:
        raise AsapError(f"unexpected argument(s) {' '.join(positional)} (use key=value)")
    device = resolve_device(cfg.device)
    official = OmegaConf.to_container(cfg.official, resolve=True) or {}
    G = check_anycost(asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official), cfg.checkpoint).to(device)
    rec = read_file(cfg.latent)
    ws = rec.get("ws") if isinstance(rec, dict) else None
    if not isinstance(ws, torch.Tensor) or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise AsapError(f"{cfg.latent}: no ws of shape [N, {G.num_ws}, {G.w_dim}] (a tools/project.py latent of this "
                        f"generator?)")
    noise = rec.get("noise")
    if noise is not None and (len(noise) != G.synthesis.num_noise or
                              any(tuple(n.shape[-2:]) != s[-2:] for n, s in zip(noise, G.synthesis.noise_shapes()))):
        raise AsapError(f"{cfg.latent}: its noise maps do not fit this generator")
    if str(cfg.directions) == "sefa":
        layers = None if cfg.sefa_layers is None else [int(i) for i in cfg.sefa_layers]
        directions = sefa_directions(G, int(cfg.sefa_components), layers)
    else:
        directions = load_directions(cfg.directions, G.w_dim)
    edit_spec = OmegaConf.to_container(cfg.edit) if OmegaConf.is_config(cfg.edit) else cfg.edit
    strengths = parse_strengths(edit_spec, list(directions))
    try:
        preview = {"ratio": float(cfg.preview_ratio),
                   "resolution": int(cfg.preview_resolution) if cfg.preview_resolution is not None
                   else max(4, G.size // 4)}
        G.set_sub_generator(**preview)
        G.reset_sub_generator()
    except (TypeError, ValueError) as e:
        raise AsapError(f"preview: {e}") from e
    result = edit(G, ws[:1], directions, strengths, cfg.layers, noise, preview)
    out, stem = Path(cfg.out), Path(str(cfg.latent)).stem.replace("_latent", "")
    save_png(hwc(to_uint8(result["preview"][0])), out / f"{stem}_preview.png")
    save_png(hwc(to_uint8(result["final"][0])), out / f"{stem}_edited.png")
    save_torch({"ws": result["ws"], "noise": noise, "edit": strengths, "checkpoint": str(cfg.checkpoint),
                "latent": str(cfg.latent)}, out / f"{stem}_edited_latent.pt")
    what = ", ".join(f"{k}:{v:+g}" for k, v in strengths.items())
    ratio = result["final_s"] / max(result["preview_s"], 1e-9)
    print(f"edit {what}: preview x{preview['ratio']} at {preview['resolution']} px in "
          f"{result['preview_s'] * 1000:.1f} ms, final {G.size} px in {result['final_s'] * 1000:.1f} ms ({ratio:.1f}x)"
          f" -> {out / (stem + '_edited.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("edit", run, HELP))
