"""Plain convolutional building blocks with the normalisations of the SPADE family (norm_G / norm_D strings)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            x = self.pad(x)
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return self.act(x) if self.act is not None else x


class TentDownsample(nn.Module):
    """Separable tent ("bilinear") low-pass + stride-s subsampling, depthwise, with reflection padding s/2.

    Kernel [1,3,...,2s-1,2s-1,...,3,1]/sum, horizontal pass with stride (1,s), then vertical with (s,1).
    """

    def __init__(self, factor: int, channels: int) -> None:
        super().__init__()
        self.factor = int(factor)
        self.channels = channels
        ramp = np.arange(1, 2 * self.factor + 1, 2)
        k = np.concatenate([ramp, ramp[::-1]])
        kernel = torch.tensor(k / k.sum(), dtype=torch.float32)
        self.register_buffer("kernel_h", kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("kernel_v", kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.factor // 2
        x = F.pad(x, (p, p, p, p), mode="reflect")
        x = F.conv2d(x, self.kernel_h.to(x.dtype), stride=(1, self.factor), groups=self.channels)
        return F.conv2d(x, self.kernel_v.to(x.dtype), stride=(self.factor, 1), groups=self.channels)
