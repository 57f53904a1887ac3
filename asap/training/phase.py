"""Phases and step contexts: what one kind of update is, and the randomness it may draw.

After NVIDIA's StyleGAN2-ADA split (training/loss.py + training_loop.py): a family's loss callables only run
forward and return a loss; the Trainer zeroes gradients, runs backward (scaled for AMP, accumulated over
micro-batches, averaged over processes), clips, steps the optimiser and toggles ``requires_grad`` so that a
phase never computes gradients for networks it does not update.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

# a loss callable: (batch, context) -> loss, or (loss, {name: scalar to log})
LossFn = Callable[[Mapping[str, Any], "StepContext"], "torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]"]


@dataclass(frozen=True)
class Phase:
    """One kind of update, run at every step where ``step % interval == 0``.

    ``networks`` are the task's networks this phase trains (the only ones with ``requires_grad`` during it),
    ``optimizer`` the task's optimiser that steps them. ``lazy=True`` marks lazy regularisation (StyleGAN2): the
    loss is weighted by ``interval`` and the optimiser's Adam lr/betas are corrected by c = interval/(interval+1).
    ``mixed_precision=False`` keeps the phase in float32 under ``trainer.precision=bf16|16-mixed``.
    """

    name: str
    loss: LossFn | None = None
    networks: Sequence[str] = ()
    optimizer: str | None = None
    interval: int = 1
    lazy: bool = False
    mixed_precision: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "networks", tuple(self.networks))
        if int(self.interval) != self.interval or self.interval < 1:
            raise ValueError(f"phase {self.name}: interval must be an integer >= 1, got {self.interval}")
        if self.loss is not None and (self.optimizer is None or not self.networks):
            raise ValueError(f"phase {self.name}: a phase with a loss names its networks and its optimizer")

    def active(self, step: int) -> bool:
        return step % self.interval == 0


def unpack_loss(out: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """A loss callable's return value -> (loss, scalars to log)."""
    if isinstance(out, tuple):
        loss, logs = out
        return loss, dict(logs)
    return out, {}


def _key(*parts: int | str) -> int:
    """A 64-bit seed from integers and names through numpy's SeedSequence (well mixed, no collisions by sum)."""
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, np.uint32).view(np.uint64)[0] >> np.uint64(1))


@dataclass
class StepContext:
    """What a loss callable knows about the update it is part of, and keyed random numbers.

    ``positions`` are the places of this micro-batch's samples in the step's global batch (0..batch_size-1), the
    same whatever the number of processes or accumulation rounds. Draws made through :meth:`randn` are keyed by
    (seed, step, phase, stream, position), and :meth:`generator` by (seed, step, phase, stream): so N processes
    with batch b draw exactly what one process with batch N*b draws, and a resumed run draws what it would have.
    """

    step: int
    phase: str
    seed: int
    positions: torch.Tensor
    batch_size: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    micro: int = 0
    world_size: int = 1

    @property
    def size(self) -> int:
        """Samples in this micro-batch."""
        return int(self.positions.numel())

    def generator(self, stream: str = "") -> torch.Generator:
        """A CPU generator shared by every sample of this step and phase (e.g. one style-mixing decision)."""
        return torch.Generator().manual_seed(_key(self.seed, self.step, self.phase, stream))

    def _per_sample(self, draw: Callable[..., torch.Tensor], shape: tuple[int, ...], stream: str,
                    dtype: torch.dtype) -> torch.Tensor:
        rows = [draw(shape, generator=torch.Generator().manual_seed(
            _key(self.seed, self.step, self.phase, stream, int(p))), dtype=dtype) for p in self.positions.tolist()]
        out = torch.stack(rows) if rows else torch.empty((0, *shape), dtype=dtype)
        return out.to(self.device)

    def randn(self, *shape: int, stream: str = "", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[size, *shape] standard normal numbers, one independent draw per sample position."""
        return self._per_sample(torch.randn, shape, stream, dtype)

    def rand(self, *shape: int, stream: str = "", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """[size, *shape] uniform numbers in [0, 1), one independent draw per sample position."""
        return self._per_sample(torch.rand, shape, stream, dtype)
