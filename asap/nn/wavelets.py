"""One-level Haar wavelet transform (pytorch_wavelets ``db1``, mode ``zero``) as reshapes and sums.

MobileStyleGAN predicts Haar coefficients and upsamples by the inverse transform. Layout of ``dwt``'s output for
an input of C channels: channels ``[0, C)`` hold the low band (about twice the 2x2 mean), channel ``C + 3c + b``
holds high band ``b`` (0: top minus bottom, 1: left minus right, 2: diagonal) of input channel ``c``. With the
1/2 scaling the transform is orthonormal, so ``idwt(dwt(x)) == x`` up to rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{what} expects a 4-D tensor [B, C, H, W], got shape {list(x.shape)}")


def dwt(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] (H, W even) -> [B, 4C, H/2, W/2]: low bands, then the three high bands of each channel."""
    _check(x, "dwt")
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"dwt needs an even height and width, got {h}x{w}")
    blocks = x.reshape(b, c, h // 2, 2, w // 2, 2)
    p, q = blocks[:, :, :, 0], blocks[:, :, :, 1]          # top and bottom rows of each 2x2 block
    ta, tb, bc, bd = p[..., 0], p[..., 1], q[..., 0], q[..., 1]
    s_top, d_top, s_bot, d_bot = ta + tb, ta - tb, bc + bd, bc - bd
    low = (s_top + s_bot) * 0.5
    high = torch.stack([(s_top - s_bot) * 0.5, (d_top + d_bot) * 0.5, (d_top - d_bot) * 0.5], 2)
    return torch.cat([low, high.reshape(b, 3 * c, h // 2, w // 2)], 1)


def idwt(y: torch.Tensor) -> torch.Tensor:
    """[B, 4C, H, W] in ``dwt``'s layout -> [B, C, 2H, 2W] (the exact inverse of ``dwt``).

    Computed as what it is, a synthesis filter bank: one stride-2 transposed conv with the four 2x2 Haar kernels
    per channel (so MAC counters see its 4 multiply-adds per output value)."""
    _check(y, "idwt")
    b, c4, h, w = y.shape
    if c4 % 4:
        raise ValueError(f"idwt needs a channel count divisible by 4, got {c4}")
    c = c4 // 4
    grouped = torch.cat([y[:, :c, None], y[:, c:].reshape(b, c, 3, h, w)], 2).reshape(b, c4, h, w)
    kernel = _SYNTHESIS.to(y.device, y.dtype).repeat(c, 1, 1, 1)        # [4C, 1, 2, 2]: (L, H0, H1, H2) per channel
    return F.conv_transpose2d(grouped, kernel, stride=2, groups=c)


def idwt_by_adds(y: torch.Tensor) -> torch.Tensor:
    """``idwt`` as reshapes and sums (same values): export graphs use it, the filter-bank form needs static shapes."""
    b, c4, h, w = y.shape
    c = c4 // 4
    low = y[:, :c]
    high = y[:, c:].reshape(b, c, 3, h, w)
    lp, lm = low + high[:, :, 0], low - high[:, :, 0]                  # L +- H0
    hp, hm = high[:, :, 1] + high[:, :, 2], high[:, :, 1] - high[:, :, 2]  # H1 +- H2
    top = torch.stack([lp + hp, lp - hp], -1)
    bottom = torch.stack([lm + hm, lm - hm], -1)
    return (torch.stack([top, bottom], 3) * 0.5).reshape(b, c, 2 * h, 2 * w)


# sub-pixel pattern (rows: top, bottom; columns: left, right) of each band in the inverse transform, times 1/2
_SYNTHESIS = 0.5 * torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [-1.0, -1.0]],
                                 [[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]]).reshape(4, 1, 2, 2)
