"""Anycost GAN (Lin et al., CVPR 2021): one StyleGAN2 generator whose channel-sliced and early-exit sub-generators
give consistent previews at a fraction of the cost, and the generator-conditioned multi-resolution discriminator.

The generator is a :class:`~asap.models.stylegan2.StyleGAN2Generator` (same modules, same rosinality key layout)
whose synthesis can run a sub-generator: every styled layer keeps only its first k output channels (the input
width follows), and the loop can stop at a lower resolution, returning that ToRGB skip image. Select one with
``G.set_sub_generator(ratio=, channels=, resolution=)`` or ``with G.sub_generator(...):``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn as nn

from asap.models.stylegan2 import StyleGAN2Generator, SynthesisNetwork, channel_table
from asap.nn.stylegan import (NOISE_MODES, ConvLayer, EqualLinear, ResBlock, StyledConv, ToRGB,
                              minibatch_stddev)

# Anycost's width table before the channel multiplier (both networks): width(res) = min(cap, TABLE[res] * cm)
TABLE = {4: 4096, 8: 2048, 16: 1024, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16, 2048: 8, 4096: 4}
RATIOS = (0.25, 0.5, 0.75, 1.0)


def anycost_channels(size: int, channel_multiplier: float = 2, channel_max: int = 512,
                     channels: Sequence[int] | Mapping[int, int] | None = None) -> list[int]:
    """Widths at 4, 8, ..., size: ``min(channel_max, int(TABLE[res] * channel_multiplier))`` or an explicit table."""
    if channels is not None:
        return channel_table(size, channels=channels)
    channel_table(size, channels=[1] * (int(math.log2(size)) - 1))  # validates size
    if size not in TABLE:
        raise ValueError(f"no Anycost widths for size {size}; give channels=[...]")
    return [min(int(channel_max), int(TABLE[2 ** i] * channel_multiplier)) for i in range(2, int(math.log2(size)) + 1)]


def encode_arch(ratios: Sequence[float]) -> torch.Tensor:
    """The discriminator's conditioning vector: per styled layer a one-hot over (0.25, 0.5, 0.75, 1.0), concatenated."""
    out = torch.zeros(len(ratios), len(RATIOS))
    for i, r in enumerate(ratios):
        try:
            out[i, RATIOS.index(float(r))] = 1.0
        except ValueError:
            raise ValueError(f"g_arch ratios must be in {RATIOS}, got {r}") from None
    return out.flatten()


# -- generator --------------------------------------------------------------------------------------------------
class AnycostSynthesisNetwork(SynthesisNetwork):
    """StyleGAN2 synthesis that runs the selected sub-generator (``sub_channels``, ``sub_resolution``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sub_channels: list[int] | None = None   # one width per styled layer, None = full
        self.sub_resolution: int | None = None       # exit resolution, None = size

    def full_channels(self) -> list[int]:
        """Per styled layer widths of the full network: constant input, conv1, then conv0/conv1 of each block."""
        out = [self.channels[0], self.channels[0]]
        for c in self.channels[1:]:
            out += [c, c]
        return out

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                noise_mode: str = "const", return_rgbs: bool = False):
        """As StyleGAN2's synthesis, through the selected sub-generator; ``rgbs`` run from 4 px to the exit."""
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
        ch = self.sub_channels or [None] * self.num_ws
        exit_res = self.sub_resolution or self.size
        x = self.const(ws.shape[0], ch[0])
        x = self.conv1(x, ws[:, 0], noise[0], noise_mode, out_ch=ch[1])
        skip = self.torgb1(x, ws[:, 1])
        rgbs = [skip]
        for k, block in enumerate(self.blocks):
            if skip.shape[-1] >= exit_res:
                break
            i = 2 * k + 1
            x = block.conv0(x, ws[:, i], noise[i], noise_mode, out_ch=ch[i + 1])
            x = block.conv1(x, ws[:, i + 1], noise[i + 1], noise_mode, out_ch=ch[i + 2])
            skip = block.torgb(x, ws[:, i + 2], skip)
            rgbs.append(skip)
        # the inference path works channels-last; what is returned is NCHW
        if return_rgbs:
            rgbs = [r.contiguous() for r in rgbs]
            return rgbs[-1], rgbs
        return skip.contiguous()


class AnycostGenerator(StyleGAN2Generator):
    """StyleGAN2 generator with Anycost's width table and sub-generators of any width and exit resolution."""

    synthesis_class = AnycostSynthesisNetwork

    def __init__(self, size: int = 1024, style_dim: int = 512, n_mlp: int = 8, channel_multiplier: float = 2,
                 channel_max: int = 512, channels: Sequence[int] | Mapping[int, int] | None = None,
                 lr_mlp: float = 0.01, blur_kernel: Sequence[float] = (1, 3, 3, 1), z_dim: int | None = None) -> None:
        widths = anycost_channels(int(size), channel_multiplier, channel_max, channels)
        super().__init__(size, style_dim, n_mlp, channels=widths, lr_mlp=lr_mlp, blur_kernel=blur_kernel, z_dim=z_dim)

    # -- sub-generators ---------------------------------------------------------------------------------------
    @property
    def channel_max(self) -> int:
        """The width cap (not stored in official files: the widest layer)."""
        return max(self.synthesis.channels)

    @property
    def full_channels(self) -> list[int]:
        return self.synthesis.full_channels()

    @property
    def sub_channels(self) -> list[int]:
        """The per-layer widths in use now (``num_ws`` entries)."""
        return list(self.synthesis.sub_channels or self.full_channels)

    @property
    def sub_resolution(self) -> int:
        """The exit resolution in use now."""
        return self.synthesis.sub_resolution or self.size

    def ratio_channels(self, ratio: float) -> list[int]:
        """Per-layer widths of a uniform ratio: ``min(channel_max, int(TABLE[res]·ratio·m))``, m = full width at
        ``size`` / TABLE[size] (the cap applies after the ratio, as in the official code)."""
        if float(ratio) not in RATIOS:
            raise ValueError(f"ratio must be one of {', '.join(map(str, RATIOS))}, got {ratio}")
        m = self.synthesis.channels[-1] / TABLE[self.size]
        out = []
        for i, full in enumerate(self.synthesis.channels):
            c = min(self.channel_max, int(TABLE[2 ** (i + 2)] * float(ratio) * m), full)
            out += [c, c]
        return out

    def set_sub_generator(self, ratio: float | None = None, channels: Sequence[int] | None = None,
                          resolution: int | None = None) -> "AnycostGenerator":
        """Select the sub-generator used from now on: a uniform ``ratio`` or explicit per-layer ``channels``
        (exclusive; neither = full width) and an exit ``resolution`` (None = ``size``)."""
        if ratio is not None and channels is not None:
            raise ValueError("give ratio or channels, not both")
        if ratio is not None:
            widths = self.ratio_channels(ratio)
        elif channels is not None:
            widths = [int(c) for c in channels]
            full = self.full_channels
            if len(widths) != len(full):
                raise ValueError(f"channels needs {len(full)} widths (one per styled layer), got {len(widths)}")
            bad = [i for i, (c, f) in enumerate(zip(widths, full)) if not 1 <= c <= f]
            if bad:
                raise ValueError(f"channels[{bad[0]}]={widths[bad[0]]} is outside [1, {full[bad[0]]}]")
        else:
            widths = None
        if resolution is not None:
            resolution = int(resolution)
            if resolution < 4 or resolution > self.size or resolution & (resolution - 1):
                raise ValueError(f"resolution must be a power of two in [4, {self.size}], got {resolution}")
        self.synthesis.sub_channels = None if widths == self.full_channels else widths
        self.synthesis.sub_resolution = None if resolution == self.size else resolution
        return self

    def reset_sub_generator(self) -> "AnycostGenerator":
        """Back to the full generator."""
        self.synthesis.sub_channels, self.synthesis.sub_resolution = None, None
        return self

    @contextlib.contextmanager
    def sub_generator(self, ratio: float | None = None, channels: Sequence[int] | None = None,
                      resolution: int | None = None) -> Iterator["AnycostGenerator"]:
        """Run a block with a sub-generator; the previous selection comes back on exit."""
        saved = (self.synthesis.sub_channels, self.synthesis.sub_resolution)
        try:
            yield self.set_sub_generator(ratio, channels, resolution)
        finally:
            self.synthesis.sub_channels, self.synthesis.sub_resolution = saved

    # -- channel sorting --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sort_channels(self, z: torch.Tensor | None = None, n: int = 100_000, seed: int = 0) -> "AnycostGenerator":
        """Reorder channels in place so that the first k are the important ones: importance of input channel i
        = Σ|W[:, i]| × mean |style_i| over mapped latents (``z``, or ``n`` seeded draws); the order of work is the
        official one (top ToRGB first, then down the network). The full output is unchanged."""
        if z is None:
            gen = torch.Generator().manual_seed(int(seed))
            z = torch.randn(int(n), self.z_dim, generator=gen)
        latents = self.mapping(z.to(self.w_avg.device).reshape(-1, self.z_dim))
        syn = self.synthesis

        def importance_order(layer: StyledConv | ToRGB) -> torch.Tensor:
            importance = layer.conv.weight.abs().sum(dim=(0, 1, 3, 4))
            style = layer.conv.modulation(latents).abs().mean(0)
            return torch.sort(importance * style, dim=0, descending=True)[1]

        def permute_inputs(layer: StyledConv | ToRGB, idx: torch.Tensor) -> None:
            conv = layer.conv
            conv.weight.copy_(conv.weight.index_select(2, idx))
            conv.modulation.weight.copy_(conv.modulation.weight.index_select(0, idx))
            conv.modulation.bias.copy_(conv.modulation.bias[idx])

        def permute_outputs(layer: StyledConv, idx: torch.Tensor) -> None:
            layer.conv.weight.copy_(layer.conv.weight.index_select(1, idx))
            layer.activate.bias.copy_(layer.activate.bias[idx])

        idx = None
        for block in reversed(syn.blocks):
            if idx is None:
                idx = importance_order(block.torgb)
            permute_inputs(block.torgb, idx)
            permute_outputs(block.conv1, idx)
            idx = importance_order(block.conv1)
            permute_inputs(block.conv1, idx)
            permute_outputs(block.conv0, idx)
            idx = importance_order(block.conv0)
            permute_inputs(block.conv0, idx)
        if idx is None:
            idx = importance_order(syn.torgb1)
        permute_inputs(syn.torgb1, idx)
        permute_outputs(syn.conv1, idx)
        idx = importance_order(syn.conv1)
        permute_inputs(syn.conv1, idx)
        syn.const.input.copy_(syn.const.input.index_select(1, idx))
        return self


# -- discriminator ----------------------------------------------------------------------------------------------
class AdaptiveModulate(nn.Module):
    """x·(1 + Linear_w(g_arch)) + Linear_b(g_arch) per channel: how the discriminator hears which sub-generator
    made the image (plain linear layers, as the official code)."""

    def __init__(self, channels: int, arch_len: int) -> None:
        super().__init__()
        self.weight_mapping = nn.Linear(arch_len, channels)
        self.bias_mapping = nn.Linear(arch_len, channels)

    def forward(self, x: torch.Tensor, g_arch: torch.Tensor) -> torch.Tensor:
        arch = g_arch.reshape(1, -1).to(x.dtype)
        weight = self.weight_mapping(arch).reshape(1, -1, 1, 1) + 1.0
        bias = self.bias_mapping(arch).reshape(1, -1, 1, 1)
        return x * weight + bias


class ConditionedConvLayer(ConvLayer):
    """ConvLayer with an AdaptiveModulate (``mod``) between the conv and the bias + activation."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, arch_len: int, **kwargs) -> None:
        super().__init__(in_ch, out_ch, kernel_size, **kwargs)
        self.mod = AdaptiveModulate(out_ch, arch_len)

    def parts(self) -> list[str]:
        return [n for n in ("blur", "conv", "mod", "act") if getattr(self, n) is not None]

    def forward(self, x: torch.Tensor, g_arch: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.mod(self.conv(x), g_arch)
        return self.act(x) if self.act is not None else x


class ConditionedResBlock(ResBlock):
    """Residual down-block whose three convs are conditioned on the generator architecture."""

    def __init__(self, in_ch: int, out_ch: int, arch_len: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        nn.Module.__init__(self)
        self.conv1 = ConditionedConvLayer(in_ch, in_ch, 3, arch_len, blur_kernel=blur_kernel)
        self.conv2 = ConditionedConvLayer(in_ch, out_ch, 3, arch_len, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConditionedConvLayer(in_ch, out_ch, 1, arch_len, downsample=True, blur_kernel=blur_kernel,
                                         bias=False, activate=False)

    def forward(self, x: torch.Tensor, g_arch: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x, g_arch), g_arch) + self.skip(x, g_arch)) / math.sqrt(2)


class AnycostDiscriminator(nn.Module):
    """Multi-resolution StyleGAN2 discriminator: one 1x1 from-RGB per input side (size, size/2, ...) entering a
    shared residual trunk at its resolution; with ``modulate`` the last two blocks are conditioned on ``g_arch``."""

    def __init__(self, size: int = 1024, channel_multiplier: float = 2, channel_max: int = 512,
                 channels: Sequence[int] | Mapping[int, int] | None = None, n_res: int = 4, modulate: bool = True,
                 num_ws: int | None = None, blur_kernel: Sequence[float] = (1, 3, 3, 1), stddev_group: int = 4,
                 stddev_feat: int = 1) -> None:
        super().__init__()
        self.size = int(size)
        widths = anycost_channels(self.size, channel_multiplier, channel_max, channels)  # index 0 = 4 px
        self.channels = widths
        log_size = int(math.log2(self.size))
        n_blocks = log_size - 2
        if not 1 <= int(n_res) <= n_blocks + 1:
            raise ValueError(f"n_res must be in [1, {n_blocks + 1}] for size {self.size}, got {n_res}")
        self.resolutions = [self.size // 2 ** i for i in range(int(n_res))]
        self.num_ws = int(num_ws or 2 * log_size - 2)
        self.arch_len = 4 * self.num_ws
        self.modulate = bool(modulate)
        self.stddev_group, self.stddev_feat = int(stddev_group), int(stddev_feat)
        self.from_rgbs = nn.ModuleList([ConvLayer(3, widths[log_size - 2 - i], 1) for i in range(int(n_res))])
        blocks = []
        for j, i in enumerate(range(len(widths) - 1, 0, -1)):
            conditioned = self.modulate and j >= n_blocks - 2
            blocks.append(ConditionedResBlock(widths[i], widths[i - 1], self.arch_len, tuple(blur_kernel))
                          if conditioned else ResBlock(widths[i], widths[i - 1], tuple(blur_kernel)))
        self.blocks = nn.ModuleList(blocks)
        self.final_conv = ConvLayer(widths[0] + self.stddev_feat, widths[0], 3)
        self.fc = EqualLinear(widths[0] * 16, widths[0], activation=True)
        self.out = EqualLinear(widths[0], 1)

    def full_arch(self) -> torch.Tensor:
        return encode_arch([1.0] * self.num_ws)

    def forward(self, img: torch.Tensor, g_arch: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [B, 1] for images of side in ``resolutions``; ``g_arch`` (one per batch, from
        :func:`encode_arch`) defaults to the full generator."""
        side = img.shape[-1]
        if img.shape[-2] != side or side not in self.resolutions:
            raise ValueError(f"discriminator expects square images of side {self.resolutions}, got {list(img.shape)}")
        if self.modulate:
            if g_arch is None:
                g_arch = self.full_arch()
            if g_arch.numel() != self.arch_len:
                raise ValueError(f"g_arch must have {self.arch_len} values, got {g_arch.numel()}")
            g_arch = g_arch.to(img.device)
        idx = self.resolutions.index(side)
        x = self.from_rgbs[idx](img)
        for block in self.blocks[idx:]:
            x = block(x, g_arch) if isinstance(block, ConditionedResBlock) else block(x)
        x = minibatch_stddev(x, self.stddev_group, self.stddev_feat)
        x = self.final_conv(x)
        return self.out(self.fc(x.flatten(1)))


__all__ = ["AnycostGenerator", "AnycostDiscriminator", "AnycostSynthesisNetwork", "AdaptiveModulate",
           "ConditionedConvLayer", "ConditionedResBlock", "TABLE", "RATIOS", "anycost_channels", "encode_arch"]
