"""Lazy regularisation (StyleGAN2, Karras et al. 2020, Appendix B): a regulariser computed every k-th step only.

Its loss is weighted by k, and the optimiser that also steps the main loss sees k + 1 updates per k steps, so
Adam's lr and betas are corrected by c = k / (k + 1): lr * c and betas ** c, as the official code does.
"""
from __future__ import annotations

from typing import Iterable

import torch


def lazy_ratio(interval: int) -> float:
    """c = k / (k + 1) for a regulariser run every k steps (1 when k <= 0: no lazy phase)."""
    return interval / (interval + 1) if interval > 0 else 1.0


def correct_optimizer(optimizer: torch.optim.Optimizer, interval: int,
                      schedulers: Iterable[object] = ()) -> float:
    """Apply the lazy correction to ``optimizer`` once (lr * c, betas ** c); schedulers that drive it get their
    base lrs scaled too. Calling it again on the same optimizer does nothing. Returns c."""
    c = lazy_ratio(interval)
    if getattr(optimizer, "_asap_lazy_interval", None) is not None:
        return c
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * c
        if "initial_lr" in group:
            group["initial_lr"] = group["initial_lr"] * c
        if "betas" in group:
            b1, b2 = group["betas"]
            group["betas"] = (b1 ** c, b2 ** c)
    for sched in schedulers:
        if getattr(sched, "optimizer", None) is optimizer and hasattr(sched, "base_lrs"):
            sched.base_lrs = [lr * c for lr in sched.base_lrs]
    optimizer._asap_lazy_interval = interval
    return c
