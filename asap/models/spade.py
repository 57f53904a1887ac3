"""SPADE generator (Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR 2019).

The baseline ASAPNet is compared against: a stack of SPADE residual blocks that starts from a tiny grid
(the semantic map resized to sh x sw, or a random code with ``use_vae``) and doubles the resolution between
blocks, each block re-injecting the semantic map through SPADE. Attribute names follow the official checkpoints
(``fc``, ``head_0``, ``G_middle_0/1``, ``up_0..4``, ``conv_img``) so official state_dicts load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.data.preprocess import SemanticSpec
from asap.nn.init import init_weights_official
from asap.nn.spade import SPADEResBlock, parse_spade_norm

# num_upsampling_layers -> number of 2x upsamplings between the sh x sw grid and the image
UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}


def latent_grid_size(crop_size: int, aspect_ratio: float, num_upsampling_layers: str) -> tuple[int, int]:
    """(sh, sw): the starting grid, sw = crop_size // 2**n, sh = round(sw / aspect_ratio), as the official code."""
    if num_upsampling_layers not in UPSAMPLINGS:
        raise ValueError(f"num_upsampling_layers must be one of {', '.join(UPSAMPLINGS)}, "
                         f"got '{num_upsampling_layers}'")
    sw = int(crop_size) // (2 ** UPSAMPLINGS[num_upsampling_layers])
    sh = round(sw / float(aspect_ratio))
    if sw < 1 or sh < 1:
        raise ValueError(f"crop_size {crop_size} with aspect_ratio {aspect_ratio} and num_upsampling_layers "
                         f"'{num_upsampling_layers}' gives an empty {sh}x{sw} starting grid")
    return sh, sw


class SPADEGenerator(nn.Module):
    """Semantic map (one-hot labels + instance channels) -> image in [-1, 1] of size image_size.

    Defaults are the official option parser's (SPADE generator defaults, no dataset preset): label_nc 182,
    ngf 64, crop_size 512, aspect_ratio 1, num_upsampling_layers 'normal', norm_G 'spectralspadesyncbatch3x3'.
    The output size is fixed by crop_size / aspect_ratio (sh*2**n x sw*2**n), whatever the input size: the
    input is resized (nearest) to the starting grid and, inside every SPADE, to the features' resolution.
    """

    def __init__(self, label_nc: int = 182, contain_dontcare_label: bool = False, instance_edge: bool = True,
                 instance_dist: bool = False, ngf: int = 64, num_upsampling_layers: str = "normal",
                 crop_size: int = 512, aspect_ratio: float = 1.0, norm_G: str = "spectralspadesyncbatch3x3",
                 use_vae: bool = False, z_dim: int = 256, output_nc: int = 3, init_type: str | None = "xavier",
                 init_gain: float = 0.02) -> None:
        super().__init__()
        parse_spade_norm(norm_G)  # fail early, with the option's name, on a bad norm string
        self.spec = SemanticSpec(label_nc, contain_dontcare_label, instance_edge, instance_dist)
        self.semantic_nc = self.spec.num_channels
        self.ngf = int(ngf)
        self.num_upsampling_layers = num_upsampling_layers
        self.use_vae = bool(use_vae)
        self.z_dim = int(z_dim)
        self.sh, self.sw = latent_grid_size(crop_size, aspect_ratio, num_upsampling_layers)
        scale = 2 ** UPSAMPLINGS[num_upsampling_layers]
        self.image_size = (self.sh * scale, self.sw * scale)

        nf, sem = self.ngf, self.semantic_nc
        if self.use_vae:
            self.fc = nn.Linear(self.z_dim, 16 * nf * self.sh * self.sw)
        else:
            self.fc = nn.Conv2d(sem, 16 * nf, 3, padding=1)
        self.head_0 = SPADEResBlock(16 * nf, 16 * nf, sem, norm_G)
        self.G_middle_0 = SPADEResBlock(16 * nf, 16 * nf, sem, norm_G)
        self.G_middle_1 = SPADEResBlock(16 * nf, 16 * nf, sem, norm_G)
        self.up_0 = SPADEResBlock(16 * nf, 8 * nf, sem, norm_G)
        self.up_1 = SPADEResBlock(8 * nf, 4 * nf, sem, norm_G)
        self.up_2 = SPADEResBlock(4 * nf, 2 * nf, sem, norm_G)
        self.up_3 = SPADEResBlock(2 * nf, nf, sem, norm_G)
        final = nf
        if num_upsampling_layers == "most":
            self.up_4 = SPADEResBlock(nf, nf // 2, sem, norm_G)
            final = nf // 2
        self.conv_img = nn.Conv2d(final, output_nc, 3, padding=1)
        if init_type is not None:
            init_weights_official(self, init_type, init_gain)

    def initial_features(self, seg: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The 16*ngf x sh x sw starting features: from a latent code (VAE mode) or the downsized semantic map."""
        if self.use_vae:
            if z is None:
                z = torch.randn(seg.shape[0], self.z_dim, dtype=seg.dtype, device=seg.device)
            return self.fc(z).view(-1, 16 * self.ngf, self.sh, self.sw)
        return self.fc(F.interpolate(seg, size=(self.sh, self.sw)))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x: preprocessed semantic input [B, spec.num_channels, H, W] -> image [B, output_nc, *image_size].
        ``z`` ([B, z_dim]) is used only with ``use_vae`` (sampled from N(0, I) when omitted)."""
        if x.dim() != 4 or x.shape[1] != self.semantic_nc:
            raise ValueError(f"expected input [B,{self.semantic_nc},H,W], got {tuple(x.shape)}")
        seg = x
        h = self.head_0(self.initial_features(seg, z), seg)
        h = F.interpolate(h, scale_factor=2)
        h = self.G_middle_0(h, seg)
        if self.num_upsampling_layers in ("more", "most"):
            h = F.interpolate(h, scale_factor=2)
        h = self.G_middle_1(h, seg)
        for block in (self.up_0, self.up_1, self.up_2, self.up_3):
            h = block(F.interpolate(h, scale_factor=2), seg)
        if self.num_upsampling_layers == "most":
            h = self.up_4(F.interpolate(h, scale_factor=2), seg)
        return torch.tanh(self.conv_img(F.leaky_relu(h, 0.2)))
