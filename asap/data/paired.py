"""Shared logic of the label-map -> photo datasets: reading files, checking a pair, mapping ids, transforming.

A dataset subclass only finds its files (a list of :class:`Sample`) and names its label convention
(:data:`asap.data.labels.CONVENTIONS`: the palette of colour-coded files and the file-id -> id rule, as the official
code maps ids). Label and instance files are read by :func:`asap.data.labels.read_label_ids`, the reader that
tools/translate.py uses too. Every item is
``dict(label=LongTensor[1,H,W], instance=LongTensor[1,H,W], image=FloatTensor[3,H,W] in [-1,1], path=str)``
with ``path`` the label file. A bad sample (unreadable file, sizes that differ, ids outside the label set)
raises :class:`AsapError` naming the file, or - with ``skip_bad`` - makes ``__getitem__`` return None, which
:func:`asap.data.collate.collate` drops and counts.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from asap.errors import AsapError

from .collate import collate
from .labels import DONTCARE_ID, first_out_of_range, get_convention, open_image, read_label_ids  # noqa: F401
from .transforms import JointTransform

log = logging.getLogger("asap.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class Sample:
    """One training pair: label file, photo file, optional instance file."""

    label: Path
    image: Path
    instance: Path | None = None


def natural_key(path: str | os.PathLike) -> list[Any]:
    """Sort key that orders embedded numbers by value (img2 before img10), as the official code sorts."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def list_files(folder: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS, recursive: bool = True) -> list[Path]:
    """Files under ``folder`` with one of ``extensions`` (case-insensitive), naturally sorted."""
    if not folder.is_dir():
        return []
    it: Iterable[Path] = folder.rglob("*") if recursive else folder.iterdir()
    exts = tuple(e.lower() for e in extensions)
    return sorted((p for p in it if p.is_file() and p.suffix.lower() in exts), key=natural_key)


def read_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """A photo -> HxWx3 uint8."""
    path = Path(path)
    img = open_image(path, what)
    if img.mode in ("I", "I;16", "F"):
        raise AsapError(f"{path}: {what} has {img.mode} pixels; expected 8-bit RGB or grey")
    return np.asarray(img.convert("RGB"))


def to_tensors(label: np.ndarray, image: np.ndarray, instance: np.ndarray | None) -> dict[str, torch.Tensor]:
    """HxW ids, HxWx3 uint8 photo, HxW instance ids -> the item tensors (photo in [-1, 1])."""
    lab = torch.from_numpy(np.require(label, np.int64, ["C", "W"])).unsqueeze(0)
    inst = (torch.from_numpy(np.require(instance, np.int64, ["C", "W"])).unsqueeze(0) if instance is not None
            else torch.zeros_like(lab))
    img = torch.from_numpy(np.require(image, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
    return {"label": lab, "instance": inst, "image": img}


class PairedDataset(Dataset):
    """Base of the label -> photo datasets; subclasses pass the sample list and name their label ``convention``."""

    name = "paired"
    convention = "ids"                   # asap.data.labels.CONVENTIONS key: palette + file-id rule
    collate_fn = staticmethod(collate)   # drops None items (skip_bad) and counts them in batch["skipped"]

    def __init__(self, samples: Sequence[Sample], *, label_nc: int, contain_dontcare_label: bool = False,
                 preprocess_mode: str = "fixed", load_size: int = 512, crop_size: int = 512,
                 aspect_ratio: float = 1.0, flip: bool = False, crop_position: str = "random",
                 skip_bad: bool = False, max_samples: int | None = None,
                 label_palette: np.ndarray | str | None = None) -> None:
        if int(label_nc) < 1:
            raise AsapError(f"{self.name}: label_nc must be positive (got {label_nc})")
        self.samples = list(samples)[: (int(max_samples) if max_samples is not None else None)]
        if not self.samples:
            raise AsapError(f"{self.name}: no samples")
        self.label_nc = int(label_nc)
        self.contain_dontcare_label = bool(contain_dontcare_label)
        self.transform = JointTransform(preprocess_mode=preprocess_mode, load_size=int(load_size),
                                        crop_size=int(crop_size), aspect_ratio=float(aspect_ratio), flip=bool(flip),
                                        crop_position=crop_position)
        self.skip_bad = bool(skip_bad)
        self.label_palette = get_convention(self.convention).palette if label_palette is None else label_palette

    @property
    def num_label_channels(self) -> int:
        return self.label_nc + (1 if self.contain_dontcare_label else 0)

    def __len__(self) -> int:
        return len(self.samples)

    # -- hooks --------------------------------------------------------------------------------------------------
    def map_ids(self, raw: np.ndarray) -> np.ndarray:
        """Raw file ids -> dataset ids by the dataset's convention (shared with translate's ``labels=``)."""
        return get_convention(self.convention).map_ids(raw, self.label_nc)

    # -- reading ------------------------------------------------------------------------------------------------
    def load(self, sample: Sample) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Read and check one pair (untransformed): ids HxW, photo HxWx3, instance ids HxW or None."""
        raw = read_label_ids(sample.label, self.label_palette, "label map")
        image = read_rgb(sample.image, "image")
        if raw.shape[:2] != image.shape[:2]:
            raise AsapError(f"{sample.label}: label size {raw.shape[1]}x{raw.shape[0]} differs from image "
                            f"{sample.image} size {image.shape[1]}x{image.shape[0]}")
        instance = None
        if sample.instance is not None:
            instance = read_label_ids(sample.instance, None, "instance map")
            if instance.shape != raw.shape:
                raise AsapError(f"{sample.instance}: instance map size {instance.shape[1]}x{instance.shape[0]} "
                                f"differs from label {sample.label} size {raw.shape[1]}x{raw.shape[0]}")
        ids = self.map_ids(raw)
        bad_raw = first_out_of_range(raw, ids, self.num_label_channels)
        if bad_raw is not None:
            dc = " + dontcare" if self.contain_dontcare_label else ""
            raise AsapError(f"{sample.label}: label id {bad_raw} is outside the {self.num_label_channels} ids of "
                            f"this dataset (label_nc={self.label_nc}{dc})")
        return ids, image, instance

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        sample = self.samples[index]
        try:
            ids, image, instance = self.load(sample)
        except AsapError as e:
            if not self.skip_bad:
                raise
            log.warning("skipping bad sample: %s", e)
            return None
        ids, image, instance = self.transform(ids, image, instance)
        item: dict[str, Any] = to_tensors(ids, image, instance)
        item["path"] = str(sample.label)
        return item

    # -- construction helpers -------------------------------------------------------------------------------------
    @classmethod
    def layout_error(cls, expected: str, root: Path, found: str = "found nothing") -> AsapError:
        return AsapError(f"{cls.name}: expected {expected} under {root} ({found})")

    @classmethod
    def check_root(cls, root: str | os.PathLike, expected: str) -> Path:
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            raise AsapError(f"{cls.name}: dataset root {path} does not exist (expected {expected} there)")
        return path


def match_by_key(labels: Sequence[Path], images: Sequence[Path], key: Any, name: str, skip_bad: bool,
                 what: str = "image", image_key: Any = None) -> list[tuple[Path, Path]]:
    """Pair each label with the one image of equal key (``key(label) == image_key(image)``, ``image_key``
    defaulting to ``key``); an unmatched or ambiguous label raises AsapError (or, with ``skip_bad``, is dropped
    with a warning)."""
    image_key = key if image_key is None else image_key
    by_key: dict[Any, list[Path]] = {}
    for p in images:
        by_key.setdefault(image_key(p), []).append(p)
    pairs = []
    for lab in labels:
        found = by_key.get(key(lab), [])
        if len(found) == 1:
            pairs.append((lab, found[0]))
            continue
        msg = (f"{name}: no {what} for {lab} (expected one with the same name key {key(lab)!r})" if not found else
               f"{name}: several {what}s match {lab}: {', '.join(str(f) for f in found[:3])}")
        if not skip_bad:
            raise AsapError(msg)
        log.warning("skipping: %s", msg)
    return pairs
