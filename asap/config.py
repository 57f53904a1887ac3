"""OmegaConf resolvers used by the Hydra tree (registered on import; idempotent)."""
from __future__ import annotations

from omegaconf import OmegaConf


def _downsampling(crop_size: int, aspect_ratio: float) -> int:
    """ASAPNet's total downsampling S = crop_size // (16 * aspect_ratio), as the official code computes it."""
    return int(int(crop_size) // (16 * float(aspect_ratio)))


def register_resolvers() -> None:
    for name, fn in (("asap.not", lambda x: not bool(x)),
                     ("asap.downsampling", _downsampling),
                     ("asap.min", lambda a, b: min(a, b)),
                     ("asap.add", lambda a, b: a + b)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
