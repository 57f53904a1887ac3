"""The Trainer shared by all families: loop, devices, progress, TensorBoard, validation, checkpoints, resume.

It iterates the Task's phases by interval and knows nothing about what a phase does.
"""
from __future__ import annotations

import logging
import math
import random
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from asap.errors import AsapError
from asap.pretrained.common import read_file
from asap.pretrained.native import make_checkpoint
from asap.tasks.base import Task
from asap.training.checkpoint import checkpoint_path, find_resume, prune
from asap.training.loader import ResumableLoader
from asap.utils.io import save_torch

log = logging.getLogger("asap.train")


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors/lists (readable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_gauss": random.getstate()[2],
             "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def user_error_from(e: BaseException) -> str | None:
    """The one-line message of an AsapError, also when a DataLoader worker re-raised it with its traceback."""
    text = str(e)
    for line in reversed(text.splitlines()):
        if line.startswith("asap.errors.AsapError: "):
            return line[len("asap.errors.AsapError: "):]
    if isinstance(e, AsapError):
        return text.splitlines()[0] if text else "error"
    return None


class Trainer:
    """Runs a Task for ``max_steps`` steps; writes TensorBoard events and checkpoints into ``run_dir``."""

    def __init__(self, task: Task, train_set: Dataset, val_set: Dataset | None, run_dir: str | Path, *,
                 max_steps: int, batch_size: int, seed: int = 0, num_workers: int = 0, collate_fn=None,
                 log_every: int = 50, image_every: int = 500, val_every: int = 1000, val_batches: int | None = None,
                 ckpt_every: int = 1000, keep_last: int = 3, resume: Any = None, outputs_root: str | Path | None = None,
                 config: Mapping[str, Any] | None = None, progress: bool = True, stop_after: int | None = None) -> None:
        for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("log_every", log_every),
                        ("ckpt_every", ckpt_every)):
            if int(v) < 1:
                raise AsapError(f"trainer.{name} must be >= 1, got {v}")
        self.task, self.train_set, self.val_set = task, train_set, val_set
        self.run_dir = Path(run_dir)
        self.max_steps, self.batch_size, self.seed = int(max_steps), int(batch_size), int(seed)
        self.num_workers, self.collate_fn = int(num_workers), collate_fn
        self.log_every, self.image_every, self.val_every = int(log_every), int(image_every), int(val_every)
        self.val_batches, self.ckpt_every, self.keep_last = val_batches, int(ckpt_every), int(keep_last)
        self.resume, self.outputs_root = resume, outputs_root
        self.config = dict(config or {})
        self.progress = progress
        self.stop_after = stop_after  # for tests: stop (as if killed) after this many steps
        self.step = 0
        self.skipped = 0
        self.last_checkpoint: Path | None = None

    # -- checkpoints ----------------------------------------------------------------------------------------
    def save(self, loader: ResumableLoader) -> Path:
        ckpt = make_checkpoint(
            self.task.family, self.task.checkpoint_networks(), step=self.step, config=self.config,
            training={"task": self.task.state_dict(), "rng": rng_state(), "data": loader.state_dict(),
                      "skipped": self.skipped})
        path = save_torch(ckpt, checkpoint_path(self.run_dir, self.step))
        prune(self.run_dir, self.keep_last)
        self.last_checkpoint = path
        return path

    def restore(self, path: Path, loader: ResumableLoader) -> None:
        ckpt = read_file(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "asap" or "training" not in ckpt:
            raise AsapError(f"{path}: not a training checkpoint of this toolkit (cannot resume from it)")
        if ckpt.get("family") != self.task.family:
            raise AsapError(f"{path}: a {ckpt.get('family')} checkpoint cannot resume a {self.task.family} run")
        try:
            self.task.load_networks(ckpt["networks"])
            self.task.load_state_dict(ckpt["training"]["task"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise AsapError(f"{path}: does not match this run's model/config ({str(e).splitlines()[0]})") from e
        loader.load_state_dict(ckpt["training"]["data"])
        set_rng_state(ckpt["training"]["rng"])
        self.step = int(ckpt["step"])
        self.skipped = int(ckpt["training"].get("skipped", 0))
        self.last_checkpoint = path

    # -- the loop ---------------------------------------------------------------------------------------------
    def _val_iter(self):
        if self.val_set is None:
            return []
        loader = DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers,
                            collate_fn=self.collate_fn, generator=torch.Generator().manual_seed(self.seed))
        # (a private generator: starting the iterator would otherwise draw from the training RNG)
        for i, batch in enumerate(loader):
            if self.val_batches is not None and i >= int(self.val_batches):
                break
            if batch is not None:
                yield self._to_device(batch)

    def _to_device(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        dev = self.task.device
        return {k: (v.to(dev, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def validate(self) -> dict[str, float]:
        self.task.train(False)
        try:
            with torch.no_grad():
                return self.task.evaluate(self._val_iter())
        finally:
            self.task.train(True)

    def fit(self) -> Path | None:
        """Train to ``max_steps`` (or resume there); returns the last checkpoint written."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        seed_everything(self.seed)
        loader = ResumableLoader(self.train_set, self.batch_size, self.seed, self.num_workers, self.collate_fn)
        resume_from = find_resume(self.resume, self.run_dir, self.outputs_root)
        if resume_from is not None:
            if self.run_dir.resolve() not in resume_from.resolve().parents:
                self.run_dir = resume_from.parent.parent  # continue the earlier run in its own folder
            self.restore(resume_from, loader)
            log.info("resumed from %s at step %d", resume_from, self.step)
        elif self.resume == "auto":
            log.info("trainer.resume=auto: no earlier checkpoint found, starting a new run")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None)
        phases = self.task.phases()
        self.task.train(True)
        fixed_vis = None
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        seen, t_window = 0, time.perf_counter()
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()
        redirect.__enter__()  # log lines print above the progress bar instead of through it
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc=f"{self.task.family}", unit="step")
        steps_this_call = 0
        try:
            while self.step < self.max_steps:
                try:
                    batch = next(loader)
                except Exception as e:  # a bad sample (or a DataLoader worker that died on one)
                    msg = user_error_from(e)
                    if msg is None:
                        raise
                    raise AsapError(f"{msg}; stopped at step {self.step}" + self._last_ckpt_note()) from e
                if batch is None:
                    self.skipped += self.batch_size
                    continue
                self.skipped += int(batch.pop("skipped", 0) or 0)
                batch = self._to_device(batch)
                if fixed_vis is None:
                    fixed_vis = {k: (v[:4] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
                for phase in phases:
                    if self.step % phase.interval:
                        continue
                    out = self.task.run_phase(phase, batch, self.step)
                    for k, v in out.items():
                        v = float(v)
                        if not math.isfinite(v):
                            raise AsapError(f"loss {k} is {v} at step {self.step}; stopped"
                                            + self._last_ckpt_note())
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                self.task.end_step(self.step)
                self.step += 1
                steps_this_call += 1
                seen += self.task.batch_size(batch)
                bar.update(1)
                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    dt = time.perf_counter() - t_window
                    means = {k: sums[k] / counts[k] for k in sums}
                    for k, v in means.items():
                        writer.add_scalar(k, v, self.step)
                    for k, v in self.task.learning_rates().items():
                        writer.add_scalar(f"lr/{k}", v, self.step)
                    writer.add_scalar("perf/images_per_s", seen / max(dt, 1e-9), self.step)
                    writer.add_scalar("data/skipped", self.skipped, self.step)
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(means.items())[:4]})
                    sums, counts, seen, t_window = {}, {}, 0, time.perf_counter()
                if self.image_every and (self.step % self.image_every == 0 or self.step == self.max_steps):
                    self.task.train(False)
                    with torch.no_grad():
                        writer.add_image(f"train/{self.task.visual_tag}", self.task.visuals(fixed_vis), self.step)
                    self.task.train(True)
                if self.val_set is not None and self.val_every and (
                        self.step % self.val_every == 0 or self.step == self.max_steps):
                    metrics = self.validate()
                    for k, v in metrics.items():
                        if isinstance(v, (int, float)):
                            writer.add_scalar(f"val/{k}", v, self.step)
                    if metrics:
                        log.info("step %d validation: %s", self.step,
                                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
                    vis = self._val_visual() if self.task.val_visuals else None
                    if vis is not None:
                        writer.add_image(f"val/{self.task.visual_tag}", vis, self.step)
                if self.step % self.ckpt_every == 0 or self.step == self.max_steps:
                    self.save(loader)
                    writer.flush()
                if self.stop_after is not None and steps_this_call >= self.stop_after:
                    break
        finally:
            bar.close()
            redirect.__exit__(None, None, None)
            writer.close()
        if self.skipped:
            log.info("skipped %d bad sample(s) (data.skip_bad=true)", self.skipped)
        return self.last_checkpoint

    def _val_visual(self) -> torch.Tensor | None:
        for batch in self._val_iter():
            self.task.train(False)
            try:
                with torch.no_grad():
                    return self.task.visuals({k: (v[:4] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()})
            finally:
                self.task.train(True)
        return None

    def _last_ckpt_note(self) -> str:
        if self.last_checkpoint is not None:
            return f"; last good checkpoint: {self.last_checkpoint}"
        return "; no checkpoint was written yet"
