"""MobileStyleGAN (Belousov, 2021): a StyleGAN2 mapping network and a synthesis network that predicts one-level
Haar wavelet coefficients, upsamples by the inverse transform and uses depthwise-separable modulated convs; it is
trained by distillation from a StyleGAN2 teacher (``asap.tasks.mobilestylegan``).

Public API (as StyleGAN2's): ``S.mapping(z) -> w``; ``S.synthesis(ws, noise=None, return_freq=False) -> img``
or ``(img, freqs)`` with the n+1 wavelet outputs [B,12,r,r] (r = 4 .. S/2, ``img == idwt(freqs[-1])``);
``S.w_avg``, ``S.truncate(w, psi)``, ``S.broadcast(w)``, ``S(z, truncation_psi, noise)``.

W+ has ``num_ws = 3n + 2`` slots in the official layout: conv1 <- 0, to_img1 <- 1; block i: upsample and conv1 <-
3i+1, conv2 <- 3i+2, to_img <- 3i+3 (the last slot is unused). Noise: ``2n+1`` maps in StyleGAN2 order (sides 4, 8,
8, ..., S/2, S/2), i.e. the first ``2n+1`` maps of a StyleGAN2 teacher of the same size, so a student fed its
teacher's noise list prefix sees exactly what the teacher saw. ``noise_mode='const'`` uses :func:`seeded_noise`
(the same fixed maps a teacher loaded from MobileStyleGAN files stores).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.models.stylegan2 import MappingNetwork, StyleGAN2Generator, channel_table
from asap.nn.mobile import MobileStyledConv, MobileSynthesisBlock, WaveletHead
from asap.nn.mobile_fast import FastMobileSynthesis
from asap.nn.stylegan import NOISE_MODES, ConstantInput
from asap.nn.wavelets import idwt

CONST_NOISE_SEED = 0


def noise_shapes(size: int, count: int | None = None) -> list[tuple[int, int, int, int]]:
    """StyleGAN2's noise map shapes for an image side ``size`` (sides 4, 8, 8, 16, 16, ...), first ``count``."""
    n = 2 * int(math.log2(size)) - 3
    shapes = [(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(n)]
    return shapes if count is None else shapes[:count]


def seeded_noise(shapes: Sequence[tuple[int, ...]], seed: int = CONST_NOISE_SEED) -> list[torch.Tensor]:
    """Fixed N(0,1) maps drawn in order from a CPU generator seeded by ``seed``: the 'const' noise of formats that
    store none (MobileStyleGAN's teacher and student). A prefix of the list does not depend on its length."""
    gen = torch.Generator().manual_seed(int(seed))
    return [torch.randn(*shape, generator=gen) for shape in shapes]


def student_channels(size: int, channel_multiplier: int = 2,
                     channels: Sequence[int] | Mapping[int, int] | None = None) -> list[int]:
    """Student widths at 4 .. size/2: an explicit list, or the StyleGAN2 teacher table without its last entry."""
    if channels is not None and not isinstance(channels, Mapping):
        widths = [int(c) for c in channels]
        expected = int(math.log2(size)) - 2
        if len(widths) != expected:
            raise ValueError(f"channels needs {expected} widths (resolutions 4..{size // 2}), got {len(widths)}")
        return widths
    return channel_table(size, channel_multiplier, channels)[:-1]


class MobileSynthesisNetwork(nn.Module):
    """W [B, w_dim] or W+ [B, num_ws, w_dim] -> image [B, 3, size, size] through n IDWT blocks (not clamped)."""

    def __init__(self, size: int, w_dim: int, channels: Sequence[int]) -> None:
        super().__init__()
        self.size, self.w_dim = int(size), int(w_dim)
        self.channels = [int(c) for c in channels]
        if 2 ** (len(self.channels) + 2) != self.size:
            raise ValueError(f"size {size} needs {int(math.log2(size)) - 2} widths, got {len(self.channels)}")
        bad = [c for c in self.channels[:-1] if c % 4]
        if bad:
            raise ValueError(f"every width but the last must be divisible by 4 (IDWT upsample), got {bad[0]}")
        self.input = ConstantInput(self.channels[0])
        self.conv1 = MobileStyledConv(self.channels[0], self.channels[0], w_dim, 3, depthwise=False)
        self.to_img1 = WaveletHead(self.channels[0], w_dim)
        self.layers = nn.ModuleList([MobileSynthesisBlock(self.channels[i], self.channels[i + 1], w_dim)
                                     for i in range(len(self.channels) - 1)])
        self._const_noise: list[torch.Tensor] | None = None
        # eval mode without autograd and without return_freq takes the folded channels-last path (same floats up to
        # rounding; see asap.nn.mobile_fast); False forces the reference path
        self.fast_inference = True
        self._fast = FastMobileSynthesis(self)

    @property
    def num_ws(self) -> int:
        return 3 * len(self.layers) + 2

    @property
    def num_noise(self) -> int:
        return 2 * len(self.layers) + 1

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return noise_shapes(self.size, self.num_noise)

    def const_noise(self) -> list[torch.Tensor]:
        """The fixed maps of noise_mode='const' (:func:`seeded_noise`), on this network's device."""
        device = self.input.input.device
        if self._const_noise is None or self._const_noise[0].device != device:
            self._const_noise = [n.to(device) for n in seeded_noise(self.noise_shapes())]
        return self._const_noise

    def _inputs(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None] | None, noise_mode: str):
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim == 2:
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [B, {self.w_dim}] or [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise is None:
            noise = self.const_noise() if noise_mode == "const" else [None] * self.num_noise
        elif len(noise) != self.num_noise:
            raise ValueError(f"noise must list {self.num_noise} maps, got {len(noise)}")
        if noise_mode == "none":
            noise = [n if n is not None else 0.0 for n in noise]  # strength * 0 = no noise
        return ws, list(noise)

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                noise_mode: str = "random", return_freq: bool = False):
        """``noise``: ``num_noise`` maps (broadcast over the batch); None entries follow ``noise_mode``: random
        (fresh N(0,1) per sample), const (:meth:`const_noise`) or none."""
        ws, noise = self._inputs(ws, noise, noise_mode)
        if self.fast_inference and not self.training and not return_freq and not torch.is_grad_enabled():
            return self._fast(ws, noise, noise_mode)
        x = self.conv1(self.input(ws.shape[0]), ws[:, 0], noise[0])
        freqs = [self.to_img1(x, ws[:, 1])]
        for i, block in enumerate(self.layers):
            j = 3 * i + 1
            x = block.up(x, ws[:, j])
            x = block.conv1(x, ws[:, j], noise[2 * i + 1])
            x = block.conv2(x, ws[:, j + 1], noise[2 * i + 2])
            freqs.append(block.to_img(x, ws[:, j + 2]))  # every head, as defined (the fast path skips them)
        img = idwt(freqs[-1])
        return (img, freqs) if return_freq else img


class MobileStyleGANGenerator(nn.Module):
    """StyleGAN2 mapping network + wavelet synthesis network; ``forward(z, truncation_psi, noise)`` does mapping,
    truncation towards ``w_avg`` (any batch size), optional style mixing, broadcast and synthesis."""

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8,
                 channels: Sequence[int] | Mapping[int, int] | None = None, channel_multiplier: int = 2,
                 lr_mlp: float = 0.01, z_dim: int | None = None) -> None:
        super().__init__()
        self.size, self.style_dim = int(size), int(style_dim)
        self.z_dim = int(z_dim or style_dim)
        self.mapping = MappingNetwork(self.z_dim, self.style_dim, int(n_mlp), float(lr_mlp))
        self.synthesis = MobileSynthesisNetwork(self.size, self.style_dim,
                                                student_channels(self.size, channel_multiplier, channels))
        # centre of truncation (the official file's style_mean); NaN until computed by mean_w() or loaded
        self.register_buffer("w_avg", torch.full((self.style_dim,), float("nan")))

    @property
    def num_ws(self) -> int:
        return self.synthesis.num_ws

    @property
    def w_dim(self) -> int:
        return self.style_dim

    @property
    def channels(self) -> list[int]:
        return list(self.synthesis.channels)

    # the latent-space helpers are StyleGAN2's: they only use mapping, w_avg and num_ws
    sample_w = StyleGAN2Generator.sample_w
    mean_w = StyleGAN2Generator.mean_w
    has_w_avg = StyleGAN2Generator.has_w_avg
    truncate = StyleGAN2Generator.truncate
    broadcast = StyleGAN2Generator.broadcast

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise: Sequence[torch.Tensor] | None = None,
                noise_mode: str = "random", z2: torch.Tensor | None = None, inject_index: int | None = None,
                return_latents: bool = False):
        w = self.truncate(self.mapping(z), truncation_psi)
        w2 = self.truncate(self.mapping(z2), truncation_psi) if z2 is not None else None
        ws = self.broadcast(w, w2, inject_index)
        img = self.synthesis(ws, noise=noise, noise_mode=noise_mode)
        return (img, ws) if return_latents else img
