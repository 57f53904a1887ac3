"""Plain convolutional building blocks with the normalisations of the SPADE family (norm_G / norm_D strings)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.winograd import conv3x3_winograd, winograd_filter
from asap.utils.cache import derived, tensor_key

NORMS = ("none", "instance", "instanceaffine", "batch", "sync_batch")


def parse_norm(norm: str) -> tuple[bool, str]:
    """Split an official norm string such as 'spectralinstance' into (spectral, sub-norm)."""
    spectral = norm.startswith("spectral")
    sub = norm[len("spectral"):] if spectral else norm
    sub = sub or "none"
    if sub not in NORMS:
        raise ValueError(f"unknown normalisation '{norm}' (known: [spectral]{'|'.join(NORMS)})")
    return spectral, sub


def make_norm(sub: str, channels: int) -> nn.Module | None:
    """The normalisation layer that follows a conv (None for 'none')."""
    if sub == "none":
        return None
    if sub in ("batch", "sync_batch"):
        return nn.BatchNorm2d(channels, affine=True)
    return nn.InstanceNorm2d(channels, affine=(sub == "instanceaffine"))


class ConvNormAct(nn.Module):
    """[pad] -> conv (spectral-normed if asked; bias only without norm) -> [norm] -> [activation]."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, norm: str = "none",
                 pad_mode: str = "zeros", activation: nn.Module | None = None) -> None:
        super().__init__()
        spectral, sub = parse_norm(norm)
        pad = kernel_size // 2
        self.pad = None
        if pad and pad_mode == "reflect":
            self.pad = nn.ReflectionPad2d(pad)
        elif pad and pad_mode == "replicate":
            self.pad = nn.ReplicationPad2d(pad)
        elif pad_mode not in ("zeros", "reflect", "replicate"):
            raise ValueError(f"unknown pad_mode '{pad_mode}' (zeros|reflect|replicate)")
        conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=0 if self.pad is not None else pad,
                         bias=(sub == "none"))
        self.conv = nn.utils.spectral_norm(conv) if spectral else conv
        self.norm = make_norm(sub, out_ch)
        self.act = activation

    def winograd_eligible(self) -> bool:
        """A plain 3x3 stride-1 zero-padded conv (not spectral-normed: its weight changes every call)."""
        c = self.conv
        return (isinstance(c, nn.Conv2d) and not hasattr(c, "weight_orig") and c.kernel_size == (3, 3)
                and c.stride == (1, 1) and c.dilation == (1, 1) and c.groups == 1 and c.padding == (1, 1)
                and c.padding_mode == "zeros" and self.pad is None)

    def winograd_filter(self) -> torch.Tensor:
        """The conv's Winograd-transformed filter, recomputed only when the weight changes (new tensor, device,
        dtype or an in-place update such as an optimiser step or load_state_dict)."""
        w = self.conv.weight
        return derived(self, "_winograd", tensor_key(w), lambda: winograd_filter(w))

    def forward_inference(self, x: torch.Tensor, winograd: bool = False) -> torch.Tensor:
        """Forward without autograd: the activation in place and, with ``winograd``, the conv as Winograd
        F(2x2,3x3) (same result to rounding; see asap.nn.winograd)."""
        x = conv3x3_winograd(x, self.winograd_filter(), self.conv.bias) if winograd else self._conv(x)
        return self._norm_act(x, inplace=True)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x) if self.pad is not None else x)

    def _norm_act(self, x: torch.Tensor, inplace: bool) -> torch.Tensor:
        if self.norm is not None:
            x = self.norm(x)
        if inplace and isinstance(self.act, nn.ReLU):
            return F.relu_(x)
        if inplace and isinstance(self.act, nn.LeakyReLU):
            return F.leaky_relu_(x, self.act.negative_slope)
        return self.act(x) if self.act is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._norm_act(self._conv(x), inplace=False)


class TentDownsample(nn.Module):
    """Separable tent ("bilinear") low-pass + stride-s subsampling, per channel, with reflection padding s/2.

    Kernel [1,3,...,2s-1,2s-1,...,3,1]/sum, horizontal pass with stride s, then vertical (the official
    MySeparableBilinearDownsample). Computed as 2s strided multiply-adds per axis, which gives the same floats as
    the depthwise convolution at a fraction of its time, and the vertical padding is applied after the horizontal
    pass (reflection commutes with filtering along the other axis), on a tensor s times narrower.
    """

    BAND_VALUES = 1 << 22  # inference on maps larger than this filters horizontally in bands of about this size

    def __init__(self, factor: int, channels: int) -> None:
        super().__init__()
        self.factor = int(factor)
        self.channels = channels
        ramp = np.arange(1, 2 * self.factor + 1, 2)
        k = np.concatenate([ramp, ramp[::-1]])
        self.taps = [float(v) for v in (k / k.sum()).astype(np.float32)]  # float32 taps, also on the meta device

    def _along(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        s, p = self.factor, self.factor // 2
        pad = (p, p, 0, 0) if dim == 3 else (0, 0, p, p)
        x = F.pad(x, pad, mode="reflect")
        n = (x.shape[dim] - 2 * s) // s + 1  # the strided convolution's output length
        out = None
        for t, k in enumerate(self.taps):
            tap = x.narrow(dim, t, s * (n - 1) + 1)
            tap = tap[..., ::s] if dim == 3 else tap[..., ::s, :]
            out = tap * k if out is None else out.add_(tap, alpha=k)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            raise ValueError(f"TentDownsample expects {self.channels} channels, got {x.shape[1]}")
        if torch.is_grad_enabled() or x.numel() < self.BAND_VALUES:
            return self._along(self._along(x, 3), 2)
        # inference on a large map: the horizontal pass in bands of rows, so that the padded copy never exists
        # for the whole input (the rows are independent in this pass)
        band = max(1, self.BAND_VALUES * x.shape[2] // x.numel())
        wide = torch.cat([self._along(x[:, :, r:r + band], 3) for r in range(0, x.shape[2], band)], 2)
        return self._along(wide, 2)
