"""The Task protocol: what the shared Trainer asks of every family (after StyleGAN2-ADA's phase design).

A Task owns its networks, losses, optimizers, schedulers and EMA; it lists its phases ("G", "D", "Dreg", ...)
with an interval each, and runs one phase on a batch. The Trainer knows nothing else about GANs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Phase:
    """One kind of update; it runs at every step where ``step % interval == 0``."""

    name: str
    interval: int = 1


class Task:
    """Base class: subclasses fill ``networks``/``optimizers``/``schedulers`` and implement the hooks."""

    family: str = "?"
    visual_tag: str = "label_real_fake"   # TensorBoard image tag (train/<tag>, val/<tag>)
    val_visuals: bool = True              # also log visuals of a held-out batch

    def __init__(self) -> None:
        self.networks: dict[str, nn.Module] = {}
        self.network_configs: dict[str, dict] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.device = torch.device("cpu")

    # -- the Trainer's view -------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "Task":
        self.device = device
        for net in self.networks.values():
            net.to(device)
        return self

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def run_phase(self, phase: Phase, batch: Mapping[str, Any], step: int) -> dict[str, torch.Tensor]:
        """Forward, backward and optimizer step of ``phase``; returns detached scalars to log."""
        raise NotImplementedError

    def end_step(self, step: int) -> None:
        """Called once after every training step (schedulers, EMA)."""
        for sched in self.schedulers.values():
            sched.step()

    def learning_rates(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def batch_size(self, batch: Mapping[str, Any]) -> int:
        return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])

    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """An image grid [3,H,W] in [0,1] for TensorBoard."""
        raise NotImplementedError

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Held-out metrics."""
        return {}

    def train(self, mode: bool = True) -> None:
        for net in self.networks.values():
            net.train(mode)

    # -- persistence --------------------------------------------------------------------------------------
    def checkpoint_networks(self) -> dict[str, tuple[nn.Module, dict]]:
        return {name: (net, self.network_configs[name]) for name, net in self.networks.items()}

    def load_networks(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        for name, net in self.networks.items():
            if name in entries:
                net.load_state_dict(entries[name]["state_dict"])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])


def linear_decay(total_steps: int, decay_start: float) -> "callable":
    """LR factor: 1 until ``decay_start * total_steps``, then linear to 0 at ``total_steps`` (official niter_decay)."""
    start = int(total_steps * decay_start)
    span = max(1, total_steps - start)

    def factor(step: int) -> float:
        return 1.0 if step < start else max(0.0, 1.0 - (step - start) / span)
    return factor
