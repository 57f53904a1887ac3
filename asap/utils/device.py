"""Device choice from config: 'auto' picks CUDA when present, else CPU."""
from __future__ import annotations

import torch

from asap.errors import AsapError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> torch.device; asking for CUDA without one is a clear error."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise AsapError(f"unknown device '{spec}' (auto, cpu, cuda, cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AsapError(f"device '{spec}' requested but CUDA is not available on this machine (use device=auto or cpu)")
    return dev
