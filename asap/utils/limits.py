"""Explicit bounds on what a user file may make us allocate: image pixels, image file bytes, network parameters.

The same limits hold in every reader (datasets, translate, project, checkpoints). They are raised with config keys
(``limits.max_image_pixels=...`` etc., in every tool's config) which set the environment variables below, so that
DataLoader worker processes see the same values.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

DEFAULTS = {
    "max_image_pixels": 50_000_000,      # e.g. 8192x6104; a 10000x10000 label map (2.9 GB as ids) is refused
    "max_image_bytes": 256 * 2**20,      # 256 MiB per image file
    "max_parameters": 2_000_000_000,     # a network built from a checkpoint's recorded config (8 GB of float32)
}
ENV = {k: f"ASAP_{k.upper()}" for k in DEFAULTS}


def get(name: str) -> int:
    """The current value of limit ``name`` (environment override, else the default)."""
    raw = os.environ.get(ENV[name])
    if raw is None:
        return DEFAULTS[name]
    try:
        return int(float(raw))
    except ValueError:
        return DEFAULTS[name]


def apply(limits: Mapping[str, Any] | None) -> None:
    """Set the limits from a config node ``{max_image_pixels: N, ...}`` (validated: positive integers)."""
    from asap.errors import AsapError

    for name, value in dict(limits or {}).items():
        if name not in DEFAULTS:
            raise AsapError(f"limits.{name}: unknown limit (known: {', '.join(DEFAULTS)})")
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise AsapError(f"limits.{name}={value!r}: must be a positive integer")
        os.environ[ENV[name]] = str(int(value))


def describe(name: str) -> str:
    """'the limit of N (raise it with limits.NAME=...)' for error messages."""
    return f"the limit of {get(name):,} (raise it with limits.{name}=N)"
