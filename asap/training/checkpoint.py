"""Checkpoint files of a run: ``<run>/checkpoints/step_<N>.pt``, written atomically, the last K kept."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

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


def find_resume(resume: Any, run_dir: str | Path, outputs_root: str | Path | None) -> Path | None:
    """Resolve ``trainer.resume``: None/false -> None; a path -> that checkpoint (or the latest in that run
    folder); 'auto' -> the latest checkpoint of this run folder, else of the most recent run under outputs_root."""
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
    if outputs_root is None or not Path(outputs_root).is_dir():
        return None
    candidates = [c for c in Path(outputs_root).glob("**/checkpoints/step_*.pt")
                  if _NAME.match(c.name) and Path(run_dir).resolve() not in c.resolve().parents]
    if not candidates:
        return None
    return max(candidates, key=lambda c: c.stat().st_mtime)
