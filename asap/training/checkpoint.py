"""Checkpoint files of a run: ``<run>/checkpoints/step_<N>.pt``, written atomically, the last K kept."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Mapping

from asap.errors import AsapError

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the run's checkpoints, oldest first (temp files of interrupted writes are ignored)."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def prune(run_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (and stale temp files)."""
    ckpts = list_checkpoints(run_dir)
    if keep_last > 0:
        for _, p in ckpts[:-keep_last]:
            p.unlink(missing_ok=True)
    d = Path(run_dir) / "checkpoints"
    if d.is_dir():
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)


def _mmap_read(path: Path) -> Any:
    """A checkpoint's dict without reading its tensors (memory-mapped; weights_only)."""
    import torch
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def why_not_resumable(path: Path, family: str, networks: Mapping[str, Mapping[str, Any]], max_steps: int) -> str | None:
    """None when ``path`` is a checkpoint this run can continue (same family and architecture, not finished),
    else the reason it is skipped, in a few words."""
    try:
        ck = _mmap_read(path)
    except Exception as e:  # unreadable: never picked silently
        return f"unreadable ({type(e).__name__})"
    if not isinstance(ck, dict) or ck.get("format") != "asap" or "training" not in ck:
        return "not a training checkpoint of this toolkit"
    if ck.get("family") != family:
        return f"a {ck.get('family')} run, this is {family}"
    theirs = ck.get("networks", {})
    for name, cfg in networks.items():
        if name not in theirs:
            return f"has no network '{name}'"
        if dict(theirs[name].get("config", {})) != dict(cfg):
            diff = sorted(k for k in set(cfg) | set(theirs[name].get("config", {}))
                          if cfg.get(k) != theirs[name]["config"].get(k))
            return f"different {name} architecture ({', '.join(diff[:3])})"
    step = int(ck.get("step", 0))
    if step >= max_steps:
        return f"that run is finished (step {step} of {max_steps})"
    return None


def find_resume(resume: Any, run_dir: str | Path, outputs_root: str | Path | None,
                accept: Callable[[Path], str | None] | None = None,
                log: Callable[[str], None] | None = None) -> Path | None:
    """Resolve ``trainer.resume``: None/false -> None; a path -> that checkpoint (or the latest in that run
    folder); 'auto' -> the latest checkpoint of this run folder, else the newest checkpoint of an earlier run under
    ``outputs_root`` that ``accept`` does not reject (it returns the reason to skip one; each skip is logged).
    Nothing outside the run folder and the outputs root is read; a run folder outside the outputs root only
    looks at itself."""
    if resume in (None, False, "", "none", "null"):
        return None
    if resume != "auto":
        p = Path(str(resume))
        if p.is_dir():
            ckpts = list_checkpoints(p) or list_checkpoints(p.parent)
            if not ckpts:
                raise AsapError(f"trainer.resume={p}: no checkpoints/step_*.pt in that folder")
            return ckpts[-1][1]
        if not p.is_file():
            raise AsapError(f"trainer.resume={p}: no such checkpoint")
        return p
    own = list_checkpoints(run_dir)
    if own:
        return own[-1][1]
    if outputs_root is None:
        return None
    root, here = Path(outputs_root).resolve(), Path(run_dir).resolve()
    if not root.is_dir() or root not in here.parents:
        return None
    newest: dict[Path, tuple[int, Path]] = {}  # per earlier run folder, its latest checkpoint
    for c in root.rglob("step_*.pt"):
        m = _NAME.match(c.name)
        if m and c.parent.name == "checkpoints" and here not in c.resolve().parents:
            run, step = c.parent.parent, int(m.group(1))
            if run not in newest or step > newest[run][0]:
                newest[run] = (step, c)
    candidates = []
    for _, c in newest.values():
        try:
            candidates.append((c.stat().st_mtime, c))
        except OSError:
            continue
    for _, c in sorted(candidates, reverse=True):
        reason = accept(c) if accept is not None else None
        if reason is None:
            return c
        if log is not None:
            log(f"trainer.resume=auto: skipped {c}: {reason}")
    return None
