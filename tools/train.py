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
    first, without creating anything, that the folder (hydra.run.dir, else under trainer.outputs_root) could be
    made, and say so in one line."""
    from asap.cli import fail
    from asap.errors import AsapError
    from asap.utils.io import check_output_dir

    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    folder = Path(args.get("hydra.run.dir") or args.get("trainer.outputs_root") or "outputs")
    try:
        check_output_dir(folder)
    except AsapError as e:
        fail(str(e).replace("output folder", "run folder"))


def check_config_and_lock() -> None:
    """Before Hydra makes or touches the run folder: validate the composed config (one line naming a bad key,
    value or model/data pair), then take the run folder's lock, so that a second run into the same folder is
    refused before it writes anything there (rank 0 only under torchrun)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from asap.cli import CONF_DIR, compose, fail, one_line
    from asap.config_check import validate
    from asap.errors import AsapError
    from asap.training import distributed
    from asap.training.lock import lock_run_dir

    overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    try:
        cfg = compose("train", overrides, return_hydra_config=True)
        validate("train", cfg, overrides, CONF_DIR)
        if distributed.env_from_torchrun().rank == 0:
            lock_run_dir(Path(str(OmegaConf.select(cfg, "hydra.run.dir"))))
    except AsapError as e:
        fail(one_line(e))
    except OmegaConfBaseException as e:
        fail(f"bad configuration: {one_line(e)}")


if __name__ == "__main__":
    check_run_folder()
    join_torchrun_job()
    check_config_and_lock()
    main()
