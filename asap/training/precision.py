"""Mixed precision: ``trainer.precision = 32 | bf16 | 16-mixed``.

- ``32``: float32 everywhere.
- ``bf16``: the loss forward under bfloat16 autocast (CPU and CUDA); weights, gradients and optimiser states stay
  float32. bfloat16 has float32's range, so no loss scaling is needed.
- ``16-mixed``: float16 autocast with a dynamic GradScaler per optimiser (CUDA only: CPU float16 kernels are slow
  or missing). A step whose gradients overflow is skipped and the scale halves.

Phases marked ``mixed_precision=False`` (StyleGAN2's R1 and path-length regularisers, whose second-order gradients
lose too much in half precision, as the official code keeps them in float32) always run in float32.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from asap.errors import AsapError

_ALIASES = {"32": "32", "32-true": "32", "fp32": "32", "float32": "32",
            "bf16": "bf16", "bf16-mixed": "bf16", "bfloat16": "bf16",
            "16-mixed": "16-mixed", "16": "16-mixed", "fp16": "16-mixed", "float16": "16-mixed"}


def parse_precision(value: Any) -> str:
    """Normalise a config value to '32', 'bf16' or '16-mixed' (one-line error otherwise)."""
    key = str(value).strip().lower()
    if key not in _ALIASES:
        raise AsapError(f"trainer.precision={value!r}: expected 32, bf16 or 16-mixed")
    return _ALIASES[key]


class Precision:
    """Autocast context and per-optimiser gradient scalers for one run."""

    def __init__(self, value: Any, device: torch.device) -> None:
        self.mode = parse_precision(value)
        self.device = torch.device(device)
        if self.mode == "16-mixed" and self.device.type != "cuda":
            raise AsapError("trainer.precision=16-mixed needs a CUDA device (float16 autocast with loss scaling); "
                            "use trainer.precision=bf16 on CPU")
        self.dtype = {"32": None, "bf16": torch.bfloat16, "16-mixed": torch.float16}[self.mode]
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    @contextlib.contextmanager
    def autocast(self, enabled: bool = True) -> Iterator[None]:
        """Autocast for a loss forward (a no-op for 32 or when the phase opts out)."""
        if self.dtype is None or not enabled:
            with torch.autocast(self.device.type, enabled=False):
                yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield

    def scaler(self, optimizer: str) -> torch.amp.GradScaler:
        """The gradient scaler of one optimiser (disabled, i.e. pass-through, unless 16-mixed)."""
        if optimizer not in self.scalers:
            self.scalers[optimizer] = torch.amp.GradScaler(self.device.type, enabled=self.mode == "16-mixed")
        return self.scalers[optimizer]

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "scalers": {k: s.state_dict() for k, s in self.scalers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, s in state.get("scalers", {}).items():
            if s and self.mode == "16-mixed":
                self.scaler(k).load_state_dict(s)
