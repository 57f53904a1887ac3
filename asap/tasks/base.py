"""The Task protocol: what the shared Trainer asks of every family (after StyleGAN2-ADA's loss/loop split).

A Task owns its networks, losses, optimizers, schedulers and EMA; it lists its phases (name, networks, optimizer,
interval, a forward-only loss callable). The Trainer runs the updates; the Task knows nothing of backward, AMP,
accumulation or processes.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from asap.training.phase import Phase, StepContext  # noqa: F401  (re-exported for tasks)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (recorded for frozen networks read from disk instead of copying them)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Task:
    """Base class: subclasses fill ``networks``/``optimizers``/``schedulers`` and implement the hooks.

    ``networks`` are saved in checkpoints; the Trainer sets ``requires_grad`` on those a phase trains. Networks
    that no phase trains (an EMA copy) stay in eval mode. ``frozen`` holds networks read from a file and never
    trained nor switched to train mode (a distillation teacher): checkpoints record their path and hash instead
    of a copy.
    """

    family: str = "?"
    visual_tag: str = "label_real_fake"   # TensorBoard image tag (train/<tag>, val/<tag>)
    val_visuals: bool = True              # also log visuals of a held-out batch
    data_kinds: tuple[str, ...] | None = None  # the data configs' ``kind`` values it trains on (None: any)
    validates_without_data: bool = False  # evaluate() has metrics of its own (e.g. FID): run it at val_every even
                                          # when the data has no held-out split

    def __init__(self) -> None:
        self.networks: dict[str, nn.Module] = {}
        self.network_configs: dict[str, dict] = {}
        self.frozen: dict[str, tuple[nn.Module, dict[str, str]]] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.device = torch.device("cpu")
        self.notes: list[str] = []

    # -- the Trainer's view -------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "Task":
        self.device = torch.device(device)
        for net in self.networks.values():
            net.to(device)
        for net, _ in self.frozen.values():
            net.to(device)
        return self

    def add_frozen(self, name: str, module: nn.Module, path: str | Path) -> nn.Module:
        """Register a network read from ``path`` that is used but never trained (eval mode, no gradients)."""
        module.eval().requires_grad_(False)
        self.frozen[name] = (module, {"path": str(Path(path).resolve()), "sha256": file_sha256(path)})
        return module

    def external_networks(self) -> dict[str, dict[str, str]]:
        """{name: {"path", "sha256"}} of the frozen networks (what a checkpoint records instead of them)."""
        return {name: dict(rec) for name, (_, rec) in self.frozen.items()}

    def phases(self) -> list[Phase]:
        raise NotImplementedError

    def trained_networks(self) -> list[str]:
        return list(dict.fromkeys(n for p in self.phases() for n in p.networks))

    def end_step(self, step: int, batch_size: int) -> Mapping[str, Any] | None:
        """Called once after every training step's updates (EMA, augmentation control); returns scalars to log."""
        return None

    def learning_rates(self) -> dict[str, float]:
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """An image grid [3,H,W] in [0,1] for TensorBoard."""
        raise NotImplementedError

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Held-out metrics."""
        return {}

    def train(self, mode: bool = True) -> None:
        """Train mode for the networks a phase trains; everything else (EMA copies, frozen networks) stays eval."""
        trained = set(self.trained_networks())
        for name, net in self.networks.items():
            net.train(mode and name in trained)
        for net, _ in self.frozen.values():
            net.eval()

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
