"""Fourier positional encodings for pixelwise networks (ASAPNet's "cosine" coordinates)."""
from __future__ import annotations

import math

import torch


def cosine_frequencies(period: int) -> list[int]:
    """Periods S, S/2, ..., 2 used by ASAPNet's encoding for a total downsampling S (a power of two)."""
    if period < 1 or period & (period - 1):
        raise ValueError(f"the positional-encoding period must be a power of two, got {period}")
    out, f = [], period
    while f > 1:
        out.append(f)
        f //= 2
    return out


def cosine_encoding_channels(period: int) -> int:
    """Number of channels of :func:`cosine_encoding`: 4 per period (cos x, sin x, cos y, sin y)."""
    return 4 * len(cosine_frequencies(period))


def cosine_encoding(height: int, width: int, period: int, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[1, 4*log2(period), H, W] encoding: for f = period, period/2, ..., 2 the channels
    cos(2π(x mod f)/f), sin(2π(x mod f)/f), cos(2π(y mod f)/f), sin(2π(y mod f)/f).

    Pixels of one S×S tile get distinct codes, so the shared per-tile MLP can still vary inside the tile.
    """
    x = torch.arange(width, dtype=torch.float32, device=device)
    y = torch.arange(height, dtype=torch.float32, device=device)
    chans = []
    for f in cosine_frequencies(period):
        ax = 2 * math.pi * torch.remainder(x, f) / f
        ay = 2 * math.pi * torch.remainder(y, f) / f
        for v, horizontal in ((torch.cos(ax), True), (torch.sin(ax), True), (torch.cos(ay), False), (torch.sin(ay), False)):
            chans.append(v.view(1, width).expand(height, width) if horizontal else v.view(height, 1).expand(height, width))
    return torch.stack(chans, 0).unsqueeze(0).to(dtype)
