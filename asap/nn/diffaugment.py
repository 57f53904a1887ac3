"""DiffAugment (Zhao et al., NeurIPS 2020, "Differentiable Augmentation for Data-Efficient GAN Training"), the
policy FastGAN trains with: ``color`` (brightness, saturation, contrast), ``translation`` (up to 1/8 of the size,
zero fill) and ``cutout`` (a zeroed square of half the size). Gradients reach the input.

The random parameters are drawn by the caller, one row per sample (``draw_params``), so that a sample's
augmentation can be keyed by its place in the global batch (the same under any number of processes).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
N_PARAMS = 7  # uniforms per sample: brightness, saturation, contrast, tx, ty, cutout x, cutout y


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); unknown names are a ValueError."""
    names = [p.strip() for p in (policy.split(",") if isinstance(policy, str) else policy) if str(p).strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r} (known: {', '.join(POLICIES)})")
    return tuple(names)


def draw_params(batch: int, rand: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """[batch, 7] uniforms in [0, 1) (``rand(7)`` gives one [batch, 7] draw; default: the global torch RNG)."""
    return rand(N_PARAMS) if rand is not None else torch.rand(batch, N_PARAMS)


def _offsets(u: torch.Tensor, low: int, count: int) -> list[int]:
    """Uniform integers in [low, low + count) from uniforms u."""
    return [low + min(int(v * count), count - 1) for v in u.tolist()]


def translate(x: torch.Tensor, tx: Sequence[int], ty: Sequence[int]) -> torch.Tensor:
    """Shift sample i by (tx[i], ty[i]) pixels (rows, columns) with zero fill: out[y, x] = in[y + tx, x + ty]."""
    _, _, h, w = x.shape
    s = max(max(abs(int(t)) for t in tx), max(abs(int(t)) for t in ty), 0)
    padded = torch.nn.functional.pad(x, [s, s, s, s])
    return torch.stack([padded[i, :, s + a:s + a + h, s + b:s + b + w] for i, (a, b) in enumerate(zip(tx, ty))])


def cutout(x: torch.Tensor, cx: Sequence[int], cy: Sequence[int]) -> torch.Tensor:
    """Zero a (H/2)x(W/2) square centred at (cx[i], cy[i]) of sample i (clipped at the borders)."""
    _, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    mask = torch.ones(x.shape[0], 1, h, w, dtype=x.dtype, device=x.device)
    for i, (a, b) in enumerate(zip(cx, cy)):
        r0, c0 = max(a - ch // 2, 0), max(b - cw // 2, 0)
        mask[i, :, r0:max(a - ch // 2 + ch, 0), c0:max(b - cw // 2 + cw, 0)] = 0
    return x * mask


def diff_augment(x: torch.Tensor, policy: Sequence[str], params: torch.Tensor) -> torch.Tensor:
    """Apply ``policy`` (names from POLICIES, in order) to NCHW images with per-sample ``params`` [B, 7]."""
    if not policy:
        return x
    p = params.to(device=x.device, dtype=x.dtype)
    col = lambda i: p[:, i].view(-1, 1, 1, 1)  # noqa: E731
    _, _, h, w = x.shape
    for name in policy:
        if name == "color":
            x = x + (col(0) - 0.5)
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (col(1) * 2) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (col(2) + 0.5) + mean
        elif name == "translation":
            sx, sy = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
            x = translate(x, _offsets(params[:, 3], -sx, 2 * sx + 1), _offsets(params[:, 4], -sy, 2 * sy + 1))
        elif name == "cutout":
            ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
            x = cutout(x, _offsets(params[:, 5], 0, h + (1 - ch % 2)), _offsets(params[:, 6], 0, w + (1 - cw % 2)))
        else:
            raise ValueError(f"unknown DiffAugment policy {name!r}")
    return x.contiguous()
