"""StyleGAN2 (Karras et al., CVPR 2020): mapping network, synthesis network with ToRGB skips, residual
discriminator with minibatch stddev. Pure PyTorch; widths per resolution from a channel multiplier or an explicit
table, so any rosinality checkpoint loads by its shapes (``asap.pretrained.stylegan2``).

Public API: ``G.mapping(z) -> w``, ``G.synthesis(ws, noise) -> img``, ``G.w_avg``, ``G.mean_w(n)``,
``G(z, truncation_psi, noise)``, ``D(img) -> logits [B, 1]``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from asap.nn.stylegan import (NOISE_MODES, ConstantInput, ConvLayer, EqualLinear, FastInference, PixelNorm, ResBlock,
                              StyledConv, ToRGB, minibatch_stddev)


def channel_table(size: int, channel_multiplier: int = 2,
                  channels: Sequence[int] | Mapping[int, int] | None = None) -> list[int]:
    """Widths at resolutions 4, 8, ..., size: StyleGAN2's table (512 up to 32 px, then 256*cm, 128*cm, ...) or an
    explicit list (one entry per resolution) / dict {resolution: width}."""
    log_size = int(math.log2(size))
    if size < 4 or 2 ** log_size != size:
        raise ValueError(f"size must be a power of two >= 4, got {size}")
    resolutions = [2 ** i for i in range(2, log_size + 1)]
    if channels is None:
        cm = channel_multiplier
        default = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
                   1024: 16 * cm, 2048: 8 * cm, 4096: 4 * cm}
        if size not in default:
            raise ValueError(f"no default widths for size {size}; give channels=[...]")
        return [int(default[r]) for r in resolutions]
    if isinstance(channels, Mapping):
        table = {int(k): int(v) for k, v in channels.items()}
        missing = [r for r in resolutions if r not in table]
        if missing:
            raise ValueError(f"channels has no width for resolution {missing[0]}")
        return [table[r] for r in resolutions]
    widths = [int(c) for c in channels]
    if len(widths) != len(resolutions):
        raise ValueError(f"channels needs {len(resolutions)} widths (resolutions 4..{size}), got {len(widths)}")
    return widths


class MappingNetwork(nn.Module):
    """z -> w: pixel norm, then ``n_mlp`` equalised linear layers with leaky ReLU and lr multiplier ``lr_mul``."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, n_mlp: int = 8, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.norm = PixelNorm()
        self.layers = nn.ModuleList(
            [EqualLinear(z_dim if i == 0 else w_dim, w_dim, lr_mul=lr_mul, activation=True) for i in range(n_mlp)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.norm(z)
        for layer in self.layers:
            x = layer(x)
        return x


class SynthesisBlock(nn.Module):
    """One resolution doubling: upsampling styled conv, styled conv, ToRGB adding the upsampled skip."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, blur_kernel: Sequence[float],
                 img_channels: int = 3) -> None:
        super().__init__()
        self.conv0 = StyledConv(in_ch, out_ch, 3, w_dim, upsample=True, blur_kernel=blur_kernel, resolution=resolution)
        self.conv1 = StyledConv(out_ch, out_ch, 3, w_dim, blur_kernel=blur_kernel, resolution=resolution)
        self.torgb = ToRGB(out_ch, w_dim, blur_kernel=blur_kernel, out_ch=img_channels)


class SynthesisNetwork(FastInference, nn.Module):
    """W+ [B, num_ws, w_dim] -> image [B, 3, size, size] (not clamped).

    Style indices: conv1 <- 0, torgb1 <- 1; block k: conv0 <- 2k+1, conv1 <- 2k+2, torgb <- 2k+3. Noise inputs in
    the official order: conv1, then conv0 and conv1 of each block (sides 4, 8, 8, 16, 16, ...).
    """

    def __init__(self, size: int, w_dim: int, channels: Sequence[int], blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 img_channels: int = 3) -> None:
        super().__init__()
        self.size, self.w_dim = size, w_dim
        self.log_size = int(math.log2(size))
        self.channels = list(channels)
        self.num_ws = 2 * self.log_size - 2
        self.const = ConstantInput(self.channels[0])
        self.conv1 = StyledConv(self.channels[0], self.channels[0], 3, w_dim, blur_kernel=blur_kernel, resolution=4)
        self.torgb1 = ToRGB(self.channels[0], w_dim, upsample=False, out_ch=img_channels)
        self.blocks = nn.ModuleList(
            [SynthesisBlock(self.channels[i - 1], self.channels[i], w_dim, 2 ** (i + 2), blur_kernel, img_channels)
             for i in range(1, len(self.channels))])

    def styled_convs(self) -> list[StyledConv]:
        """The styled convs in the official noise order."""
        convs = [self.conv1]
        for b in self.blocks:
            convs += [b.conv0, b.conv1]
        return convs

    @property
    def num_noise(self) -> int:
        return 2 * self.log_size - 3

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        return [(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2)) for i in range(self.num_noise)]

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                noise_mode: str = "const", return_rgbs: bool = False):
        """``noise``: a list of ``num_noise`` maps (broadcast over the batch; None entries follow ``noise_mode``);
        ``noise_mode``: const (stored buffers), random (fresh N(0,1)) or none. ``return_rgbs`` also returns the
        accumulated skip image after every ToRGB."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        if ws.ndim == 2:
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)
        if ws.ndim != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must be [B, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        if noise is None:
            noise = [None] * self.num_noise
        elif len(noise) != self.num_noise:
            raise ValueError(f"noise must list {self.num_noise} maps, got {len(noise)}")
        x = self.const(ws.shape[0])
        x = self.conv1(x, ws[:, 0], noise[0], noise_mode)
        skip = self.torgb1(x, ws[:, 1])
        rgbs = [skip]
        for k, block in enumerate(self.blocks):
            i = 2 * k + 1
            x = block.conv0(x, ws[:, i], noise[i], noise_mode)
            x = block.conv1(x, ws[:, i + 1], noise[i + 1], noise_mode)
            skip = block.torgb(x, ws[:, i + 2], skip)
            rgbs.append(skip)
        # the inference path works channels-last; what is returned is NCHW
        if return_rgbs:
            rgbs = [r.contiguous() for r in rgbs]
            return rgbs[-1], rgbs
        return skip.contiguous()


class StyleGAN2Generator(FastInference, nn.Module):
    """Mapping network + synthesis network; ``forward(z, truncation_psi, noise)`` does mapping, truncation
    towards ``w_avg``, optional style mixing, broadcast to W+ and synthesis."""

    synthesis_class = SynthesisNetwork  # subclasses (Anycost) swap in their synthesis network

    def __init__(self, size: int = 256, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: int = 2,
                 channels: Sequence[int] | Mapping[int, int] | None = None, lr_mlp: float = 0.01,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), z_dim: int | None = None) -> None:
        super().__init__()
        self.size, self.style_dim = int(size), int(style_dim)
        self.z_dim = int(z_dim or style_dim)
        widths = channel_table(self.size, channel_multiplier, channels)
        self.mapping = MappingNetwork(self.z_dim, self.style_dim, int(n_mlp), float(lr_mlp))
        self.synthesis = self.synthesis_class(self.size, self.style_dim, widths, tuple(blur_kernel))
        # centre of truncation; NaN until computed by mean_w() or read from a checkpoint's latent_avg
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

    @torch.no_grad()
    def sample_w(self, n: int, seed: int = 0, batch: int = 1024) -> torch.Tensor:
        """Mapping outputs [n, w_dim] of ``n`` z drawn from a CPU generator seeded by ``seed`` (no global RNG)."""
        gen = torch.Generator().manual_seed(int(seed))
        ws = [self.mapping(torch.randn(min(batch, n - start), self.z_dim, generator=gen).to(self.w_avg.device))
              for start in range(0, n, batch)]
        return torch.cat(ws)

    @torch.no_grad()
    def mean_w(self, n: int = 4096, seed: int = 0, batch: int = 1024) -> torch.Tensor:
        """Mean mapping output over ``n`` seeded z; stored as ``w_avg`` and returned."""
        self.w_avg.copy_(self.sample_w(n, seed, batch).double().mean(0).to(self.w_avg))
        return self.w_avg

    def has_w_avg(self) -> bool:
        return bool(torch.isfinite(self.w_avg).all())

    def truncate(self, w: torch.Tensor, truncation_psi: float) -> torch.Tensor:
        """w_avg + psi * (w - w_avg) (identity at psi = 1); computes w_avg first if it is not known."""
        if truncation_psi == 1:
            return w
        if not self.has_w_avg():
            self.mean_w()
        return torch.lerp(self.w_avg.to(w), w, float(truncation_psi))

    def broadcast(self, w: torch.Tensor, w2: torch.Tensor | None = None, inject_index: int | None = None) -> torch.Tensor:
        """[B, w_dim] -> W+ [B, num_ws, w_dim]; with ``w2``, layers from ``inject_index`` on take ``w2`` (mixing)."""
        ws = w[:, None, :].expand(-1, self.num_ws, -1)
        if w2 is None:
            return ws
        if inject_index is None or not 0 < int(inject_index) < self.num_ws:
            raise ValueError(f"inject_index must be in [1, {self.num_ws - 1}], got {inject_index}")
        i = int(inject_index)
        return torch.cat([ws[:, :i], w2[:, None, :].expand(-1, self.num_ws - i, -1)], 1)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, noise: Sequence[torch.Tensor] | None = None,
                noise_mode: str = "const", z2: torch.Tensor | None = None, inject_index: int | None = None,
                return_latents: bool = False):
        w = self.truncate(self.mapping(z), truncation_psi)
        w2 = self.truncate(self.mapping(z2), truncation_psi) if z2 is not None else None
        ws = self.broadcast(w, w2, inject_index)
        img = self.synthesis(ws, noise=noise, noise_mode=noise_mode)
        return (img, ws) if return_latents else img


class StyleGAN2Discriminator(nn.Module):
    """1x1 from-RGB, residual blur-downsampling blocks to 4x4, minibatch stddev, 3x3 conv, two linear layers."""

    def __init__(self, size: int = 256, channel_multiplier: int = 2,
                 channels: Sequence[int] | Mapping[int, int] | None = None, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 stddev_group: int = 4, stddev_feat: int = 1, img_channels: int = 3) -> None:
        super().__init__()
        self.size = int(size)
        widths = channel_table(self.size, channel_multiplier, channels)  # index 0 = 4 px
        self.channels = widths
        self.stddev_group, self.stddev_feat = int(stddev_group), int(stddev_feat)
        self.from_rgb = ConvLayer(img_channels, widths[-1], 1)
        self.blocks = nn.ModuleList([ResBlock(widths[i], widths[i - 1], tuple(blur_kernel))
                                     for i in range(len(widths) - 1, 0, -1)])
        self.final_conv = ConvLayer(widths[0] + self.stddev_feat, widths[0], 3)
        self.fc = EqualLinear(widths[0] * 16, widths[0], activation=True)
        self.out = EqualLinear(widths[0], 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-1] != self.size or img.shape[-2] != self.size:
            raise ValueError(f"discriminator expects {self.size}x{self.size} images, got {list(img.shape)}")
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = minibatch_stddev(x, self.stddev_group, self.stddev_feat)
        x = self.final_conv(x)
        return self.out(self.fc(x.flatten(1)))
