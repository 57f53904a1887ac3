"""Identity of a tensor's contents for caches of derived tensors (transformed or folded weights)."""
from __future__ import annotations

import torch


def tensor_key(t: torch.Tensor) -> tuple:
    """Changes when ``t`` is replaced (storage), updated in place (an optimiser step, EMA or ``load_state_dict``
    bump its version), moved, cast or reshaped: a cache keyed on it never serves stale derived values."""
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape))
