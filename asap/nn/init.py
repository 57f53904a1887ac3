"""Weight initialisation of the SPADE family of codebases (SPADE, ASAPNet: BaseNetwork.init_weights)."""
from __future__ import annotations

import torch
import torch.nn as nn

INIT_TYPES = ("normal", "xavier", "xavier_uniform", "kaiming", "orthogonal", "none")


def init_weights_official(module: nn.Module, init_type: str = "xavier", gain: float = 0.02) -> None:
    """The SPADE codebase's initialisation: conv/linear weights by ``init_type`` (xavier normal with gain 0.02
    by default) and zero biases; affine batch-norm scales N(1, gain), shifts 0. Spectral-normed layers get their
    ``weight_orig`` initialised (what the official code reaches through ``weight.data``)."""
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init_type '{init_type}' (known: {', '.join(INIT_TYPES)})")
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                nn.init.normal_(m.weight, 1.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            continue
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
            continue
        weight = getattr(m, "weight_orig", None)
        if weight is None:
            weight = m.weight
        with torch.no_grad():
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif init_type == "xavier_uniform":
                nn.init.xavier_uniform_(weight, gain=1.0)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            elif init_type == "orthogonal":
                nn.init.orthogonal_(weight, gain=gain)
            else:  # "none": PyTorch's default
                m.reset_parameters()
            if m.bias is not None:
                nn.init.zeros_(m.bias)
