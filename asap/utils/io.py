"""Atomic file writes: a crash or a bad input never leaves a half-written checkpoint or image behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically (temp file, fsync, rename)."""
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return atomic_write(path, _write)


def save_png(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 HxW or HxWx3 (or uint16 HxW) array as PNG atomically."""
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
