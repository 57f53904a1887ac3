"""Load generators (and other parts) from our own checkpoints or from official checkpoint files.

``load(path, family=None, **options)`` is the single entry point. Each family has a reader module here
(``asap.pretrained.<family>``) exposing::

    detect(obj) -> bool                         # does this loaded object look like the family's official format?
    load_official(obj, path, **options) -> nn.Module

Our own checkpoints (written by the Trainer, see ``asap.pretrained.native``) record the architecture, so they
need no options. Everything is read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

import torch.nn as nn

from asap.errors import AsapError
from asap.pretrained import native
from asap.pretrained.common import read_file

# family name -> reader module; a new family adds one line here and one module beside this file.
FAMILIES: dict[str, str] = {
    "anycost": "asap.pretrained.anycost",  # before stylegan2: its trainer files also match the rosinality layout
    "asapnet": "asap.pretrained.asapnet",
    "fastgan": "asap.pretrained.fastgan",
    "spade": "asap.pretrained.spade",
    "stylegan2": "asap.pretrained.stylegan2",
    "mobilestylegan": "asap.pretrained.mobilestylegan",
}


def reader(family: str):
    """Import and return the reader module of ``family``."""
    if family not in FAMILIES:
        raise AsapError(f"unknown model family '{family}' (known: {', '.join(sorted(FAMILIES))})")
    try:
        return importlib.import_module(FAMILIES[family])
    except ModuleNotFoundError as e:
        raise AsapError(f"the reader for family '{family}' is not available: {e}") from e


def detect_family(obj: Any) -> str | None:
    """Return the family whose official format ``obj`` matches, or None."""
    for family in FAMILIES:
        try:
            mod = reader(family)
        except AsapError:
            continue
        if mod.detect(obj):
            return family
    return None


def accepts(family: str, obj: Any) -> bool:
    """Whether ``family``'s reader can read ``obj`` when asked by name (its ``accepts``, else its ``detect``): files
    shared by two formats (an Anycost model-zoo generator is also a rosinality StyleGAN2 file) are read as asked."""
    mod = reader(family)
    return bool(getattr(mod, "accepts", mod.detect)(obj))


def safe_globals() -> list[Any]:
    """The classes the official formats need allow-listed for ``weights_only`` loading (each reader's SAFE_GLOBALS)."""
    allowed: list[Any] = []
    for family in FAMILIES:
        try:
            allowed += list(getattr(reader(family), "SAFE_GLOBALS", []))
        except AsapError:
            continue
    return allowed


def load(path: str | os.PathLike, family: str | None = None, **options: Any) -> nn.Module:
    """Return a network in eval mode from our checkpoint or an official one at ``path``.

    ``family`` (optional) checks/chooses the official format; ``options`` are the official option names
    for formats that do not store the architecture (e.g. ``label_nc=35`` for ASAPNet ``*_net_G.pth``), or
    reader-specific selectors (``part=``, ``which=``) for files that hold several networks.
    """
    obj = read_file(path, safe_globals())
    if native.is_native(obj):
        model = native.load_model(obj, path, family=family, **options)
    else:
        found = detect_family(obj)
        if family is None:
            if found is None:
                raise AsapError(f"{path}: not an asap checkpoint and not an official checkpoint of a known family "
                                f"({', '.join(sorted(FAMILIES))})")
            family = found
        elif found is not None and found != family and not accepts(family, obj):
            raise AsapError(f"{path}: this is a {found} checkpoint, not {family}")
        elif found is None:
            raise AsapError(f"{path}: not an official {family} checkpoint (its keys do not match the {family} format)")
        model = reader(family).load_official(obj, path, **options)
    return model.eval()
