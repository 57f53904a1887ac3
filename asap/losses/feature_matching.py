"""Discriminator feature matching (pix2pixHD / SPADE): L1 between the discriminator's intermediate features on
fake and on real inputs, over every scale and layer but the final prediction, averaged over the scales."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def feature_matching_loss(pred_fake: Sequence[Sequence[torch.Tensor]], pred_real: Sequence[Sequence[torch.Tensor]],
                          lambda_feat: float = 1.0) -> torch.Tensor:
    """``lambda_feat / num_D * sum_scales sum_layers L1(fake_feature, real_feature.detach())``, the final
    prediction of each scale excluded (official weighting). Inputs: MultiscaleDiscriminator outputs."""
    if len(pred_fake) != len(pred_real) or len(pred_fake) == 0:
        raise ValueError(f"need the same, non-zero number of scales for fake and real, got "
                         f"{len(pred_fake)} and {len(pred_real)}")
    num_d = len(pred_fake)
    total = pred_fake[0][-1].new_zeros(())
    for fake_scale, real_scale in zip(pred_fake, pred_real):
        if len(fake_scale) != len(real_scale):
            raise ValueError(f"fake and real have {len(fake_scale)} and {len(real_scale)} features at one scale")
        for fake, real in zip(fake_scale[:-1], real_scale[:-1]):
            total = total + F.l1_loss(fake, real.detach())
    return total * (lambda_feat / num_d)


class FeatureMatchingLoss(nn.Module):
    """Module form of :func:`feature_matching_loss` with its weight ``lambda_feat`` (official default 10)."""

    def __init__(self, lambda_feat: float = 10.0) -> None:
        super().__init__()
        self.lambda_feat = float(lambda_feat)

    def forward(self, pred_fake: Sequence[Sequence[torch.Tensor]],
                pred_real: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
        return feature_matching_loss(pred_fake, pred_real, self.lambda_feat)
