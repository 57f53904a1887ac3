#!/usr/bin/env python
"""Train any family through the shared Trainer: python tools/train.py [model=...] [data=...] [key=value ...]."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

import asap.config  # noqa: E402,F401  (resolvers)
from asap.cli import guarded  # noqa: E402


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from asap.training.run import train_from_config

    guarded(train_from_config)(cfg)


if __name__ == "__main__":
    from asap.utils.perf import tune_allocator

    tune_allocator()
    main()
