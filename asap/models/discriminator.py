"""Multi-scale PatchGAN discriminator of pix2pixHD / SPADE / ASAPNet.

Each scale is a stack of 4x4 convolutions judging overlapping patches of (semantic map ++ image); the next scale
sees a 2x average-pooled copy. Every intermediate feature map is returned for the feature-matching loss.
Submodule names follow the official checkpoints (``discriminator_<i>.model<n>``) so official ``*_net_D.pth``
state_dicts load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.layers import make_norm, parse_norm
from asap.nn.init import init_weights_official


def _norm_conv(conv: nn.Conv2d, norm_D: str) -> nn.Module:
    """The official wrapping of a discriminator conv: [spectral norm], and unless the sub-norm is 'none' the conv
    loses its bias and is followed by the norm layer (as ``Sequential(conv, norm)``)."""
    spectral, sub = parse_norm(norm_D)
    if sub != "none":
        conv = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         bias=False)
    if spectral:
        conv = nn.utils.spectral_norm(conv)
    norm = make_norm(sub, conv.out_channels)
    return conv if norm is None else nn.Sequential(conv, norm)


class NLayerDiscriminator(nn.Module):
    """One PatchGAN scale: conv4x4 stride 2 (no norm) + LeakyReLU 0.2, then n_layers_D - 1 normalised conv4x4
    (stride 2, the last one stride 1; width doubling from ndf up to ndf_max) + LeakyReLU, then a stride-1
    conv4x4 to one logit per patch. Returns the list of every block's output, the logits last."""

    def __init__(self, input_nc: int, ndf: int = 64, n_layers_D: int = 4, norm_D: str = "spectralinstance",
                 ndf_max: int = 512) -> None:
        super().__init__()
        if n_layers_D < 1:
            raise ValueError(f"n_layers_D must be >= 1, got {n_layers_D}")
        parse_norm(norm_D)
        k, pad = 4, 2
        blocks: list[nn.Sequential] = [nn.Sequential(nn.Conv2d(input_nc, ndf, k, stride=2, padding=pad),
                                                     nn.LeakyReLU(0.2))]
        nf = ndf
        for n in range(1, n_layers_D):
            prev, nf = nf, min(nf * 2, ndf_max)
            stride = 1 if n == n_layers_D - 1 else 2
            blocks.append(nn.Sequential(_norm_conv(nn.Conv2d(prev, nf, k, stride=stride, padding=pad), norm_D),
                                        nn.LeakyReLU(0.2)))
        blocks.append(nn.Sequential(nn.Conv2d(nf, 1, k, stride=1, padding=pad)))
        for i, block in enumerate(blocks):
            self.add_module(f"model{i}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for block in self.children():
            x = block(x)
            features.append(x)
        return features


class MultiscaleDiscriminator(nn.Module):
    """``num_D`` NLayerDiscriminators at successively halved resolutions (3x3 average pooling, stride 2, padding 1,
    padding excluded from the average). Input: semantic map ++ image, ``input_nc`` channels.

    Returns one list per scale (finest first): every intermediate feature with the patch logits last, or only
    ``[logits]`` when ``get_intermediate_features`` is off (the official ``no_ganFeat_loss``).
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers_D: int = 4, num_D: int = 2,
                 norm_D: str = "spectralinstance", ndf_max: int = 512, get_intermediate_features: bool = True,
                 init_type: str | None = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        if num_D < 1:
            raise ValueError(f"num_D must be >= 1, got {num_D}")
        self.input_nc = int(input_nc)
        self.num_D = int(num_D)
        self.get_intermediate_features = bool(get_intermediate_features)
        for i in range(num_D):
            self.add_module(f"discriminator_{i}", NLayerDiscriminator(input_nc, ndf, n_layers_D, norm_D, ndf_max))
        if init_type is not None:
            init_weights_official(self, init_type, init_gain)

    @staticmethod
    def downsample(x: torch.Tensor) -> torch.Tensor:
        """The next scale's input: 3x3 average pool, stride 2, ignoring the zero padding."""
        return F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"expected input [B,{self.input_nc},H,W], got {tuple(x.shape)}")
        results = []
        for i, d in enumerate(self.children()):
            if i:
                x = self.downsample(x)
            features = d(x)
            results.append(features if self.get_intermediate_features else features[-1:])
        return results
