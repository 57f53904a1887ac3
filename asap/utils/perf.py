"""Process-level speed settings applied by the command-line tools."""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def tune_allocator(threshold: int = 1 << 30) -> bool:
    """Keep glibc from mmap-ing and unmapping every large tensor buffer.

    PyTorch frees and re-allocates the same large activations every step; with glibc's defaults each one is a
    fresh mmap whose pages the kernel must fault in and zero again, which on CPU training can cost as much time
    as the arithmetic. Raising the mmap and trim thresholds lets the heap reuse them. Linux/glibc only; set
    ASAP_NO_MALLOC_TUNING=1 to skip. Returns whether the setting was applied.
    """
    global _done
    if _done or not sys.platform.startswith("linux") or os.environ.get("ASAP_NO_MALLOC_TUNING"):
        return _done
    try:
        libc = ctypes.CDLL("libc.so.6")
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        _done = False
    return _done
