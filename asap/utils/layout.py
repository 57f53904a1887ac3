"""Memory-layout tests shared by the CPU fast paths."""
from __future__ import annotations

import torch


def stored_nhwc(t: torch.Tensor) -> bool:
    """Whether ``t`` is laid out channels-last and not also plain contiguous (as one-channel or 1x1 maps are)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
