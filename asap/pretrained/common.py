"""Safe reading of checkpoint files and strict state-dict loading with one-line errors."""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError


def read_file(path: str | os.PathLike, safe_globals: Iterable[Any] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with ``safe_globals`` allow-listed; one-line errors."""
    path = Path(path)
    if not path.exists():
        raise AsapError(f"{path}: no such file")
    if path.is_dir():
        raise AsapError(f"{path}: is a directory, expected a checkpoint file")
    check_zip_crcs(path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AsapError(f"{path}: refused to unpickle (not a plain weights file): {first}") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AsapError(f"{path}: not a readable PyTorch checkpoint (corrupt or truncated?): {first}") from e
    verify_digest(obj, path)
    return obj


def check_zip_crcs(path: Path) -> None:
    """A zip-format checkpoint whose stored CRC-32s do not match its bytes is corrupt (``torch.load`` does not
    check them): one line naming the file and the damaged entry. Legacy (non-zip) files have no CRCs."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:  # e.g. a broken compressed entry
        raise AsapError(f"{path}: corrupt checkpoint (its zip structure is damaged: {e})") from None
    if bad is not None:
        raise AsapError(f"{path}: corrupt checkpoint (CRC check failed for '{bad}'); the file was changed or damaged "
                        f"after it was written")


INTEGRITY_KEY = "integrity"


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's content (tensors by dtype, shape and bytes; containers in a fixed order), without
    its own ``integrity`` entry: what our checkpoints record so that a changed byte is found on reading."""
    import hashlib

    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k in sorted((k for k in x if k != INTEGRITY_KEY), key=lambda k: (type(k).__name__, repr(k))):
                h.update(repr(k).encode())
                feed(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def seal(ckpt: dict) -> dict:
    """Record the content digest in ``ckpt`` (in place) and return it."""
    ckpt[INTEGRITY_KEY] = {"sha256": content_digest(ckpt)}
    return ckpt


def verify_digest(obj: Any, path: str | os.PathLike) -> None:
    """If ``obj`` records a content digest, it must match its content (one line naming the file otherwise)."""
    if not isinstance(obj, dict) or not isinstance(obj.get(INTEGRITY_KEY), Mapping):
        return
    recorded = obj[INTEGRITY_KEY].get("sha256")
    if recorded != content_digest(obj):
        raise AsapError(f"{path}: corrupt checkpoint (its content no longer matches the SHA-256 recorded when it "
                        f"was written)")


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                      key_map: Mapping[str, str] | None = None) -> nn.Module:
    """Copy ``state`` into ``module``: every key must exist on both sides with equal shapes.

    ``key_map`` maps our key -> the key in ``state`` (identity where absent). Errors name the key (in the
    file's naming) and both shapes, in one line.
    """
    ours = module.state_dict()
    key_map = dict(key_map or {})
    theirs_for = {k: key_map.get(k, k) for k in ours}
    wanted = set(theirs_for.values())
    missing = [t for t in theirs_for.values() if t not in state]
    if missing:
        raise AsapError(f"{source}: missing key '{missing[0]}' (expected shape {tuple(ours[_inv(theirs_for, missing[0])].shape)})"
                        + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                        + " - wrong family or options?")
    unexpected = [k for k in state if k not in wanted]
    if unexpected:
        raise AsapError(f"{source}: unexpected key '{unexpected[0]}' with shape {tuple(state[unexpected[0]].shape)}"
                        + (f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else "")
                        + " - wrong family or options?")
    new_state = {}
    for k, t in theirs_for.items():
        v = state[t]
        if not isinstance(v, torch.Tensor):
            raise AsapError(f"{source}: key '{t}' is not a tensor")
        if tuple(v.shape) != tuple(ours[k].shape):
            raise AsapError(f"{source}: shape mismatch for '{t}': checkpoint has {tuple(v.shape)}, "
                            f"model expects {tuple(ours[k].shape)} - check the model options")
        new_state[k] = v
    module.load_state_dict(new_state, strict=True)
    return module


def _inv(mapping: Mapping[str, str], value: str) -> str:
    for k, v in mapping.items():
        if v == value:
            return k
    return value
