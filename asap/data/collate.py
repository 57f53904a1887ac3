"""Batch collation that tolerates bad samples: None items (datasets built with ``skip_bad``) are dropped and
counted in ``batch["skipped"]``."""
from __future__ import annotations

from typing import Any, Sequence

from torch.utils.data import default_collate


def collate(batch: Sequence[Any]) -> dict[str, Any] | None:
    """``default_collate`` of the non-None items plus ``skipped`` (int, how many were None); None when every
    item was None."""
    good = [b for b in batch if b is not None]
    if not good:
        return None
    out = default_collate(good)
    out["skipped"] = len(batch) - len(good)
    return out
