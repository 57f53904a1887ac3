"""Caches of derived tensors (transformed or folded weights): the identity of a tensor's contents, and the cache."""
from __future__ import annotations

from typing import Any, Callable, Hashable, TypeVar

import torch

T = TypeVar("T")


def tensor_key(t: torch.Tensor) -> tuple:
    """Changes when ``t`` is replaced (storage), updated in place (an optimiser step, EMA or ``load_state_dict``
    bump its version), moved, cast or reshaped: a cache keyed on it never serves stale derived values."""
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))


def derived(owner: Any, slot: str, key: Hashable, make: Callable[[], T]) -> T:
    """``make()``, kept in ``owner.__dict__[slot]`` with ``key`` and made again only when the key changes (e.g. a
    ``tensor_key`` of the weight it is derived from). Stored past ``nn.Module.__setattr__``, so a cached tensor is
    neither a parameter nor a buffer."""
    entry = owner.__dict__.get(slot)
    if entry is None or entry[0] != key:
        entry = (key, make())
        owner.__dict__[slot] = entry
    return entry[1]
