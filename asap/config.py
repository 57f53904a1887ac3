"""OmegaConf resolvers used by the Hydra tree (registered on import; idempotent)."""
from __future__ import annotations

import datetime
import os

from omegaconf import OmegaConf

_RUN_TIME: datetime.datetime | None = None


def _run_time(fmt: str) -> str:
    """The run's start time, formatted: fixed once per process (no midnight race between date and time), and
    shared by all processes of a torchrun job through ASAP_RUN_TIME (tools/train.py sets it from rank 0)."""
    global _RUN_TIME
    if _RUN_TIME is None:
        stamp = os.environ.get("ASAP_RUN_TIME")
        _RUN_TIME = datetime.datetime.fromisoformat(stamp) if stamp else datetime.datetime.now()
    return _RUN_TIME.strftime(fmt)


def _downsampling(crop_size: int, aspect_ratio: float) -> int:
    """ASAPNet's total downsampling S = crop_size // (16 * aspect_ratio), as the official code computes it."""
    return int(int(crop_size) // (16 * float(aspect_ratio)))


def _image_size(preprocess_mode: str, crop_size: int, aspect_ratio: float) -> list[int]:
    """[H, W] the model sees for a data preset (asap.data.transforms.output_size)."""
    from asap.data.transforms import output_size
    return output_size(str(preprocess_mode), int(crop_size), float(aspect_ratio))


def _synthetic_baseline(root: str, generate=None) -> float:
    """Per-class-mean-colour held-out PSNR of the synthetic data (generated on first use)."""
    from asap.data.synthetic import ensure_and_baseline
    gen = OmegaConf.to_container(generate, resolve=True) if OmegaConf.is_config(generate) else generate
    return ensure_and_baseline(root, gen)


def register_resolvers() -> None:
    for name, fn in (("asap.not", lambda x: not bool(x)),
                     ("asap.downsampling", _downsampling),
                     ("asap.min", lambda a, b: min(a, b)),
                     ("asap.add", lambda a, b: a + b),
                     ("asap.image_size", _image_size),
                     ("asap.synthetic_baseline", _synthetic_baseline),
                     ("asap.run_time", _run_time)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
