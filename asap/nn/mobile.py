"""MobileStyleGAN building blocks (Belousov 2021): modulated convs whose demodulation uses a stored random
``style_inv`` buffer instead of the live style, the depthwise-separable variant, the style-modulated inverse-Haar
upsampler and the 12-channel wavelet prediction head.

Because demodulation does not depend on the style, it is a per-output-channel constant: :meth:`demodulation` is
cached at inference and folded into the pointwise weights (``fold``) so the fast path runs one depthwise and one
pointwise conv per layer. Parameter names follow the official checkpoints.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.stylegan import NoiseInjection
from asap.nn.wavelets import idwt


def _style_linear(style_dim: int, channels: int) -> nn.Linear:
    """A plain linear style -> per-channel scale with bias 1 (no equalised-lr scaling, as in the official code)."""
    lin = nn.Linear(style_dim, channels)
    nn.init.ones_(lin.bias)
    return lin


class StyleInvModulatedConv2d(nn.Module):
    """Modulated k x k conv; demodulation from the ``style_inv`` buffer (N(0,1) at construction, never trained).

    ``depthwise=True`` is the depthwise-separable form: depthwise ``weight_dw`` [Cin,1,k,k] then pointwise
    ``weight_permute`` [Cout,Cin,1,1] (equal to a dense conv with kernel pw[o,i] * dw[i]); otherwise a dense
    ``weight`` [Cout,Cin,k,k]. ``demodulate=False`` is the prediction-head form (no ``style_inv``).
    """

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3, demodulate: bool = True,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.depthwise, self.demodulate = depthwise, demodulate
        if depthwise:
            self.weight_dw = nn.Parameter(torch.randn(in_ch, 1, kernel_size, kernel_size))
            self.weight_permute = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))
        else:
            self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = _style_linear(style_dim, in_ch)
        if demodulate:
            self.register_buffer("style_inv", torch.randn(1, 1, in_ch, 1, 1))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2

    def dense_weight(self) -> torch.Tensor:
        """The equivalent dense kernel [Cout, Cin, k, k]."""
        if self.depthwise:
            return self.weight_dw.transpose(0, 1) * self.weight_permute
        return self.weight

    def demodulation(self) -> torch.Tensor:
        """Per-output-channel factor [Cout] = 1/sqrt(sum (scale * style_inv * W)^2 + 1e-8)."""
        w = self.scale * self.style_inv[0] * self.dense_weight()
        return torch.rsqrt(w.pow(2).sum([1, 2, 3]) + 1e-8)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = x * (self.scale * self.modulation(style))[:, :, None, None]
        if self.depthwise:
            x = F.conv2d(x, self.weight_dw, padding=self.padding, groups=self.in_ch)
            x = F.conv2d(x, self.weight_permute)
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        if self.demodulate:
            x = x * self.demodulation()[None, :, None, None]
        return x

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, depthwise={self.depthwise}, "
                f"demodulate={self.demodulate}")


class MobileStyledConv(nn.Module):
    """Modulated conv -> + strength * noise -> + bias -> LeakyReLU(0.2) (no sqrt(2) gain, unlike StyleGAN2)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3, depthwise: bool = True) -> None:
        super().__init__()
        self.conv = StyleInvModulatedConv2d(in_ch, out_ch, style_dim, kernel_size, depthwise=depthwise)
        self.noise = NoiseInjection()
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return F.leaky_relu(self.noise(self.conv(x, style), noise) + self.bias, 0.2)


class WaveletHead(nn.Module):
    """Prediction head: 1x1 modulated conv (no demodulation) + bias to 12 Haar channels (RGB low + 3x3 high)."""

    def __init__(self, in_ch: int, style_dim: int, out_ch: int = 12) -> None:
        super().__init__()
        self.conv = StyleInvModulatedConv2d(in_ch, out_ch, style_dim, 1, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.conv(x, style) + self.bias


class IDWTUpsample(nn.Module):
    """Per-channel style scale (plain linear, bias 1), then one inverse Haar step: C channels -> C/4 at 2x."""

    def __init__(self, in_ch: int, style_dim: int) -> None:
        super().__init__()
        if in_ch % 4:
            raise ValueError(f"an IDWT upsample needs a width divisible by 4, got {in_ch}")
        self.in_ch = in_ch
        self.modulation = _style_linear(style_dim, in_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return idwt(x * self.modulation(style)[:, :, None, None])


class MobileSynthesisBlock(nn.Module):
    """IDWT upsample, two depthwise-separable styled convs, wavelet head (style slots: up+conv1, conv2, head)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.up = IDWTUpsample(in_ch, style_dim)
        self.conv1 = MobileStyledConv(in_ch // 4, out_ch, style_dim, kernel_size, depthwise=True)
        self.conv2 = MobileStyledConv(out_ch, out_ch, style_dim, kernel_size, depthwise=True)
        self.to_img = WaveletHead(out_ch, style_dim)
