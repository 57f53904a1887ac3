"""Building blocks of FastGAN (Liu et al., ICLR 2021): spectrally normalised convolutions, GLU up-sampling blocks,
skip-layer excitation, noise injection, residual down-sampling blocks and the discriminator's small decoders.

Every convolution is spectrally normalised with ``torch.nn.utils.spectral_norm`` and has no bias, as in the paper's
code: the state dicts hold ``<conv>.weight_orig`` + the power-iteration vectors ``weight_u``/``weight_v``, and the
module trees use the official layout (``nn.Sequential`` indices), so the official files load by name. In eval mode a
normalised weight uses the stored u, v; in train mode each call first runs one power iteration (and BatchNorm uses
batch statistics).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.utils import spectral_norm


def sn_conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    """A bias-free Conv2d under spectral normalisation."""
    return spectral_norm(nn.Conv2d(in_ch, out_ch, kernel, stride, padding, bias=False))


def sn_conv_transpose(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    """A bias-free ConvTranspose2d under spectral normalisation (normalised over its output dimension)."""
    return spectral_norm(nn.ConvTranspose2d(in_ch, out_ch, kernel, stride, padding, bias=False))


class NoiseInjection(nn.Module):
    """``x + weight * noise`` with one learned scalar (0 at start); noise [B or 1, 1, H, W], fresh when None."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
        return x + self.weight * noise


class SkipLayerExcitation(nn.Module):
    """SLE: a channel gate computed from a low-resolution map (pool to 4x4, 4x4 conv, Swish, 1x1 conv, sigmoid)
    multiplied onto a high-resolution map; ``main`` keeps the official indices (convs at 1 and 3)."""

    def __init__(self, small_ch: int, big_ch: int) -> None:
        super().__init__()
        self.main = nn.Sequential(nn.AdaptiveAvgPool2d(4), sn_conv(small_ch, big_ch, 4), nn.SiLU(),
                                  sn_conv(big_ch, big_ch, 1), nn.Sigmoid())

    def forward(self, small: torch.Tensor, big: torch.Tensor) -> torch.Tensor:
        return big * self.main(small)


class InitLayer(nn.Module):
    """z [B, nz] -> 4x4 map: transposed 4x4 conv to 2C channels, BatchNorm, GLU."""

    def __init__(self, nz: int, channels: int) -> None:
        super().__init__()
        self.init = nn.Sequential(sn_conv_transpose(nz, channels * 2, 4), nn.BatchNorm2d(channels * 2), nn.GLU(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.init(z.reshape(z.shape[0], -1, 1, 1))


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv to 2*out_ch, BatchNorm, GLU (the plain up-sampling block)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), sn_conv(in_ch, out_ch * 2, 3, 1, 1),
                         nn.BatchNorm2d(out_ch * 2), nn.GLU(1))


class UpBlockComp(nn.Sequential):
    """The heavier up-sampling block: nearest x2, then twice (3x3 conv, noise injection, BatchNorm, GLU).

    Its two noise inputs come in ``forward(x, noise=(n1, n2))`` (fresh draws where None)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), sn_conv(in_ch, out_ch * 2, 3, 1, 1),
                         NoiseInjection(), nn.BatchNorm2d(out_ch * 2), nn.GLU(1),
                         sn_conv(out_ch, out_ch * 2, 3, 1, 1), NoiseInjection(), nn.BatchNorm2d(out_ch * 2),
                         nn.GLU(1))

    def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor | None] = (None, None)) -> torch.Tensor:
        x = self[1](self[0](x))
        x = self[4](self[3](self[2](x, noise[0])))
        x = self[6](self[5](x), noise[1])
        return self[8](self[7](x))


class DownBlock(nn.Module):
    """4x4 stride-2 conv, BatchNorm, LeakyReLU(0.2) (the small branch's block)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.main = nn.Sequential(sn_conv(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class DownBlockComp(nn.Module):
    """Mean of a main path (4x4 s2 conv-BN-LReLU, 3x3 conv-BN-LReLU) and a shortcut (avg-pool, 1x1 conv-BN-LReLU)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.main = nn.Sequential(sn_conv(in_ch, out_ch, 4, 2, 1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2),
                                  sn_conv(out_ch, out_ch, 3, 1, 1), nn.BatchNorm2d(out_ch), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2, 2), sn_conv(in_ch, out_ch, 1), nn.BatchNorm2d(out_ch),
                                    nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


class SimpleDecoder(nn.Module):
    """The discriminator's self-supervision decoder: feature map -> pool to 8x8 -> four up blocks -> 3x3 conv ->
    tanh, a 128x128 image. ``channels`` are the widths at 16, 32, 64 and 128 px."""

    def __init__(self, in_ch: int, channels: Sequence[int], nc: int = 3) -> None:
        super().__init__()
        c16, c32, c64, c128 = (int(c) for c in channels)
        self.main = nn.Sequential(nn.AdaptiveAvgPool2d(8), up_block(in_ch, c16), up_block(c16, c32),
                                  up_block(c32, c64), up_block(c64, c128), sn_conv(c128, nc, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)
