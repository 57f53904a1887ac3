"""Per-image fidelity metrics shared by training validation, tools/evaluate.py and the synthetic baseline."""
from __future__ import annotations

import numpy as np
import torch

MAX_PSNR_DB = 100.0  # reported for identical images (MSE clamped at 1e-10)


def psnr(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
         reduction: str = "mean") -> torch.Tensor | float:
    """PSNR in dB of images in [-1, 1] ([3,H,W] or [N,3,H,W]): both are mapped to [0, 1] and clamped, the MSE is
    taken per image (data range 1), and ``reduction="mean"`` averages the per-image PSNRs (a float);
    ``"none"`` returns them as a float64 tensor [N]."""
    p = torch.as_tensor(pred).detach().to(torch.float64)
    t = torch.as_tensor(target).detach().to(device=p.device, dtype=torch.float64)
    if p.shape != t.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if p.dim() == 3:
        p, t = p.unsqueeze(0), t.unsqueeze(0)
    p = ((p + 1.0) / 2.0).clamp(0.0, 1.0)
    t = ((t + 1.0) / 2.0).clamp(0.0, 1.0)
    mse = (p - t).pow(2).flatten(1).mean(dim=1).clamp_min(1e-10)
    per_image = 10.0 * torch.log10(1.0 / mse)
    if reduction == "none":
        return per_image
    if reduction == "mean":
        return float(per_image.mean())
    raise ValueError(f"psnr: reduction={reduction!r} is not 'mean' or 'none'")


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of images in [-1, 1] ([N,3,H,W]), both mapped to [0, 1] and clamped:
    torchmetrics' implementation (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, data range 1); float64 [N]."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    p = ((pred.detach().double() + 1) / 2).clamp(0, 1)
    t = ((target.detach().double().to(p.device) + 1) / 2).clamp(0, 1)
    return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
