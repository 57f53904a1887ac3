"""Differentiable augmentation of MobileStyleGAN's distiller (its kornia pipeline, written with affine_grid):
horizontal flip (p 0.5), random affine (p 0.5: rotation within +-20 deg, translation up to 0.1 of the width and
0.3 of the height, scale 0.7-1.2, zero padding) and random erasing (p 0.5: area 2-33 %, aspect 0.3-3.3, value 0).

Randomness comes in as uniform numbers ``u`` [B, NUM_UNIFORMS] (keyed per sample by the caller), so a batch is
augmented the same however it is split over processes and a resumed run repeats it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_UNIFORMS = 12


class DistillAugment(nn.Module):
    """Flip, affine and erasing, each applied per sample with its probability."""

    def __init__(self, p_flip: float = 0.5, p_affine: float = 0.5, p_erase: float = 0.5, degrees: float = 20.0,
                 translate: tuple[float, float] = (0.1, 0.3), scale: tuple[float, float] = (0.7, 1.2),
                 erase_area: tuple[float, float] = (0.02, 0.33), erase_ratio: tuple[float, float] = (0.3, 3.3)) -> None:
        super().__init__()
        self.p_flip, self.p_affine, self.p_erase = float(p_flip), float(p_affine), float(p_erase)
        self.degrees, self.translate, self.scale = float(degrees), tuple(translate), tuple(scale)
        self.erase_area, self.erase_ratio = tuple(erase_area), tuple(erase_ratio)

    def forward(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        u = u.to(x.device, torch.float32)
        if u.shape != (b, NUM_UNIFORMS):
            raise ValueError(f"augment needs uniforms [{b}, {NUM_UNIFORMS}], got {list(u.shape)}")
        lerp = lambda lo, hi, t: lo + (hi - lo) * t  # noqa: E731
        flip = torch.where(u[:, 0] < self.p_flip, -1.0, 1.0)
        on = u[:, 1] < self.p_affine
        angle = torch.where(on, lerp(-self.degrees, self.degrees, u[:, 2]), 0.0) * math.pi / 180
        tx = torch.where(on, lerp(-self.translate[0], self.translate[0], u[:, 3]), 0.0) * 2  # normalised units
        ty = torch.where(on, lerp(-self.translate[1], self.translate[1], u[:, 4]), 0.0) * 2
        s = torch.where(on, lerp(self.scale[0], self.scale[1], u[:, 5]), 1.0)
        # output -> input sampling: undo the affine (p_out = s R p + t), then the flip
        cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
        inv = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1)  # (s R)^-1
        shift = -(inv @ torch.stack([tx, ty], 1)[:, :, None])
        theta = torch.cat([inv, shift], 2)
        theta[:, 0] = theta[:, 0] * flip[:, None]
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        # erasing: a rectangle of the drawn area and aspect ratio at a drawn place
        area = lerp(*self.erase_area, u[:, 7]) * h * w
        ratio = torch.exp(lerp(math.log(self.erase_ratio[0]), math.log(self.erase_ratio[1]), u[:, 8]))
        eh = torch.sqrt(area * ratio).clamp(1, h)
        ew = torch.sqrt(area / ratio).clamp(1, w)
        top = (u[:, 9] * (h - eh + 1)).floor()
        left = (u[:, 10] * (w - ew + 1)).floor()
        rows = torch.arange(h, device=x.device, dtype=torch.float32)[None, :, None]
        cols = torch.arange(w, device=x.device, dtype=torch.float32)[None, None, :]
        inside = ((rows >= top[:, None, None]) & (rows < (top + eh.floor())[:, None, None])
                  & (cols >= left[:, None, None]) & (cols < (left + ew.floor())[:, None, None]))
        erase = inside & (u[:, 6] < self.p_erase)[:, None, None]
        return x * (~erase)[:, None].to(x.dtype)
