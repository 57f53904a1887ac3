"""Label files -> id maps: the one reader shared by the training datasets and tools/translate.py.

:func:`read_label_ids` turns a label (or instance) file into an HxW int64 map of the ids the file stores:

- single-channel modes (``1``, ``L``, ``P``, ``I;16``, ``I``) are read as stored; a palette (``P``) image gives
  its palette *indices*, never the colours they stand for;
- ``RGB`` and opaque ``RGBA`` files are decoded with the convention's palette when every colour is in it;
  otherwise a grey-looking file (R = G = B everywhere) gives its grey values as ids; otherwise the file is
  refused, naming the first unknown colour (with a palette) or saying no palette applies (without one);
- ``RGBA`` with transparent pixels, two-channel (``LA``, ``PA``), float and other modes are refused;
- a missing or unreadable file is refused.

Every refusal is one :class:`AsapError` line that starts with the file's path.

A :class:`LabelConvention` says how a dataset's files encode ids: the palette of its colour-coded files and the
rule from file ids to dataset ids (SPADE's: 255 is dontcare -> ``label_nc``; ADE20K also shifts ids down by one).
The training datasets and ``translate.py labels=...`` name the same conventions, so one file gives one id map.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from asap.errors import AsapError

from .palettes import colors_to_ids, palette_lookup

DONTCARE_ID = 255
ADE20K_CLASSES = 150
SINGLE_CHANNEL_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")
COLOUR_MODES = ("RGB", "RGBA")
EXPECTED = "expected one id per pixel (8/16-bit grey or palette PNG) or an RGB map in a known palette"


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------
def open_image(path: str | os.PathLike, what: str = "image") -> Any:
    """A fully loaded PIL image; a missing or unreadable file raises one AsapError line naming it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
        return img
    except FileNotFoundError:
        raise AsapError(f"{path}: cannot read {what}: no such file") from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AsapError(f"{path}: cannot read {what}: unreadable or corrupt image file ({detail})") from None


def read_label_ids(path: str | os.PathLike, palette: np.ndarray | str | None = None,
                   what: str = "label map") -> np.ndarray:
    """A label or instance file -> HxW int64 ids by the module's one rule set, so training and translate agree."""
    path = Path(path)
    img = open_image(path, what)
    if img.mode in SINGLE_CHANNEL_MODES:
        return np.asarray(img).astype(np.int64)
    if img.mode not in COLOUR_MODES:
        raise AsapError(f"{path}: {what} has image mode {img.mode} ({len(img.getbands())} channels); {EXPECTED}")
    return colour_ids(np.asarray(img), path, palette, what)


def colour_ids(arr: np.ndarray, path: Path, palette: np.ndarray | str | None, what: str = "label map") -> np.ndarray:
    """HxWx3 (or opaque HxWx4) pixels -> ids: the palette when it covers every colour, else grey values, else error."""
    if arr.shape[2] == 4:
        if (arr[..., 3] != 255).any():
            raise AsapError(f"{path}: {what} has transparent pixels (mode RGBA); {EXPECTED}, fully opaque")
        arr = arr[..., :3]
    if palette is not None:
        ids, known = palette_lookup(arr, palette)
        if known.all():
            return ids
    if is_grey(arr):
        return arr[..., 0].astype(np.int64)
    if palette is not None:
        colors_to_ids(arr, palette, source=f"{path}: {what}")   # raises, naming the first unknown colour
    raise AsapError(f"{path}: {what} is a colour image and no palette applies; {EXPECTED}")


def is_grey(rgb: np.ndarray) -> bool:
    """True when R = G = B at every pixel: an id map that was saved as RGB."""
    return bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())


# ----------------------------------------------------------------------------------------------------------------
# file ids -> dataset ids
# ----------------------------------------------------------------------------------------------------------------
def official_ids(raw: np.ndarray, label_nc: int) -> np.ndarray:
    """File ids -> dataset ids by SPADE's generic rule: 255 (dontcare) becomes ``label_nc``."""
    ids = raw.copy()
    ids[ids == DONTCARE_ID] = label_nc
    return ids


def ade20k_ids(raw: np.ndarray, label_nc: int) -> np.ndarray:
    """ADE20K file ids -> SPADE ids: the generic rule, then every id minus one and -1 ("unlabeled") -> label_nc."""
    ids = official_ids(raw, label_nc)
    ids -= 1
    ids[ids == -1] = label_nc
    ids[(raw > ADE20K_CLASSES) & (raw != DONTCARE_ID)] = -1   # not an ADE20K id: left for the range check
    return ids


def first_out_of_range(raw: np.ndarray, ids: np.ndarray, num_ids: int) -> int | None:
    """The file id of the first pixel whose dataset id is outside [0, num_ids), or None; errors quote the file."""
    bad = (ids < 0) | (ids >= num_ids)
    return int(raw[bad].flat[0]) if bad.any() else None


@dataclass(frozen=True)
class LabelConvention:
    """How a dataset's label files encode ids: its palette for colour-coded files and its file-id -> id rule."""

    name: str
    palette: str | None
    map_ids: Callable[[np.ndarray, int], np.ndarray]


CONVENTIONS = {
    "ids": LabelConvention("ids", None, official_ids),
    "cityscapes": LabelConvention("cityscapes", "cityscapes", official_ids),
    "ade20k": LabelConvention("ade20k", "ade20k", ade20k_ids),
    "facades": LabelConvention("facades", "facades", official_ids),
}


def get_convention(name: str) -> LabelConvention:
    """The named label convention; an unknown name raises AsapError listing the known ones."""
    if name not in CONVENTIONS:
        raise AsapError(f"unknown label convention {name!r} (known: {', '.join(CONVENTIONS)})")
    return CONVENTIONS[name]
