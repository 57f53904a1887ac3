"""Adversarial losses of the SPADE family: hinge (default), least squares ('ls'), cross-entropy ('original')
and Wasserstein ('w'), for a single prediction map or a multi-scale discriminator's list of outputs."""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

GAN_MODES = ("hinge", "ls", "original", "w")

Prediction = Union[torch.Tensor, Sequence[Union[torch.Tensor, Sequence[torch.Tensor]]]]


class GANLoss(nn.Module):
    """``loss(pred, target_is_real, for_discriminator)``.

    ``pred`` is a logit map, or a list with one entry per discriminator scale, each a logit map or a list of
    features whose last element is the logit map (as MultiscaleDiscriminator returns). For a list, the loss of
    each scale (mean over its elements) is averaged over the scales, as in the official code.

    Hinge: D real ``mean(relu(1 - x))``, D fake ``mean(relu(1 + x))``, G ``-mean(x)`` (the generator's hinge loss
    only aims at "real"). 'ls': MSE to the target label; 'original': BCE with logits; 'w': ``-+mean(x)``.
    """

    def __init__(self, gan_mode: str = "hinge", target_real_label: float = 1.0,
                 target_fake_label: float = 0.0) -> None:
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode '{gan_mode}' (known: {', '.join(GAN_MODES)})")
        self.gan_mode = gan_mode
        self.target_real_label = float(target_real_label)
        self.target_fake_label = float(target_fake_label)

    def single(self, pred: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        """The loss of one logit map (a scalar)."""
        if self.gan_mode in ("ls", "original"):
            value = self.target_real_label if target_is_real else self.target_fake_label
            target = torch.full_like(pred, value)
            if self.gan_mode == "ls":
                return F.mse_loss(pred, target)
            return F.binary_cross_entropy_with_logits(pred, target)
        if self.gan_mode == "hinge":
            if not for_discriminator:
                if not target_is_real:
                    raise ValueError("the generator's hinge loss only aims at real (target_is_real=True)")
                return -pred.mean()
            return F.relu(1 - pred).mean() if target_is_real else F.relu(1 + pred).mean()
        return -pred.mean() if target_is_real else pred.mean()  # Wasserstein

    def forward(self, pred: Prediction, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        if isinstance(pred, torch.Tensor):
            return self.single(pred, target_is_real, for_discriminator)
        if len(pred) == 0:
            raise ValueError("empty list of discriminator outputs")
        total = 0
        for scale in pred:
            logits = scale if isinstance(scale, torch.Tensor) else scale[-1]
            total = total + self.single(logits, target_is_real, for_discriminator)
        return total / len(pred)


def logistic_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-saturating logistic loss of the discriminator (StyleGAN): softplus(-D(real)) and softplus(D(fake)),
    each averaged over the batch; returned as (real term, fake term) so both can be logged."""
    return F.softplus(-real_logits).mean(), F.softplus(fake_logits).mean()


def logistic_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of the generator: softplus(-D(G(z)))."""
    return F.softplus(-fake_logits).mean()
