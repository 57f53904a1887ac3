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
import torch.nn.functional as F
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


def module_weight(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The weight ``conv`` would use on ``x``: runs its forward pre-hooks (spectral norm's power iteration in
    train mode, exactly as calling it would) without running the convolution."""
    for hook in conv._forward_pre_hooks.values():
        hook(conv, (x,))
    return conv.weight


class _Interleave(torch.autograd.Function):
    """[B, 4, O, H+1, W+1] phase maps -> [B, O, 2H, 2W]: out[.., 2i+a, 2j+b] = y[:, 2a+b, .., i+a, j+b]."""

    @staticmethod
    def forward(ctx, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        b, _, o, h1, w1 = y.shape
        h, w = h1 - 1, w1 - 1
        out = y.new_empty(b, o, h, 2, w, 2)
        for a in range(2):
            for c in range(2):
                out[:, :, :, a, :, c] = y[:, 2 * a + c, :, a:a + h, c:c + w]
        ctx.shape = y.shape
        return out.view(b, o, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        b, _, o, h1, w1 = ctx.shape
        h, w = h1 - 1, w1 - 1
        g = grad.reshape(b, o, h, 2, w, 2)
        gy = grad.new_empty(ctx.shape)
        for a in range(2):
            for c in range(2):
                p = gy[:, 2 * a + c]
                p[:, :, a:a + h, c:c + w] = g[:, :, :, a, :, c]
                p[:, :, h * (1 - a)].zero_()  # the row and column this phase never reads: zero, not the whole map
                p[:, :, :, w * (1 - c)].zero_()
        return gy


def _phase_taps(w: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis, the 2-tap kernels that a 3-tap kernel becomes on a nearest-x2 input: even outputs read
    (i-1, i) with taps (w0, w1+w2), odd outputs read (i, i+1) with taps (w0+w1, w2)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``conv2d(nearest_x2(x), weight, padding=1)`` without building the upsampled map.

    Each of the four output phases (row and column parity) is a 2x2 convolution of ``x`` whose taps are sums of
    the 3x3 taps, so one 2x2 convolution with 4x the output channels computes all of them: 16 instead of 36
    multiply-adds per input pixel and output channel, in the forward pass and both backward passes (about 1.7-2x
    faster on CPU; equal to the direct form up to float rounding of the summed taps)."""
    o = weight.shape[0]
    rows = _phase_taps(weight, 2)  # [O, C, 2, 3] each
    taps = [t for r in rows for t in _phase_taps(r, 3)]  # phases (0,0), (0,1), (1,0), (1,1): [O, C, 2, 2]
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.cat(taps))  # [B, 4O, H+1, W+1]
    return _Interleave.apply(y.view(y.shape[0], 4, o, y.shape[2], y.shape[3]))


def up_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """Nearest x2, 3x3 conv to 2*out_ch, BatchNorm, GLU (the plain up-sampling block)."""
    return UpBlock(nn.Upsample(scale_factor=2, mode="nearest"), sn_conv(in_ch, out_ch * 2, 3, 1, 1),
                   nn.BatchNorm2d(out_ch * 2), nn.GLU(1))


class UpBlock(nn.Sequential):
    """The official up block's layers; nearest x2 and the 3x3 conv run fused (``upsample_conv3x3``) when
    ``fused`` (default), else as written (always when tracing: ONNX export keeps the plain graph)."""

    fused = True

    def upsample_conv(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fused or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self[1](self[0](x))
        return upsample_conv3x3(x, module_weight(self[1], x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.upsample_conv(x)
        for m in list(self)[2:]:
            x = m(x)
        return x


class FusedUpsampling:
    """Mixin for networks built from UpBlocks: ``fast_inference`` (the name the benchmark toggles to count the
    architecture's MACs) switches all of them between the fused form (default; training too) and the plain one."""

    @property
    def fast_inference(self) -> bool:
        return all(m.fused for m in self.modules() if isinstance(m, UpBlock))  # type: ignore[attr-defined]

    @fast_inference.setter
    def fast_inference(self, on: bool) -> None:
        for m in self.modules():  # type: ignore[attr-defined]
            if isinstance(m, UpBlock):
                m.fused = bool(on)


class UpBlockComp(UpBlock):
    """The heavier up-sampling block: nearest x2, then twice (3x3 conv, noise injection, BatchNorm, GLU).

    Its two noise inputs come in ``forward(x, noise=(n1, n2))`` (fresh draws where None)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Upsample(scale_factor=2, mode="nearest"), sn_conv(in_ch, out_ch * 2, 3, 1, 1),
                         NoiseInjection(), nn.BatchNorm2d(out_ch * 2), nn.GLU(1),
                         sn_conv(out_ch, out_ch * 2, 3, 1, 1), NoiseInjection(), nn.BatchNorm2d(out_ch * 2),
                         nn.GLU(1))

    def forward(self, x: torch.Tensor, noise: Sequence[torch.Tensor | None] = (None, None)) -> torch.Tensor:
        x = self.upsample_conv(x)
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
