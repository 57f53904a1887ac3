"""FastGAN (Liu et al., ICLR 2021, "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis"): a light generator with skip-layer excitation and a discriminator trained with a self-supervised
reconstruction task.

The module trees follow the official layout, so official state dicts load by name (``asap.pretrained.fastgan``).
Public API:

* ``img = G(z, noise=None)``; ``img, img_128 = G(z, noise=None, return_small=True)``. As the official code: the
  outputs are the raw convolutions at 256 and 512 px and tanh'ed at 1024 (both outputs). ``noise`` is None (fresh
  draws) or a list of ``G.num_noise`` maps ``[B or 1, 1, r, r]`` in forward order (two per noise block).
* ``logits = D(x)`` with ``x`` one tensor (resized with nearest interpolation to ``im_size`` and to 128) or a pair
  ``(img, img_128)`` used as given; logits are flat ``[2 * B * 25]``: the big branch's 5x5 maps, then the small
  branch's. ``logits, (rec_big, rec_small, rec_part) = D(x, part=q)`` also runs the three 128x128 decoders, the
  part decoder on quadrant q (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.fastgan import (DownBlock, DownBlockComp, FusedUpsampling, InitLayer, SimpleDecoder,
                             SkipLayerExcitation, UpBlockComp, sn_conv, up_block)

IM_SIZES = (256, 512, 1024)
G_MULTIPLIERS = {4: 16, 8: 8, 16: 4, 32: 2, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
D_MULTIPLIERS = {4: 16, 8: 16, 16: 8, 32: 4, 64: 2, 128: 1, 256: 0.5, 512: 0.25, 1024: 0.125}
DECODER_BASE = 32  # the official decoders' width base, whatever ndf is
COMP_RESOLUTIONS = (8, 32, 128, 512)  # up blocks with two convs and noise injection
QUADRANTS = ((slice(None, 8), slice(None, 8)), (slice(None, 8), slice(8, None)),
             (slice(8, None), slice(None, 8)), (slice(8, None), slice(8, None)))


def _check_im_size(im_size: int) -> int:
    if int(im_size) not in IM_SIZES:
        raise ValueError(f"im_size must be 256, 512 or 1024 (the official FastGAN sizes), got {im_size}")
    return int(im_size)


def width_table(resolutions: Sequence[int], base: int, multipliers: Mapping[int, float],
                channels: Sequence[int] | Mapping[int, int] | None, what: str) -> dict[int, int]:
    """{resolution: width}: ``int(multiplier * base)`` (the official tables) or explicit widths (a list in the
    order of ``resolutions``, or a mapping)."""
    if channels is None:
        return {r: int(multipliers[r] * base) for r in resolutions}
    if isinstance(channels, Mapping):
        table = {int(k): int(v) for k, v in channels.items()}
        missing = [r for r in resolutions if r not in table]
        if missing:
            raise ValueError(f"{what} has no width for resolution {missing[0]}")
        return {r: table[r] for r in resolutions}
    widths = [int(c) for c in channels]
    if len(widths) != len(resolutions):
        raise ValueError(f"{what} needs {len(resolutions)} widths (resolutions {', '.join(map(str, resolutions))}), "
                         f"got {len(widths)}")
    return dict(zip(resolutions, widths))


def init_weights(module: nn.Module) -> None:
    """The official initialisation: conv weights N(0, 0.02), BatchNorm scale N(1, 0.02) and shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            weight = m.weight_orig if hasattr(m, "weight_orig") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class FastGANGenerator(FusedUpsampling, nn.Module):
    """z [B, nz] -> image [B, nc, im_size, im_size] (+ the 128 px side output).

    Up blocks from 4 to ``im_size`` px (two-conv blocks with noise at 8, 32, 128, 512); SLE gates 4->64, 8->128,
    16->256 and 32->512. ``channels``: widths at 4, 8, ..., im_size (default ``ngf`` x the official multipliers).
    """

    def __init__(self, ngf: int = 64, nz: int = 256, nc: int = 3, im_size: int = 1024,
                 channels: Sequence[int] | Mapping[int, int] | None = None) -> None:
        super().__init__()
        self.im_size = _check_im_size(im_size)
        self.nz, self.nc = int(nz), int(nc)
        self.resolutions = [2 ** i for i in range(2, self.im_size.bit_length())]
        nfc = width_table(self.resolutions, ngf, G_MULTIPLIERS, channels, "generator channels")
        self.channels = [nfc[r] for r in self.resolutions]
        # registration order = the official parameter order (optimiser states and g_ema lists follow it)
        self.init = InitLayer(self.nz, nfc[4])
        for r in (8, 16, 32, 64, 128, 256):
            self.add_module(f"feat_{r}", self._up(nfc, r))
        self.se_64 = SkipLayerExcitation(nfc[4], nfc[64])
        self.se_128 = SkipLayerExcitation(nfc[8], nfc[128])
        self.se_256 = SkipLayerExcitation(nfc[16], nfc[256])
        self.to_128 = sn_conv(nfc[128], self.nc, 1)
        self.to_big = sn_conv(nfc[self.im_size], self.nc, 3, 1, 1)
        if self.im_size > 256:
            self.feat_512 = self._up(nfc, 512)
            self.se_512 = SkipLayerExcitation(nfc[32], nfc[512])
        if self.im_size > 512:
            self.feat_1024 = self._up(nfc, 1024)
        init_weights(self)

    @staticmethod
    def _up(nfc: Mapping[int, int], r: int) -> nn.Module:
        return (UpBlockComp if r in COMP_RESOLUTIONS else up_block)(nfc[r // 2], nfc[r])

    @property
    def z_dim(self) -> int:
        return self.nz

    @property
    def size(self) -> int:
        return self.im_size

    @property
    def num_noise(self) -> int:
        """Noise maps per forward: two per noise-injecting block (6 at 256 px, 8 at 512 and 1024)."""
        return 2 * sum(1 for r in self.resolutions if r in COMP_RESOLUTIONS)

    def noise_shapes(self) -> list[tuple[int, int, int, int]]:
        """Shapes [1, 1, r, r] of the noise maps in forward order."""
        return [(1, 1, r, r) for r in self.resolutions if r in COMP_RESOLUTIONS for _ in range(2)]

    def forward(self, z: torch.Tensor, noise: Sequence[torch.Tensor | None] | None = None,
                return_small: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if noise is None:
            noise = [None] * self.num_noise
        elif len(noise) != self.num_noise:
            raise ValueError(f"noise needs {self.num_noise} maps (two per noise block), got {len(noise)}")
        feats = {4: self.init(z)}
        k = 0
        for r in self.resolutions[1:]:
            block = getattr(self, f"feat_{r}")
            if r in COMP_RESOLUTIONS:
                x = block(feats[r // 2], noise[k:k + 2])
                k += 2
            else:
                x = block(feats[r // 2])
            if r in (64, 128, 256, 512) and hasattr(self, f"se_{r}"):
                x = getattr(self, f"se_{r}")(feats[r // 16], x)
            feats[r] = x
        img, small = self.to_big(feats[self.im_size]), self.to_128(feats[128])
        if self.im_size == 1024:  # the official code squashes only the 1024 px outputs
            img, small = torch.tanh(img), torch.tanh(small)
        return (img, small) if return_small else img


class FastGANDiscriminator(FusedUpsampling, nn.Module):
    """Two branches (the image at ``im_size`` down to 8x8 with three SLE gates, and its 128 px version down to
    8x8), each ending in 5x5 logits; three decoders reconstruct the real image, its small version and a quadrant.

    ``channels``: widths at 8, 16, ..., 512 (and 1024 at im_size 1024), default ``ndf`` x the official multipliers;
    ``decoder_channels``: the decoders' widths at 16, 32, 64, 128 px (official: 128, 64, 64, 32)."""

    def __init__(self, ndf: int = 64, nc: int = 3, im_size: int = 512,
                 channels: Sequence[int] | Mapping[int, int] | None = None,
                 decoder_channels: Sequence[int] | None = None) -> None:
        super().__init__()
        self.im_size = _check_im_size(im_size)
        self.nc = int(nc)
        self.resolutions = [8, 16, 32, 64, 128, 256, 512] + ([1024] if self.im_size == 1024 else [])
        nfc = width_table(self.resolutions, ndf, D_MULTIPLIERS, channels, "discriminator channels")
        self.channels = [nfc[r] for r in self.resolutions]
        if decoder_channels is None:
            decoder_channels = [int(G_MULTIPLIERS[r] * DECODER_BASE) for r in (16, 32, 64, 128)]
        self.decoder_channels = [int(c) for c in decoder_channels]
        if len(self.decoder_channels) != 4:
            raise ValueError(f"decoder_channels needs 4 widths (16, 32, 64, 128 px), got {len(self.decoder_channels)}")
        if self.im_size == 1024:
            self.down_from_big = nn.Sequential(sn_conv(self.nc, nfc[1024], 4, 2, 1), nn.LeakyReLU(0.2),
                                               sn_conv(nfc[1024], nfc[512], 4, 2, 1), nn.BatchNorm2d(nfc[512]),
                                               nn.LeakyReLU(0.2))
        elif self.im_size == 512:
            self.down_from_big = nn.Sequential(sn_conv(self.nc, nfc[512], 4, 2, 1), nn.LeakyReLU(0.2))
        else:
            self.down_from_big = nn.Sequential(sn_conv(self.nc, nfc[512], 3, 1, 1), nn.LeakyReLU(0.2))
        self.down_4 = DownBlockComp(nfc[512], nfc[256])
        self.down_8 = DownBlockComp(nfc[256], nfc[128])
        self.down_16 = DownBlockComp(nfc[128], nfc[64])
        self.down_32 = DownBlockComp(nfc[64], nfc[32])
        self.down_64 = DownBlockComp(nfc[32], nfc[16])
        self.rf_big = nn.Sequential(sn_conv(nfc[16], nfc[8], 1), nn.BatchNorm2d(nfc[8]), nn.LeakyReLU(0.2),
                                    sn_conv(nfc[8], 1, 4))
        self.se_2_16 = SkipLayerExcitation(nfc[512], nfc[64])
        self.se_4_32 = SkipLayerExcitation(nfc[256], nfc[32])
        self.se_8_64 = SkipLayerExcitation(nfc[128], nfc[16])
        self.down_from_small = nn.Sequential(sn_conv(self.nc, nfc[256], 4, 2, 1), nn.LeakyReLU(0.2),
                                             DownBlock(nfc[256], nfc[128]), DownBlock(nfc[128], nfc[64]),
                                             DownBlock(nfc[64], nfc[32]))
        self.rf_small = sn_conv(nfc[32], 1, 4)
        self.decoder_big = SimpleDecoder(nfc[16], self.decoder_channels, self.nc)
        self.decoder_part = SimpleDecoder(nfc[32], self.decoder_channels, self.nc)
        self.decoder_small = SimpleDecoder(nfc[32], self.decoder_channels, self.nc)
        init_weights(self)

    @property
    def size(self) -> int:
        return self.im_size

    def inputs(self, x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(image at im_size, image at 128): a pair as given, one tensor resized with nearest interpolation."""
        if isinstance(x, (list, tuple)):
            if len(x) != 2:
                raise ValueError(f"the discriminator takes one image tensor or a pair (img, img_128), got {len(x)}")
            return x[0], x[1]
        return F.interpolate(x, size=self.im_size), F.interpolate(x, size=128)

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor], part: int | None = None):
        big, small = self.inputs(x)
        feat_2 = self.down_from_big(big)
        feat_4 = self.down_4(feat_2)
        feat_8 = self.down_8(feat_4)
        feat_16 = self.se_2_16(feat_2, self.down_16(feat_8))
        feat_32 = self.se_4_32(feat_4, self.down_32(feat_16))
        feat_last = self.se_8_64(feat_8, self.down_64(feat_32))
        feat_small = self.down_from_small(small)
        logits = torch.cat([self.rf_big(feat_last).reshape(-1), self.rf_small(feat_small).reshape(-1)])
        if part is None:
            return logits
        if int(part) not in range(4):
            raise ValueError(f"part must be a quadrant 0..3 (top-left, top-right, bottom-left, bottom-right), got {part}")
        rows, cols = QUADRANTS[int(part)]
        recs = (self.decoder_big(feat_last), self.decoder_small(feat_small), self.decoder_part(feat_32[:, :, rows, cols]))
        return logits, recs


def crop_quadrant(image: torch.Tensor, part: int) -> torch.Tensor:
    """Quadrant ``part`` (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of an image batch."""
    h = image.shape[2] // 2
    w = image.shape[3] // 2
    rows = slice(None, h) if part in (0, 1) else slice(h, None)
    cols = slice(None, w) if part in (0, 2) else slice(w, None)
    return image[:, :, rows, cols]
