"""Safe file writes: a crash, a full disk or a bad input never leaves a half-written checkpoint or image behind,
and nothing that is not a regular file (a device node, a folder, a pipe) is ever replaced."""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from asap.errors import AsapError


def _reason(e: OSError) -> str:
    return e.strerror or str(e) or type(e).__name__


def output_file(path: str | os.PathLike, created: list[Path] | None = None) -> Path:
    """Check that ``path`` can be written as a regular file: its folder exists or can be made (folders made are
    appended to ``created``), and whatever is there now is a regular file (or nothing). A symlink is followed to
    its target. Returns the path to write."""
    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise AsapError(f"{path}: cannot write here: {_reason(e)}") from e
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise AsapError(f"{path}: is a folder, expected a file name to write")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise AsapError(f"{path}: is not a regular file (a device, pipe or socket); refusing to replace it")
    output_dir(target.parent, created)
    return target


def check_output_dir(path: str | os.PathLike) -> Path:
    """Without creating anything: raise a one-line error if ``path`` could not be an output folder (it is a file
    or a device, or its nearest existing parent is not a writable folder)."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise AsapError(f"{path}: exists and is not a folder; choose another output folder")
        if not (os.access(path, os.W_OK | os.X_OK) and _can_create_in(path)):
            raise AsapError(f"{path}: the output folder is not writable")
        return path
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AsapError(f"{path}: cannot create the output folder: {parent} is not a folder")
    if not (os.access(parent, os.W_OK | os.X_OK) and _can_create_in(parent)):
        raise AsapError(f"{path}: cannot create the output folder: {parent} is not writable")
    return path


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be made in ``folder``, tried with a temporary file removed at once: ``os.access`` says
    yes to root everywhere, and to file systems that refuse new files (/proc, read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".asap-write-check-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def output_dir(path: str | os.PathLike, created: list[Path] | None = None) -> Path:
    """Make the output folder ``path`` (and its parents) or raise a one-line error naming it; the folders made
    are appended to ``created`` (outermost first) so that a failed write can remove them again."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise AsapError(f"{path}: exists and is not a folder; choose another output folder")
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
        if created is not None:
            created.extend(reversed(missing))
    except OSError as e:
        raise AsapError(f"{path}: cannot create the output folder: {_reason(e)}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise AsapError(f"{path}: the output folder is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise AsapError(f"{path}: cannot write: {_reason(e)}") from e
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # the permissions a plain open() would give, not mkstemp's 0600
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    ``path`` must be a regular file or absent (never a device node or folder). An ``OSError`` while writing (full
    disk, read-only folder) becomes a one-line error naming ``path``; the temporary file, and any folder made for
    it, are removed on failure.
    """
    files = AtomicFiles()
    try:
        tmp = files.reserve(path)
        try:
            yield tmp
        except OSError as e:
            raise AsapError(f"{path}: cannot write: {_reason(e)}") from e
        files.commit()
    finally:
        files.discard()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


class AtomicFiles:
    """Several outputs that appear together or not at all: each ``write`` goes to a temporary file; on success
    all are renamed into place, on any error all temporary files are removed and no target is touched."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []
        self._created: list[Path] = []

    def reserve(self, path: str | os.PathLike) -> Path:
        """Check ``path`` and return the temporary file that ``commit`` will move there."""
        target = output_file(path, self._created)
        tmp = _temp_beside(target)
        self._pending.append((tmp, target))
        return tmp

    def write(self, path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
        tmp = self.reserve(path)
        try:
            write(tmp)
        except OSError as e:
            raise AsapError(f"{path}: cannot write: {_reason(e)}") from e
        return Path(path)

    def commit(self) -> None:
        for tmp, target in self._pending:
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise AsapError(f"{target}: cannot write: {_reason(e)}") from e
        self._pending, self._created = [], []

    def discard(self) -> None:
        """Remove the temporary files and the folders this batch made (nothing is left of a failed write)."""
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        for d in reversed(self._created):
            try:
                d.rmdir()
            except OSError:
                pass
        self._pending, self._created = [], []


@contextlib.contextmanager
def atomic_files() -> Iterator[AtomicFiles]:
    """``with atomic_files() as out: out.write(p, fn); ...``: all files appear at the end of the block, or none."""
    files = AtomicFiles()
    try:
        yield files
        files.commit()
    finally:
        files.discard()


def _write_torch(obj: Any) -> Callable[[Path], None]:
    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return _write


def _write_png(array: np.ndarray) -> Callable[[Path], None]:
    return lambda tmp: Image.fromarray(array).save(tmp, format="PNG")


def save_torch(obj: Any, path: str | os.PathLike, files: AtomicFiles | None = None) -> Path:
    """``torch.save`` to ``path`` atomically (temp file, fsync, rename), or as part of ``files``."""
    return files.write(path, _write_torch(obj)) if files is not None else atomic_write(path, _write_torch(obj))


def save_png(array: np.ndarray, path: str | os.PathLike, files: AtomicFiles | None = None) -> Path:
    """Write a uint8 HxW or HxWx3 (or uint16 HxW) array as PNG atomically, or as part of ``files``."""
    return files.write(path, _write_png(array)) if files is not None else atomic_write(path, _write_png(array))


def check_outputs(paths: Sequence[str | os.PathLike]) -> None:
    """Before any work is done and without creating anything: every output path must be a regular file or absent,
    in a folder that exists or can be made (one-line error naming the first bad path)."""
    for p in paths:
        p = Path(p)
        target = p.resolve() if p.is_symlink() else p
        if target.exists():
            if target.is_dir():
                raise AsapError(f"{p}: is a folder, expected a file name to write")
            if not target.is_file():
                raise AsapError(f"{p}: is not a regular file (a device, pipe or socket); refusing to replace it")
        check_output_dir(target.parent)
