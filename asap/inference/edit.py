"""Anycost-style projection and latent editing with fast previews (the engine of tools/project.py family=anycost
and tools/edit.py).

Projection (Anycost's tools/project.py): only w+ is optimised, from the mean w, with the stored noise maps; loss =
LPIPS (images resized into [32, 256] px) + mse · MSE at the output resolution; L-BFGS (strong-Wolfe line search,
lr 1) or Adam (lr 1e-3). The consistency-aware mode runs every step (every L-BFGS closure) through a random
sub-generator: a uniform ratio and one of the three top resolutions, against the target reduced to it.

Editing: ``w+[:, :k] += Σ a·d`` for directions ``d`` in w space from a boundary file (the official dict
``'{idx:02d}_{Attr}' -> (1, w_dim)``) or from SeFa (the closed-form factorisation of the style affine maps), a
preview rendered by a sub-generator and the final image by the full generator, each timed.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.models.anycost import RATIOS, AnycostGenerator

OPTIMIZERS = ("lbfgs", "adam")
LPIPS_MAX = 256
LPIPS_MIN = 32


def _reduce(img: torch.Tensor, side: int) -> torch.Tensor:
    if img.shape[-1] == side:
        return img
    return F.interpolate(img, size=(side, side), mode="bilinear", align_corners=True)


def check_anycost(G: nn.Module, source: str | Path = "checkpoint") -> AnycostGenerator:
    if not isinstance(G, AnycostGenerator):
        raise AsapError(f"{source}: holds a {type(G).__name__}, not an Anycost generator (load it with "
                        f"family=anycost)")
    return G


# -- projection -------------------------------------------------------------------------------------------------
def project_wplus(G: AnycostGenerator, target: torch.Tensor, lpips: nn.Module, steps: int = 100,
                  optimizer: str = "lbfgs", lr: float | None = None, mse: float = 1.0, consistency: bool = False,
                  seed: int = 0, w_avg_samples: int = 10000, progress: bool | str = False) -> dict[str, Any]:
    """Project ``target`` [1, 3, size, size] in [-1, 1] into w+ (stored noise). Returns ``ws`` [1, num_ws, w_dim],
    ``noise`` (the stored maps), ``image``, ``lpips``/``mse`` at the end and ``initial_*`` at the start (full G),
    and ``loss_history``. ``consistency`` = the consistency-aware mode (random sub-generator each step)."""
    G = check_anycost(G, type(G).__name__)
    if optimizer not in OPTIMIZERS:
        raise AsapError(f"optimizer={optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
    steps = int(steps)
    if steps < 1:
        raise AsapError(f"steps must be >= 1, got {steps}")
    if target.ndim != 4 or tuple(target.shape[:2]) != (1, 3) or tuple(target.shape[2:]) != (G.size, G.size):
        raise AsapError(f"target must be [1, 3, {G.size}, {G.size}], got {list(target.shape)}")
    device = G.w_avg.device
    target = target.to(device)
    lpips = lpips.to(device).eval()
    lr = float(lr) if lr is not None else (1.0 if optimizer == "lbfgs" else 1e-3)
    rng = random.Random(int(seed))
    resolutions = [r for r in (G.size // 4, G.size // 2, G.size) if r >= 4]
    was_training = G.training
    requires = [p.requires_grad for p in G.parameters()]
    saved = (G.synthesis.sub_channels, G.synthesis.sub_resolution)
    G.eval().requires_grad_(False)
    try:
        if not G.has_w_avg():
            G.mean_w(int(w_avg_samples), seed)
        ws = G.w_avg.detach().clone()[None, None].repeat(1, G.num_ws, 1).requires_grad_(True)

        def loss_of(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            ref = _reduce(target, img.shape[-1])
            m = F.mse_loss(img, ref)
            side = min(max(img.shape[-1], LPIPS_MIN), LPIPS_MAX)  # tiny exits enlarged for the backbone
            p = lpips(_reduce(img.clamp(-1, 1), side), _reduce(ref, side)).sum()
            return p, m

        def render(sub: dict | None = None) -> torch.Tensor:
            if sub:
                with G.sub_generator(**sub):
                    return G.synthesis(ws, noise_mode="const")
            G.reset_sub_generator()
            return G.synthesis(ws, noise_mode="const")

        def random_sub() -> dict | None:
            if not consistency:
                return None
            return {"ratio": rng.choice(RATIOS), "resolution": rng.choice(resolutions)}

        with torch.no_grad():
            p0, m0 = loss_of(render())
        opt = (torch.optim.LBFGS([ws], lr=lr, max_iter=1, line_search_fn="strong_wolfe") if optimizer == "lbfgs"
               else torch.optim.Adam([ws], lr=lr))
        history: list[float] = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "project", leave=False)
        for _ in range(steps):
            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                p, m = loss_of(render(random_sub()))
                loss = p + mse * m
                loss.backward()
                return loss
            loss = opt.step(closure)
            if not torch.isfinite(loss):
                raise AsapError("projection diverged (non-finite loss); try optimizer=adam or a smaller lr")
            history.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        with torch.no_grad():
            final = render()
            p1, m1 = loss_of(final)
    finally:
        for p, r in zip(G.parameters(), requires):
            p.requires_grad_(r)
        G.train(was_training)
        G.synthesis.sub_channels, G.synthesis.sub_resolution = saved
    return {"space": "w+", "ws": ws.detach().cpu(), "image": final.detach().cpu(),
            "noise": [c.noise.noise_const.detach().cpu().clone() for c in G.synthesis.styled_convs()],
            "lpips": float(p1), "mse": float(m1), "initial_lpips": float(p0), "initial_mse": float(m0),
            "loss_history": history, "consistency": bool(consistency), "optimizer": optimizer}


# -- directions -------------------------------------------------------------------------------------------------
def load_directions(path: str | Path, w_dim: int) -> dict[str, torch.Tensor]:
    """A direction file -> {name: unit-free [w_dim] direction}: the official boundary dict
    (``'{idx:02d}_{Attr}' -> (1, w_dim)``), or a [n, w_dim] tensor (names ``0``, ``1``, ...)."""
    from asap.pretrained.common import read_file
    obj = read_file(path)
    if isinstance(obj, torch.Tensor):
        obj = {str(i): row for i, row in enumerate(obj.reshape(-1, obj.shape[-1]))}
    if not isinstance(obj, Mapping) or not obj:
        raise AsapError(f"{path}: not a direction file (expected a dict name -> (1, {w_dim}) tensor)")
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor) or v.numel() != w_dim:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise AsapError(f"{path}: direction '{k}' has shape {shape}, expected (1, {w_dim})")
        out[str(k)] = v.detach().float().reshape(w_dim)
    return out


def style_layers(G: nn.Module) -> list[tuple[int, nn.Module]]:
    """(w+ index, style affine map) of every modulated layer, in synthesis order."""
    syn = G.synthesis
    out = [(0, syn.conv1.conv.modulation), (1, syn.torgb1.conv.modulation)]
    for k, b in enumerate(syn.blocks):
        out += [(2 * k + 1, b.conv0.conv.modulation), (2 * k + 2, b.conv1.conv.modulation),
                (2 * k + 3, b.torgb.conv.modulation)]
    return out


@torch.no_grad()
def sefa_directions(G: nn.Module, num: int = 5, layers: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """SeFa (Shen & Zhou 2021): the top right singular vectors of the stacked style affine weights (rows
    normalised) of the w+ ``layers`` (default all) are the directions that change the styles most."""
    chosen = [m for i, m in style_layers(G) if layers is None or i in set(layers)]
    if not chosen:
        raise AsapError(f"sefa: no style layer among {list(layers or [])}")
    weight = torch.cat([m.weight.detach().float() for m in chosen])  # [sum channels, w_dim]
    weight = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    _, _, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    num = max(1, min(int(num), vh.shape[0]))
    return {f"sefa_{i}": vh[i].float().cpu() for i in range(num)}


def default_edit_layers(num_ws: int) -> int:
    """Layers an edit touches by default: the first two thirds (the official 12 of 18)."""
    return max(1, int(round(num_ws * 2 / 3)))


def parse_strengths(spec: str | Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """``'name:a,name:b'`` (or a dict) -> {direction name: strength}; a name may be a direction's position."""
    items = spec.items() if isinstance(spec, Mapping) else \
        [p.rsplit(":", 1) if ":" in p else (p, None) for p in str(spec).split(",") if p.strip()]
    out: dict[str, float] = {}
    for name, value in items:
        name = str(name).strip()
        if name not in names and name.isdigit() and int(name) < len(names):
            name = list(names)[int(name)]
        if name not in names:
            raise AsapError(f"edit: unknown direction '{name}' (known: {', '.join(list(names)[:12])}"
                            + (", ..." if len(names) > 12 else "") + ")")
        try:
            out[name] = float(value)
        except (TypeError, ValueError):
            raise AsapError(f"edit: '{name}' needs a strength, as {name}:0.5") from None
    if not out:
        raise AsapError("edit: no direction given (edit=NAME:STRENGTH[,NAME:STRENGTH...])")
    return out


def apply_directions(ws: torch.Tensor, directions: Mapping[str, torch.Tensor], strengths: Mapping[str, float],
                     layers: int | None = None) -> torch.Tensor:
    """``w+[:, :layers] += Σ a·d`` (a new tensor); ``layers`` defaults to :func:`default_edit_layers`."""
    k = default_edit_layers(ws.shape[1]) if layers is None else int(layers)
    if not 1 <= k <= ws.shape[1]:
        raise AsapError(f"layers must be in [1, {ws.shape[1]}], got {layers}")
    delta = sum(float(a) * directions[n].to(ws) for n, a in strengths.items())
    out = ws.clone()
    out[:, :k] += delta
    return out


@torch.no_grad()
def render_timed(G: AnycostGenerator, ws: torch.Tensor, noise: Sequence[torch.Tensor] | None = None,
                 ratio: float | None = None, channels: Sequence[int] | None = None,
                 resolution: int | None = None, clock: Callable[[], float] = time.perf_counter
                 ) -> tuple[torch.Tensor, float]:
    """One image of the chosen sub-generator and the seconds it took."""
    dev = G.w_avg.device
    noise = [n.to(dev) for n in noise] if noise is not None else None
    with G.sub_generator(ratio=ratio, channels=channels, resolution=resolution):
        t = clock()
        img = G.synthesis(ws.to(dev), noise=noise, noise_mode="const")
        if img.is_cuda:
            torch.cuda.synchronize(img.device)
        return img.cpu(), clock() - t


def edit(G: AnycostGenerator, ws: torch.Tensor, directions: Mapping[str, torch.Tensor],
         strengths: Mapping[str, float], layers: int | None = None, noise: Sequence[torch.Tensor] | None = None,
         preview: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Edit ``ws`` and render a preview with the sub-generator ``preview`` (ratio/channels/resolution) and the
    final image with the full generator: {"ws", "preview", "preview_s", "final", "final_s"}."""
    G = check_anycost(G, type(G).__name__)
    edited = apply_directions(ws, directions, strengths, layers)
    prev, prev_s = render_timed(G, edited, noise, **dict(preview or {"ratio": 0.25, "resolution": G.size // 4}))
    final, final_s = render_timed(G, edited, noise)
    return {"ws": edited.cpu(), "preview": prev, "preview_s": prev_s, "final": final, "final_s": final_s}


__all__ = ["project_wplus", "load_directions", "sefa_directions", "apply_directions", "parse_strengths", "edit",
           "render_timed", "style_layers", "default_edit_layers", "check_anycost", "OPTIMIZERS"]
