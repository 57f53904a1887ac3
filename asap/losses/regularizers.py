"""Gradient regularisers of StyleGAN2: the R1 penalty on real images and path-length regularisation of G."""
from __future__ import annotations

import math
from typing import Callable

import torch


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||d D(x) / d x||^2 at real images x (Mescheder et al. 2018); ``real_images`` must
    require grad and ``real_logits`` be computed from it. Differentiable (for the D update)."""
    grad, = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def path_length_penalty(images: torch.Tensor, latents: torch.Tensor, mean_path_length: torch.Tensor | float,
                        decay: float = 0.01, noise: torch.Tensor | None = None,
                        batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length regulariser.

    With y ~ N(0, I) / sqrt(H*W), the path length of a sample is ||J_w^T y||, the gradient of sum(img * y) with
    respect to its W+ latents, taken as sqrt(mean over layers of the squared norm per layer). The running mean
    ``a`` moves by ``decay`` towards the batch mean; the penalty is mean((length - a)^2).
    ``noise`` gives the N(0, I) draw (default: a fresh one); ``batch_mean`` replaces ``lengths.mean()`` (e.g. a mean
    over several processes, so that their running means stay equal).
    Returns (penalty (differentiable), the new running mean (detached), the path lengths (detached)).
    """
    if noise is None:
        noise = torch.randn_like(images)
    y = noise / math.sqrt(images.shape[2] * images.shape[3])
    grad, = torch.autograd.grad((images * y).sum(), latents, create_graph=True)
    lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    mean = torch.as_tensor(mean_path_length, dtype=lengths.dtype, device=lengths.device)
    new_mean = mean + decay * ((batch_mean(lengths) if batch_mean is not None else lengths.mean()) - mean)  # not detached here, as in the reference codes
    penalty = (lengths - new_mean).pow(2).mean()
    return penalty, new_mean.detach(), lengths.detach()
