"""SPADE building blocks (Park et al., "Semantic Image Synthesis with Spatially-Adaptive Normalization", CVPR 2019).

SPADE normalises activations without learned affine parameters, then modulates them with a per-pixel scale and
shift predicted from the (resized) semantic map. Submodule names follow the official checkpoints
(``param_free_norm``, ``mlp_shared``, ``mlp_gamma``, ``mlp_beta``; ``conv_0/1/s``, ``norm_0/1/s``) so that
official state_dicts load key for key; spectral norm is PyTorch's own, whose ``weight_orig/_u/_v`` buffers are
the ones the official files hold.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.init import INIT_TYPES, init_weights_official  # noqa: F401  (re-exported)

# The width of SPADE's shared embedding of the semantic map (fixed in the paper and the official code).
SPADE_HIDDEN = 128
PARAM_FREE_NORMS = ("instance", "batch", "syncbatch")


@dataclass(frozen=True)
class SpadeNormConfig:
    """A parsed generator norm string such as 'spectralspadesyncbatch3x3'."""

    spectral: bool        # spectral norm on the residual blocks' convolutions
    param_free: str       # instance | batch | syncbatch
    kernel_size: int      # of SPADE's convolutions on the semantic map


def parse_spade_norm(norm_G: str) -> SpadeNormConfig:
    """Parse an official ``norm_G`` string: ``[spectral]spade<instance|batch|syncbatch><k>x<k>``."""
    spectral = "spectral" in norm_G
    rest = norm_G.replace("spectral", "")
    m = re.fullmatch(r"spade([a-z_]+?)(\d+)x(\d+)", rest)
    if m is None:
        raise ValueError(f"norm_G '{norm_G}' is not of the form [spectral]spade<norm><k>x<k>, "
                         f"e.g. spectralspadesyncbatch3x3")
    kind, k = m.group(1), int(m.group(2))
    if kind not in PARAM_FREE_NORMS:
        raise ValueError(f"norm_G '{norm_G}': unknown parameter-free norm '{kind}' "
                         f"(known: {', '.join(PARAM_FREE_NORMS)})")
    if k % 2 == 0 or int(m.group(3)) != k:
        raise ValueError(f"norm_G '{norm_G}': the SPADE kernel must be square and odd, got {k}x{m.group(3)}")
    return SpadeNormConfig(spectral, kind, k)


def param_free_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation without learned affine parameters; sync batch norm is a plain BatchNorm2d here
    (convert with ``nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU training)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    if kind in ("batch", "syncbatch"):
        return nn.BatchNorm2d(channels, affine=False)
    raise ValueError(f"unknown parameter-free norm '{kind}' (known: {', '.join(PARAM_FREE_NORMS)})")


def maybe_spectral(module: nn.Module, enabled: bool) -> nn.Module:
    """Wrap ``module`` with PyTorch spectral norm (``weight_orig``, ``weight_u``, ``weight_v``) when enabled."""
    return nn.utils.spectral_norm(module) if enabled else module


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: ``norm(x) * (1 + gamma(seg)) + beta(seg)``, with gamma and beta
    predicted by a small conv net from the semantic map resized (nearest) to x's resolution."""

    def __init__(self, channels: int, semantic_nc: int, param_free: str = "syncbatch", kernel_size: int = 3,
                 hidden: int = SPADE_HIDDEN) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.param_free_norm = param_free_norm(param_free, channels)
        self.mlp_shared = nn.Sequential(nn.Conv2d(semantic_nc, hidden, kernel_size, padding=pad), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, channels, kernel_size, padding=pad)
        self.mlp_beta = nn.Conv2d(hidden, channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        seg = F.interpolate(seg, size=x.shape[2:], mode="nearest")
        embedding = self.mlp_shared(seg)
        return normalized * (1 + self.mlp_gamma(embedding)) + self.mlp_beta(embedding)


class SPADEResBlock(nn.Module):
    """Pre-activation residual block: (SPADE, leaky ReLU 0.2, conv3x3) twice; the shortcut is learned
    (SPADE + bias-free 1x1 conv) when the channel count changes. The middle width is min(in, out)."""

    def __init__(self, in_channels: int, out_channels: int, semantic_nc: int,
                 norm_G: str = "spectralspadesyncbatch3x3") -> None:
        super().__init__()
        cfg = parse_spade_norm(norm_G)
        self.learned_shortcut = in_channels != out_channels
        middle = min(in_channels, out_channels)
        self.conv_0 = maybe_spectral(nn.Conv2d(in_channels, middle, 3, padding=1), cfg.spectral)
        self.conv_1 = maybe_spectral(nn.Conv2d(middle, out_channels, 3, padding=1), cfg.spectral)
        if self.learned_shortcut:
            self.conv_s = maybe_spectral(nn.Conv2d(in_channels, out_channels, 1, bias=False), cfg.spectral)
        self.norm_0 = SPADE(in_channels, semantic_nc, cfg.param_free, cfg.kernel_size)
        self.norm_1 = SPADE(middle, semantic_nc, cfg.param_free, cfg.kernel_size)
        if self.learned_shortcut:
            self.norm_s = SPADE(in_channels, semantic_nc, cfg.param_free, cfg.kernel_size)

    def shortcut(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        return self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return self.shortcut(x, seg) + dx
