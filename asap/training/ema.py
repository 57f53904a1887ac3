"""Exponential moving average of a network's weights (the generator an evaluation and a release use).

Two schedules: StyleGAN2's half-life in images with an optional ramp-up (Karras et al.; rosinality counts a fixed
32 images per step), and a plain per-step decay (FastGAN, many others).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class EMA:
    """Keeps ``target``'s parameters an exponential moving average of ``source``'s.

    Give ``half_life_kimg`` (decay per step 0.5 ** (images per step / (1000 * half_life_kimg)), the half-life
    capped at ``rampup`` x images seen so far when ``rampup`` is set; images per step is ``ref_batch`` if given,
    else the real batch) or ``decay`` (a constant per step). ``copy_buffers`` also copies the buffers each update
    (StyleGAN2-ADA does; rosinality averages parameters only).
    """

    def __init__(self, source: nn.Module, target: nn.Module, *, half_life_kimg: float | None = None,
                 rampup: float | None = None, ref_batch: int | None = None, decay: float | None = None,
                 copy_buffers: bool = False) -> None:
        if (half_life_kimg is None) == (decay is None):
            raise ValueError("EMA: give exactly one of half_life_kimg and decay")
        if half_life_kimg is not None and not half_life_kimg > 0:
            raise ValueError(f"EMA: half_life_kimg must be > 0, got {half_life_kimg}")
        if decay is not None and not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA: decay must be in [0, 1), got {decay}")
        if rampup is not None and not rampup > 0:
            raise ValueError(f"EMA: rampup must be > 0, got {rampup}")
        self.source, self.target = source, target
        self.half_life_kimg, self.rampup, self.ref_batch = half_life_kimg, rampup, ref_batch
        self.decay, self.copy_buffers = decay, copy_buffers
        target.requires_grad_(False)

    def beta(self, step: int, batch: int) -> float:
        """Weight of the old average after update number ``step`` (0-based) with ``batch`` images per step."""
        if self.decay is not None:
            return float(self.decay)
        per_step = float(self.ref_batch if self.ref_batch is not None else batch)
        nimg = self.half_life_kimg * 1000.0
        if self.rampup is not None:
            nimg = min(nimg, (step + 1) * per_step * self.rampup)
        return 0.5 ** (per_step / max(nimg, 1e-8))

    @torch.no_grad()
    def update(self, step: int, batch: int) -> float:
        """One averaging step; returns the beta used."""
        beta = self.beta(step, batch)
        for p_ema, p in zip(self.target.parameters(), self.source.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        if self.copy_buffers:
            for b_ema, b in zip(self.target.buffers(), self.source.buffers()):
                b_ema.copy_(b)
        return beta
