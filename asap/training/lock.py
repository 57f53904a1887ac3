"""One training process per run folder: an exclusive ``flock`` on ``<run>/.lock``, held until the process exits.

A second run started into the same folder (same ``hydra.run.dir``) is refused with one line instead of the two
overwriting, and pruning, each other's checkpoints; ``trainer.resume=auto`` skips folders locked by a live run.
"""
from __future__ import annotations

import os
from pathlib import Path

from asap.errors import AsapError

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}


def lock_run_dir(run_dir: str | os.PathLike) -> Path | None:
    """Take this process's lock on ``run_dir``; one-line error when another process holds it. Returns the folder
    when this call took the lock (the caller releases it), None when it was already held here (or no locking)."""
    run_dir = Path(run_dir).resolve()
    if fcntl is None or run_dir in _HELD:
        return None
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise AsapError(f"{run_dir}: cannot create the run folder's lock file: {e.strerror or e}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise AsapError(f"{run_dir}: another training run (pid {holder}) is using this run folder; wait for it to "
                        f"finish or choose another hydra.run.dir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[run_dir] = fd
    return run_dir


def is_locked_by_other(run_dir: str | os.PathLike) -> bool:
    """True when a live process other than this one holds ``run_dir``'s lock."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / LOCK_NAME
    if fcntl is None or run_dir in _HELD or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a shared lock taken just now


def release_run_dir(run_dir: str | os.PathLike) -> None:
    """Give the lock back (tests and API users that run several trainings in one process)."""
    fd = _HELD.pop(Path(run_dir).resolve(), None)
    if fd is not None:
        os.close(fd)
