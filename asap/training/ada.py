"""The adaptive augmentation probability controller of ADA (Karras et al. 2020, "Training GANs with Limited Data").

The overfitting heuristic r_t = E[sign(D(real))] is collected over ``interval`` D steps; then p moves by
batch * interval / (speed_kimg * 1000) towards r_t == target (up while D is too sure about reals), clipped to
[0, 1]. Under several processes the sign sums are added over all of them before p moves, so every process keeps
the same p.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch


class AdaController:
    """Tunes ``augment.p`` (a 0-dim tensor buffer) from the signs of D's outputs on real images."""

    def __init__(self, augment: Any, target: float = 0.6, interval: int = 4, speed_kimg: float = 500.0,
                 adaptive: bool = True) -> None:
        if not 0.0 < target < 1.0:
            raise ValueError(f"ADA: target must be in (0, 1), got {target}")
        if int(interval) != interval or interval < 1:
            raise ValueError(f"ADA: interval must be an integer >= 1, got {interval}")
        if not (speed_kimg > 0 and math.isfinite(speed_kimg)):
            raise ValueError(f"ADA: speed_kimg must be > 0, got {speed_kimg}")
        self.augment = augment
        self.target, self.interval, self.speed_kimg = float(target), int(interval), float(speed_kimg)
        self.adaptive = bool(adaptive)
        self.sign_sum, self.sign_count, self.calls = 0.0, 0.0, 0
        self.rt = float("nan")

    @property
    def p(self) -> float:
        return float(self.augment.p)

    @torch.no_grad()
    def accumulate(self, real_logits: torch.Tensor) -> None:
        """Add sign(D(real)) of one batch."""
        s = real_logits.detach().float()
        self.sign_sum += float(torch.sign(s).sum())
        self.sign_count += float(s.numel())

    @torch.no_grad()
    def update(self, batch_size: int) -> float | None:
        """Call once per D step with the global batch; every ``interval`` calls, measure r_t and move p.

        Returns r_t when it was measured (also with adaptive=False, for logging), else None.
        """
        self.calls += 1
        if self.calls % self.interval:
            return None
        total, count = self.sign_sum, self.sign_count
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            t = torch.tensor([total, count], dtype=torch.float64)
            if torch.distributed.get_backend() == "nccl":
                t = t.cuda()
            torch.distributed.all_reduce(t)
            total, count = float(t[0]), float(t[1])
        self.sign_sum, self.sign_count = 0.0, 0.0
        if count <= 0:
            return None
        rt = total / count
        self.rt = rt
        if self.adaptive and rt != self.target:
            step = math.copysign(1.0, rt - self.target) * batch_size * self.interval / (self.speed_kimg * 1000.0)
            self.augment.p.fill_(min(max(self.p + step, 0.0), 1.0))
        return rt

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": self.sign_sum, "sign_count": self.sign_count, "calls": self.calls,
                "rt": self.rt}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.augment.p.fill_(float(state["p"]))
        self.sign_sum, self.sign_count = float(state["sign_sum"]), float(state["sign_count"])
        self.calls, self.rt = int(state["calls"]), float(state["rt"])
