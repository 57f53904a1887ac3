"""Build a Task, datasets and Trainer from a composed Hydra config and run it (the body of tools/train.py)."""
from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from asap.errors import AsapError
from asap.utils.device import resolve_device

log = logging.getLogger("asap.train")


def build_datasets(data_cfg: DictConfig) -> tuple[Any, Any]:
    """Instantiate ``data.train`` and ``data.val`` (val optional); dataset errors surface as AsapError."""
    try:
        train = instantiate(data_cfg.train)
        val = instantiate(data_cfg.val) if data_cfg.get("val") is not None else None
    except AsapError:
        raise
    except Exception as e:  # Hydra wraps constructor errors; keep the user-facing message if there is one
        cause = e
        while cause.__cause__ is not None and not isinstance(cause, AsapError):
            cause = cause.__cause__
        if isinstance(cause, AsapError):
            raise cause from None
        raise
    return train, val


def build_task(cfg: DictConfig) -> Any:
    """The model config's task, given the generator/discriminator/loss/optim sections and the run length.

    Constructor errors become one-line AsapErrors naming the model (a wrong value in the config is a user mistake).
    """
    model = OmegaConf.to_container(cfg.model, resolve=True)
    task_cfg = model.pop("task")
    family = model.pop("family")
    target = task_cfg.pop("_target_")
    module, _, name = target.rpartition(".")
    import importlib
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise AsapError(f"model.task._target_={target}: cannot import it ({e})") from e
    data_info = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items()
                 if not isinstance(v, dict)}
    try:
        return cls(family=family, max_steps=int(cfg.trainer.max_steps), data=data_info,
                   metrics=OmegaConf.to_container(cfg.get("metrics", {}), resolve=True), **task_cfg, **model)
    except AsapError:
        raise
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AsapError(f"model={family}: {text}") from e


def _setup_logging(env: Any) -> None:
    """Only rank 0 reports progress; the others say warnings and errors only."""
    if not env.is_main:
        logging.getLogger("asap").setLevel(logging.WARNING)


def train_from_config(cfg: DictConfig) -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    from asap.data.collate import collate
    from asap.training import distributed
    from asap.training.trainer import Trainer, seed_everything

    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path("outputs/run")
    t = cfg.trainer
    env, dist_device = distributed.init(str(t.device))
    _setup_logging(env)
    if t.get("keep_freed_memory", True):
        from asap.utils.allocator import keep_freed_memory
        keep_freed_memory()
    try:
        seed_everything(int(t.seed))  # the same initial weights in every process
        device = dist_device if dist_device is not None else resolve_device(t.device)
        log.info("model=%s data=%s device=%s world_size=%d precision=%s run dir=%s", cfg.model.family,
                 cfg.data.name, device, env.world_size, t.get("precision", 32), run_dir)
        task = build_task(cfg).to(device)
        for note in getattr(task, "notes", []):
            log.info(note)
        if not cfg.get("metrics", {}).get("lpips_pretrained", True):
            log.info("validation LPIPS uses a RANDOM AlexNet backbone (metrics.lpips_pretrained=false)")
        if cfg.data.get("train") is not None:
            train_set, val_set = build_datasets(cfg.data)
            log.info("train samples: %d, held-out samples: %s", len(train_set),
                     len(val_set) if val_set is not None else 0)
        else:
            train_set, val_set = None, None
            log.info("no dataset: the task samples its own inputs")
        root = t.get("outputs_root")
        outputs_root = Path(str(root)) if root not in (None, "") else None
        trainer = Trainer(task, train_set, val_set, run_dir, max_steps=t.max_steps, batch_size=t.batch_size,
                          seed=t.seed, num_workers=t.num_workers, collate_fn=collate, log_every=t.log_every,
                          image_every=t.image_every, val_every=t.val_every, val_batches=t.val_batches,
                          ckpt_every=t.ckpt_every, keep_last=t.keep_last, resume=t.resume, outputs_root=outputs_root,
                          config=OmegaConf.to_container(cfg, resolve=True), progress=t.progress,
                          accumulate=t.get("accumulate", 1), precision=t.get("precision", 32),
                          max_time=t.get("max_time"), grad_clip=t.get("grad_clip"),
                          sync_batchnorm=t.get("sync_batchnorm", True))
        last = trainer.fit()
        log.info("done: step %d, last checkpoint %s", trainer.step, last)
        if env.is_main:
            print(f"checkpoint: {last}")
        # release the DDP wrappers (their reducers hold the process group) before leaving it, so the group is torn
        # down here and not during interpreter exit
        del trainer, task, train_set, val_set
        gc.collect()
        distributed.shutdown(clean=True)
        return last
    finally:
        distributed.shutdown()
