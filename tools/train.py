#!/usr/bin/env python
"""Train any family through the shared Trainer: python tools/train.py [model=...] [data=...] [key=value ...].

Several processes (GPUs, or CPU processes with gloo): torchrun --nproc_per_node=N tools/train.py [...]
"""
from __future__ import annotations

import datetime
import os
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


def join_torchrun_job() -> None:
    """Under torchrun: join the process group before Hydra makes the run folder, so that every process uses rank
    0's start time (one run folder) and only rank 0 writes Hydra's config copy and log file."""
    from asap.cli import fail
    from asap.errors import AsapError
    from asap.training import distributed

    if not distributed.env_from_torchrun().enabled:
        return
    device = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("trainer.device=")), "auto")
    try:
        env, _ = distributed.init(device)
    except AsapError as e:
        fail(str(e))
    stamp = distributed.broadcast_object(datetime.datetime.now().isoformat())
    os.environ["ASAP_RUN_TIME"] = stamp
    if not env.is_main:
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def check_run_folder() -> None:
    """Hydra makes the run folder before any of our code runs and reports a failure with a traceback: check
    first that the folder (hydra.run.dir, else under trainer.outputs_root) can be made, and say so in one line."""
    from asap.cli import fail

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    folder = Path(args.get("hydra.run.dir") or args.get("trainer.outputs_root") or "outputs")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError("not writable")
    except OSError as e:
        fail(f"cannot create the run folder {folder}: {e.strerror or e}")


if __name__ == "__main__":
    from asap.utils.perf import tune_allocator

    tune_allocator()
    check_run_folder()
    join_torchrun_job()
    main()
