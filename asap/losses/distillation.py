"""MobileStyleGAN's multi-scale distillation terms: at every wavelet output of the student, L1 and MSE against the
teacher image resized to that scale, both in pixel space (inverse Haar of the output) and in wavelet space
(forward Haar of the resized teacher image). Summed over scales with weight 1, as the official DistillerLoss."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from asap.nn.wavelets import dwt, idwt


def wavelet_distillation_terms(freqs: Sequence[torch.Tensor], teacher_img: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1 sum, MSE sum) over the student's wavelet outputs ``freqs`` [B,12,r,r] against ``teacher_img``
    [B,3,S,S] resized bilinearly (align_corners=True) to 2r."""
    l1 = teacher_img.new_zeros(())
    l2 = teacher_img.new_zeros(())
    for freq in freqs:
        pred = idwt(freq)
        target = F.interpolate(teacher_img, size=pred.shape[-2:], mode="bilinear", align_corners=True)
        target_freq = dwt(target)
        l1 = l1 + F.l1_loss(pred, target) + F.l1_loss(freq, target_freq)
        l2 = l2 + F.mse_loss(pred, target) + F.mse_loss(freq, target_freq)
    return l1, l2
