"""The Trainer shared by all families: the update of every phase (backward, AMP, accumulation, gradient averaging
over processes, clipping, optimiser and scheduler steps, requires_grad toggling, the lazy-regularisation correction),
the loop, devices, progress, TensorBoard, validation, checkpoints, time budget and resume.

It iterates the Task's phases by interval and knows nothing about what a phase's loss computes.
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
from asap.training.lock import is_locked_by_other, lock_run_dir, release_run_dir
from asap.pretrained.native import make_checkpoint
from asap.tasks.base import Task
from asap.training import distributed
from asap.training.checkpoint import checkpoint_path, find_resume, prune, why_not_resumable
from asap.training.lazy import correct_optimizer
from asap.training.loader import IndexLoader, ResumableLoader, derive_seed
from asap.training.phase import Phase, StepContext, unpack_loss
from asap.training.precision import Precision
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


def parse_duration(value: Any) -> float | None:
    """``trainer.max_time``: null, seconds (a number), or ``[DD:]HH:MM:SS`` as Lightning writes it -> seconds."""
    if value in (None, "", "null", "none"):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        parts = str(value).strip().split(":")
        try:
            nums = [float(x) for x in parts]
        except ValueError:
            raise AsapError(f"trainer.max_time={value!r}: expected seconds or [DD:]HH:MM:SS") from None
        if len(nums) not in (1, 3, 4):
            raise AsapError(f"trainer.max_time={value!r}: expected seconds or [DD:]HH:MM:SS")
        seconds = sum(n * m for n, m in zip(reversed(nums), (1, 60, 3600, 86400)))
    if not (seconds > 0 and math.isfinite(seconds)):
        raise AsapError(f"trainer.max_time={value!r}: must be a positive duration")
    return seconds


def prepare_phases(task: Task) -> list[Phase]:
    """The task's phases, checked against its networks and optimisers, with the lazy-regularisation correction
    applied to the optimisers of lazy phases (once per optimiser)."""
    phases = task.phases()
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise AsapError(f"{task.family}: phase names must be unique, got {names}")
    for p in phases:
        if p.loss is None:
            raise AsapError(f"{task.family}: phase {p.name} has no loss")
        if p.optimizer not in task.optimizers:
            raise AsapError(f"{task.family}: phase {p.name} names optimizer {p.optimizer!r}, which the task lacks")
        missing = [n for n in p.networks if n not in task.networks]
        if missing:
            raise AsapError(f"{task.family}: phase {p.name} trains unknown network(s) {missing}")
    for p in phases:
        if p.lazy and p.interval > 1:
            correct_optimizer(task.optimizers[p.optimizer], p.interval, task.schedulers.values())
    return phases


def split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """Split a collated batch into ``parts`` micro-batches along dim 0 (tensors and lists; other values shared)."""
    n = batch_length(batch)
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        out.append({k: (v[a:b] if isinstance(v, (torch.Tensor, list, tuple)) and len(v) == n else v)
                    for k, v in batch.items()})
    return out


def batch_length(batch: Mapping[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return int(v.shape[0])
    raise AsapError("a training batch holds no tensor")


class Trainer:
    """Runs a Task for ``max_steps`` steps; writes TensorBoard events and checkpoints into ``run_dir``.

    ``batch_size`` is the global batch: with N processes (torchrun) each loads batch_size / N samples, and with
    ``accumulate`` = K each process runs its share as K micro-batches whose gradients add up before one optimiser
    step, so the update equals that of one process with the whole batch. ``train_set=None`` runs a task that
    samples its own inputs (its losses get ``{"index": global sample ids}``). ``max_time`` (seconds) stops the run
    early enough for the final validation and checkpoint to fit; it is resumable for the remaining steps.
    """

    def __init__(self, task: Task, train_set: Dataset | None, val_set: Dataset | None, run_dir: str | Path, *,
                 max_steps: int, batch_size: int, seed: int = 0, num_workers: int = 0, collate_fn=None,
                 log_every: int = 50, image_every: int = 500, val_every: int = 1000, val_batches: int | None = None,
                 ckpt_every: int = 1000, keep_last: int = 3, resume: Any = None, outputs_root: str | Path | None = None,
                 config: Mapping[str, Any] | None = None, progress: bool = True, stop_after: int | None = None,
                 accumulate: int = 1, precision: Any = "32", max_time: Any = None, grad_clip: float | None = None,
                 sync_batchnorm: bool = True) -> None:
        for name, v in (("max_steps", max_steps), ("batch_size", batch_size), ("log_every", log_every),
                        ("ckpt_every", ckpt_every), ("accumulate", accumulate)):
            if int(v) < 1:
                raise AsapError(f"trainer.{name} must be >= 1, got {v}")
        self.env = distributed.current()
        if int(batch_size) % self.env.world_size:
            raise AsapError(f"trainer.batch_size={batch_size} is the global batch: it must be divisible by the "
                            f"number of processes ({self.env.world_size})")
        per_process = int(batch_size) // self.env.world_size
        if per_process % int(accumulate):
            raise AsapError(f"trainer.accumulate={accumulate} must divide the per-process batch {per_process} "
                            f"(trainer.batch_size={batch_size} over {self.env.world_size} process(es))")
        if grad_clip is not None and not float(grad_clip) > 0:
            raise AsapError(f"trainer.grad_clip must be > 0 or null, got {grad_clip}")
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
        self.accumulate = int(accumulate)
        self.precision = Precision(precision, task.device)
        self.max_time = parse_duration(max_time)
        self.grad_clip = float(grad_clip) if grad_clip is not None else None
        self.sync_batchnorm = bool(sync_batchnorm)
        self.step = 0
        self.skipped = 0
        self.last_checkpoint: Path | None = None
        self.stopped_by_time = False
        self._trained: list[str] = []
        self._phases: list[Phase] | None = None
        self._nonfinite: str | None = None

    @property
    def is_main(self) -> bool:
        return self.env.is_main

    # -- checkpoints ----------------------------------------------------------------------------------------
    def save(self, loader: Any) -> Path | None:
        """Write a checkpoint (rank 0; every process takes part because the RNG states of all are gathered)."""
        rng_all = distributed.gather_objects(rng_state())
        if not self.is_main:
            return None
        training = {"task": self.task.state_dict(), "rng": rng_all[0], "data": loader.state_dict(),
                    "skipped": self.skipped, "precision": self.precision.state_dict(),
                    "world_size": self.env.world_size}
        if self.env.enabled:
            training["rng_ranks"] = rng_all
        external = self.task.external_networks()
        extra = {"external": external} if external else {}
        ckpt = make_checkpoint(self.task.family, self.task.checkpoint_networks(), step=self.step, config=self.config,
                               training=training, **extra)
        path = save_torch(ckpt, checkpoint_path(self.run_dir, self.step))
        prune(self.run_dir, self.keep_last)
        self.last_checkpoint = path
        return path

    def restore(self, path: Path, loader: Any) -> None:
        ckpt = read_file(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != "asap" or "training" not in ckpt:
            raise AsapError(f"{path}: not a training checkpoint of this toolkit (cannot resume from it)")
        if ckpt.get("family") != self.task.family:
            raise AsapError(f"{path}: a {ckpt.get('family')} checkpoint cannot resume a {self.task.family} run")
        for name, rec in (ckpt.get("external") or {}).items():
            ours = self.task.external_networks().get(name)
            if ours is not None and ours.get("sha256") != rec.get("sha256"):
                raise AsapError(f"{path}: the {name} ({ours.get('path')}) is not the file this run started with "
                                f"(sha256 {str(ours.get('sha256'))[:12]} vs {str(rec.get('sha256'))[:12]} recorded)")
        training = ckpt["training"]
        try:
            self.task.load_networks(ckpt["networks"])
            self.task.load_state_dict(training["task"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise AsapError(f"{path}: does not match this run's model/config ({str(e).splitlines()[0]})") from e
        loader.load_state_dict(training["data"])
        ranks = training.get("rng_ranks")
        if ranks is not None and len(ranks) == self.env.world_size:
            set_rng_state(ranks[self.env.rank])
        else:
            set_rng_state(training["rng"])
        if "precision" in training:
            self.precision.load_state_dict(training["precision"])
        self.step = int(ckpt["step"])
        self.skipped = int(training.get("skipped", 0))
        self.last_checkpoint = path

    def _find_resume(self) -> Path | None:
        """Rank 0 resolves trainer.resume; every process gets its answer."""
        found: Path | None = None
        error: str | None = None
        if self.is_main:
            def accept(path: Path) -> str | None:
                if is_locked_by_other(path.parent.parent):
                    return "that run folder is in use by a running training process"
                return why_not_resumable(path, self.task.family, self.task.network_configs, self.max_steps)
            try:
                found = find_resume(self.resume, self.run_dir, self.outputs_root, accept=accept, log=log.info)
            except AsapError as e:
                error = str(e)
        found, error = distributed.broadcast_object((found, error))
        if error is not None:
            raise AsapError(error)
        return found

    # -- the update -------------------------------------------------------------------------------------------
    def _set_trainable(self, names: tuple[str, ...]) -> None:
        for n in self._trained:
            self.task.networks[n].requires_grad_(n in names)

    def _params(self, phase: Phase) -> list[torch.nn.Parameter]:
        return [p for n in phase.networks for p in self.task.networks[n].parameters()]

    def run_phase(self, phase: Phase, micro_batches: list[dict[str, Any]], positions: list[torch.Tensor],
                  step: int) -> dict[str, float]:
        """One update of ``phase``: forward + backward over the micro-batches, gradient averaging over processes,
        clipping, optimiser step. Returns the scalars to log (means over the micro-batches)."""
        opt = self.task.optimizers[phase.optimizer]
        scaler = self.precision.scaler(phase.optimizer)
        total = sum(int(p.numel()) for p in positions)
        gain = float(phase.interval) if phase.lazy else 1.0
        self._set_trainable(phase.networks)
        logs: dict[str, float] = {}
        try:
            opt.zero_grad(set_to_none=True)
            for m, (mb, pos) in enumerate(zip(micro_batches, positions)):
                ctx = StepContext(step=step, phase=phase.name, seed=self.seed, positions=pos,
                                  batch_size=self.batch_size, device=self.task.device, micro=m,
                                  world_size=self.env.world_size)
                with self.precision.autocast(phase.mixed_precision):
                    loss, scalars = unpack_loss(phase.loss(mb, ctx))
                weight = pos.numel() / total
                value = float(loss.detach())
                if not math.isfinite(value):
                    self._nonfinite = f"loss of phase {phase.name} is {value} at step {step}"
                    return logs
                scaler.scale(loss.float() * (gain * weight)).backward()
                for k, v in scalars.items():
                    logs[k] = logs.get(k, 0.0) + float(v) * weight
            params = self._params(phase)
            distributed.average_gradients(params)
            if self.grad_clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], self.grad_clip)
            scaler.step(opt)
            scaler.update()
        finally:
            self._set_trainable(())
        return logs

    # -- the loop ---------------------------------------------------------------------------------------------
    def _val_iter(self):
        if self.val_set is None:
            return []
        loader = DataLoader(self.val_set, batch_size=max(1, self.batch_size // self.env.world_size), shuffle=False,
                            num_workers=self.num_workers, collate_fn=self.collate_fn,
                            generator=torch.Generator().manual_seed(self.seed))
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

    def _make_loader(self) -> Any:
        if self.train_set is None:
            return IndexLoader(self.batch_size, self.env.rank, self.env.world_size)
        return ResumableLoader(self.train_set, self.batch_size, self.seed, self.num_workers, self.collate_fn,
                               rank=self.env.rank, world_size=self.env.world_size,
                               pin_memory=self.task.device.type == "cuda")

    def setup(self) -> list[Phase]:
        """Check and prepare the task's phases and networks (once): lazy corrections, SyncBatchNorm, equal weights
        in every process, no gradients outside phases."""
        if self._phases is None:
            self._phases = prepare_phases(self.task)
            self._setup_networks(self._phases)
        return self._phases

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """All phases active at ``self.step`` on this process's ``batch``, then schedulers and the task's
        end-of-step hook. Returns the scalars to log; sets ``_nonfinite`` (and skips the rest) on a bad loss.
        Does not advance ``self.step``."""
        phases = self.setup()
        step = self.step
        n_local = batch_length(batch)
        start = self.env.rank * (self.batch_size // self.env.world_size)
        micro = split_batch(batch, self.accumulate)
        positions = list(torch.arange(start, start + n_local).split([batch_length(m) for m in micro]))
        self._nonfinite = None
        logs: dict[str, float] = {}
        for phase in phases:
            if not phase.active(step):
                continue
            logs.update(self.run_phase(phase, micro, positions, step))
            if self._nonfinite:
                return logs
        for sched in self.task.schedulers.values():
            sched.step()
        logs.update({k: float(v) for k, v in (self.task.end_step(step, self.batch_size) or {}).items()})
        return logs

    def _setup_networks(self, phases: list[Phase]) -> None:
        self._trained = list(dict.fromkeys(n for p in phases for n in p.networks))
        if self.env.enabled:
            for n in self._trained:
                net = self.task.networks[n]
                has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
                if has_bn and self.sync_batchnorm and self.task.device.type == "cuda":
                    torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
                    log.info("%s: BatchNorm layers synchronised over %d processes (SyncBatchNorm)", n,
                             self.env.world_size)
                elif has_bn:
                    log.info("%s: BatchNorm statistics are per process (SyncBatchNorm needs CUDA)", n)
            for net in self.task.networks.values():
                distributed.broadcast_module(net)
        self._set_trainable(())

    def fit(self) -> Path | None:
        """Train to ``max_steps`` (or resume there, or stop at ``max_time``); returns the last checkpoint written.
        The run folder is locked against other training processes meanwhile."""
        start_time = time.perf_counter()
        seed_everything(self.seed)
        self.setup()
        locked = []
        if self.is_main:
            locked.append(lock_run_dir(self.run_dir))  # one training process per run folder
        try:
            return self._fit(start_time, locked)
        finally:
            for d in locked:
                if d is not None:
                    release_run_dir(d)

    def _fit(self, start_time: float, locked: list[Path | None]) -> Path | None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        loader = self._make_loader()
        resume_from = self._find_resume()
        if resume_from is not None:
            if self.run_dir.resolve() not in resume_from.resolve().parents:
                self.run_dir = resume_from.parent.parent  # continue the earlier run in its own folder
                if self.is_main:
                    locked.append(lock_run_dir(self.run_dir))
            self.restore(resume_from, loader)
            log.info("resumed from %s at step %d", resume_from, self.step)
        else:
            # every process starts from the same weights but draws its own global random numbers
            seed_everything(derive_seed(self.seed, 7, self.env.rank))
            if self.resume == "auto":
                log.info("trainer.resume=auto: no earlier checkpoint found, starting a new run")
        if self.env.enabled:
            log.info("data parallel: world_size=%d, %d sample(s) per process per step, accumulate=%d",
                     self.env.world_size, self.batch_size // self.env.world_size, self.accumulate)
        writer = None
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None)
        self.task.train(True)
        fixed_vis = None
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        seen, steps_window, t_window = 0, 0, time.perf_counter()
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()
        redirect.__enter__()  # log lines print above the progress bar instead of through it
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not (self.progress and self.is_main),
                   dynamic_ncols=True, desc=f"{self.task.family}", unit="step")
        steps_this_call = 0
        step_times: list[float] = []
        reserve = 0.0  # seconds the final validation + checkpoint took last time (kept free under max_time)
        bad_in_a_row = 0  # samples skipped (data.skip_bad) since the last batch with a good one
        try:
            while self.step < self.max_steps:
                t_step = time.perf_counter()
                try:
                    batch = next(loader)
                except Exception as e:  # a bad sample (or a DataLoader worker that died on one)
                    msg = user_error_from(e)
                    if msg is None:
                        raise
                    raise AsapError(f"{msg}; stopped at step {self.step}" + self._last_ckpt_note()) from e
                if batch is None:
                    self.skipped += self.batch_size // self.env.world_size
                    bad_in_a_row += self.batch_size // self.env.world_size
                    self._check_bad_in_a_row(bad_in_a_row)
                    continue
                self.skipped += int(batch.pop("skipped", 0) or 0)
                bad_in_a_row = 0
                batch = self._to_device(batch)
                if fixed_vis is None:
                    fixed_vis = {k: (v[:4] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
                n_local = batch_length(batch)
                step_logs = self.train_step(batch)
                if self._nonfinite is None:
                    self._accumulate_logs(step_logs, sums, counts)
                step_times.append(time.perf_counter() - t_step)
                out_of_time = False
                if self.max_time is not None:
                    elapsed = time.perf_counter() - start_time
                    typical = float(np.median(step_times[-20:]))
                    out_of_time = elapsed + typical + reserve >= self.max_time
                bad, stop = distributed.all_reduce_max([float(self._nonfinite is not None), float(out_of_time)])
                if bad:
                    what = self._nonfinite or "another process saw a non-finite loss"
                    raise AsapError(f"{what}; stopped" + self._last_ckpt_note())
                self.step += 1
                steps_this_call += 1
                seen += n_local * self.env.world_size
                steps_window += 1
                bar.update(1)
                final = self.step == self.max_steps or bool(stop)
                if stop and self.step < self.max_steps:
                    self.stopped_by_time = True
                    log.info("trainer.max_time=%s reached after %.0f s at step %d of %d: writing the final "
                             "checkpoint (trainer.resume=auto continues the remaining steps)", self.max_time,
                             time.perf_counter() - start_time, self.step, self.max_steps)
                if self.step % self.log_every == 0 or final:
                    dt = time.perf_counter() - t_window
                    keys = sorted(sums)
                    totals = distributed.all_reduce_sum([sums[k] for k in keys] + [counts[k] for k in keys])
                    means = {k: totals[i] / max(totals[len(keys) + i], 1) for i, k in enumerate(keys)}
                    if writer is not None:
                        for k, v in means.items():
                            writer.add_scalar(k, v, self.step)
                        for k, v in self.task.learning_rates().items():
                            writer.add_scalar(f"lr/{k}", v, self.step)
                        writer.add_scalar("perf/images_per_s", seen / max(dt, 1e-9), self.step)
                        writer.add_scalar("perf/s_per_step", dt / max(steps_window, 1), self.step)
                        writer.add_scalar("data/skipped", self.skipped, self.step)
                    bar.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in list(means.items())[:4]})
                    sums, counts, seen, steps_window, t_window = {}, {}, 0, 0, time.perf_counter()
                t_end = time.perf_counter()
                validated = False
                if self.is_main and self.image_every and (self.step % self.image_every == 0 or final):
                    self.task.train(False)
                    with torch.no_grad():
                        self._add_images(writer, "train", self.task.visuals(fixed_vis))
                    self.task.train(True)
                if self.is_main and (self.val_set is not None or self.task.validates_without_data) and \
                        self.val_every and (
                        self.step % self.val_every == 0 or final):
                    self._log_validation(writer)
                    validated = True
                if self.step % self.ckpt_every == 0 or final:
                    self.save(loader)
                    if writer is not None:
                        writer.flush()
                if validated:  # the run's end will cost about this again: keep it free under max_time
                    reserve = max(reserve, time.perf_counter() - t_end)
                if self.stop_after is not None and steps_this_call >= self.stop_after:
                    break
                if final:
                    break
        finally:
            bar.close()
            redirect.__exit__(None, None, None)
            if writer is not None:
                writer.close()
        if self.skipped:
            log.info("skipped %d bad sample(s) (data.skip_bad=true)", self.skipped)
        return self.last_checkpoint

    def _check_bad_in_a_row(self, count: int) -> None:
        """With data.skip_bad, stop (one line) once a whole pass over the data, or 1000 samples, in a row were bad,
        instead of looping forever over a dataset where nothing can be read."""
        size = len(self.train_set) if self.train_set is not None else 1000
        limit = max(1, min(1000, size))
        if count >= limit:
            raise AsapError(f"data.skip_bad=true, but the last {count} samples in a row were all unreadable "
                            f"(dataset of {size}); stopped at step {self.step}: is every file bad?"
                            + self._last_ckpt_note())

    @staticmethod
    def _accumulate_logs(out: Mapping[str, Any], sums: dict[str, float], counts: dict[str, int]) -> None:
        for k, v in out.items():
            sums[k] = sums.get(k, 0.0) + float(v)
            counts[k] = counts.get(k, 0) + 1

    def _log_validation(self, writer: Any) -> None:
        metrics = self.validate()
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                writer.add_scalar(f"val/{k}", v, self.step)
        if metrics:
            log.info("step %d validation: %s", self.step,
                     ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))))
        vis = self._val_visual() if self.task.val_visuals else None
        if vis is not None:
            self._add_images(writer, "val", vis)

    def _add_images(self, writer: Any, prefix: str, vis: Any) -> None:
        """A task's visuals: one [3,H,W] grid (tag ``visual_tag``) or a dict {tag: grid}."""
        grids = vis if isinstance(vis, Mapping) else {self.task.visual_tag: vis}
        for tag, grid in grids.items():
            writer.add_image(f"{prefix}/{tag}", grid, self.step)

    def _val_visual(self) -> torch.Tensor | None:
        for batch in self._val_iter():
            self.task.train(False)
            try:
                with torch.no_grad():
                    return self.task.visuals({k: (v[:4] if isinstance(v, (torch.Tensor, list)) else v)
                                              for k, v in batch.items()})
            finally:
                self.task.train(True)
        return None

    def _last_ckpt_note(self) -> str:
        if self.last_checkpoint is not None:
            return f"; last good checkpoint: {self.last_checkpoint}"
        return "; no checkpoint was written yet"
