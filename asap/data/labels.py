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
LOSSY_FORMATS = ("JPEG", "MPO", "JPEG2000", "WEBP")


def open_image(path: str | os.PathLike, what: str = "image") -> Any:
    """A fully loaded PIL image; a missing, unreadable or over-limit file raises one AsapError line naming it.

    The limits (``asap.utils.limits``: pixels and file bytes) are checked on the file size and the header, before
    any pixel is decoded, so a tiny file that declares a huge image costs nothing.
    """
    from PIL import Image, UnidentifiedImageError

    from asap.utils import limits

    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise AsapError(f"{path}: cannot read {what}: no such file") from None
    except OSError as e:
        raise AsapError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if path.is_dir():
        raise AsapError(f"{path}: cannot read {what}: is a folder")
    if size > limits.get("max_image_bytes"):
        raise AsapError(f"{path}: {what} file has {size:,} bytes, over {limits.describe('max_image_bytes')}")
    max_pixels = limits.get("max_image_pixels")
    try:
        with _bomb_limit(Image, max_pixels):
            img = Image.open(path)
            w, h = img.size
            if w * h > max_pixels:
                img.close()
                raise AsapError(f"{path}: {what} is {w}x{h} = {w * h:,} pixels, over "
                                f"{limits.describe('max_image_pixels')}")
            img.load()
        return img
    except Image.DecompressionBombError as e:
        import re
        found = re.search(r"\((\d+) pixels\)", str(e))
        count = f"{int(found.group(1)):,}" if found else f"more than {max_pixels:,}"
        raise AsapError(f"{path}: {what} declares {count} pixels, over {limits.describe('max_image_pixels')}") from None
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AsapError(f"{path}: cannot read {what}: unreadable or corrupt image file ({detail})") from None


class _bomb_limit:
    """Make PIL's own decompression-bomb check agree with our pixel limit while one file is opened."""

    def __init__(self, image_module: Any, max_pixels: int) -> None:
        self.image, self.max_pixels = image_module, max_pixels

    def __enter__(self) -> None:
        import warnings

        self.saved = self.image.MAX_IMAGE_PIXELS
        self.image.MAX_IMAGE_PIXELS = self.max_pixels  # PIL raises above twice this; we check the rest
        self.quiet = warnings.catch_warnings()
        self.quiet.__enter__()
        warnings.simplefilter("ignore", self.image.DecompressionBombWarning)

    def __exit__(self, *exc: Any) -> None:
        self.quiet.__exit__(*exc)
        self.image.MAX_IMAGE_PIXELS = self.saved


def read_label_ids(path: str | os.PathLike, palette: np.ndarray | str | None = None,
                   what: str = "label map", warn: Callable[[str], None] | None = None) -> np.ndarray:
    """A label or instance file -> HxW int64 ids by the module's one rule set, so training and translate agree.

    Lossy formats (JPEG, WebP) are refused: compression changes ids along every edge. A palette PNG is read as its
    indices; when a dataset palette is given and the file's colours disagree with it, ``warn`` (default:
    ``warnings.warn``) says so once, since the indices may then not be the ids the colours show.
    """
    path = Path(path)
    img = open_image(path, what)
    if img.format in LOSSY_FORMATS:
        raise AsapError(f"{path}: {what} is a {img.format} file; lossy compression changes ids along edges, so "
                        f"label and instance maps must be lossless (PNG)")
    if img.mode in SINGLE_CHANNEL_MODES:
        ids = np.asarray(img).astype(np.int64)
        if img.mode == "P" and palette is not None:
            _check_palette_colours(img, ids, path, palette, what, warn)
        return ids
    if img.mode not in COLOUR_MODES:
        raise AsapError(f"{path}: {what} has image mode {img.mode} ({len(img.getbands())} channels); {EXPECTED}")
    return colour_ids(np.asarray(img), path, palette, what)


def _check_palette_colours(img: Any, ids: np.ndarray, path: Path, palette: np.ndarray | str, what: str,
                           warn: Callable[[str], None] | None) -> None:
    """Warn when a palette PNG draws some used index in another colour than the dataset palette gives that id."""
    from .palettes import get_palette

    table = get_palette(palette) if isinstance(palette, str) else np.asarray(palette)
    raw = img.getpalette() or []
    file_colours = np.asarray(raw[:(len(raw) // 3) * 3], dtype=np.uint8).reshape(-1, 3)
    for i in np.unique(ids):
        if i >= len(table) or i >= len(file_colours):
            continue
        if tuple(file_colours[i]) != tuple(table[i]):
            name = palette if isinstance(palette, str) else "dataset"
            message = (f"{path}: {what} is a palette PNG whose colours disagree with the {name} palette (index {i} is "
                       f"drawn as {tuple(int(v) for v in file_colours[i])}, {name} id {i} is "
                       f"{tuple(int(v) for v in table[i])}); reading the indices as ids")
            if warn is None:
                import warnings
                warnings.warn(message, stacklevel=3)
            else:
                warn(message)
            return


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
