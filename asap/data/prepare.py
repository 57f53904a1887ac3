"""Link a flat copy of a dataset into the official layout its reader wants (symlinks only: nothing is copied).

Small public samples of Cityscapes, ADE20K and CMP Facades come in flat folders (pix2pixHD's ``train_label/``,
the SceneParsing kit's ``images/`` + ``annotations/``, a facades ``images/`` + ``masks/`` pair). Each ``link_*``
function builds the folder tree of :mod:`asap.data.cityscapes`, :mod:`asap.data.ade20k` or
:mod:`asap.data.facades` under ``dst`` with one symlink per file (or folder), keeping the file names, and returns
``dst``. ``dst`` must be empty or absent, so a run never mixes two sources.
"""
from __future__ import annotations

import os
from pathlib import Path

from asap.errors import AsapError

from .paired import IMAGE_EXTENSIONS, list_files


def _fresh(dst: str | os.PathLike) -> Path:
    """``dst`` as an absolute path that is absent or an empty folder (else AsapError)."""
    d = Path(dst).expanduser().absolute()
    if d.exists() and (not d.is_dir() or any(d.iterdir())):
        raise AsapError(f"prepare_data: {d} exists and is not an empty folder (choose a new dst)")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _src(src: str | os.PathLike, *subs: str) -> Path:
    s = Path(src).expanduser().resolve()
    for sub in subs:
        if not (s / sub).is_dir():
            raise AsapError(f"prepare_data: expected the folder {s / sub} (found nothing)")
    return s


def _link_files(files: list[Path], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    return len(files)


def link_cityscapes(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """pix2pixHD's ``{train,test}_{label,inst,img}/`` -> ``gtFine/<split>/<city>/`` + ``leftImg8bit/<split>/<city>/``,
    the city taken from each file name (pix2pixHD's ``test`` frames are Cityscapes val frames: ``test_*`` -> ``val``)."""
    s, d = Path(src).expanduser().resolve(), _fresh(dst)
    n = 0
    for phase, split in (("train", "train"), ("test", "val")):
        labels = [p for p in list_files(s / f"{phase}_label", (".png",)) if p.name.endswith("_gtFine_labelIds.png")]
        if not labels:
            continue
        insts = [p for p in list_files(s / f"{phase}_inst", (".png",)) if p.name.endswith("_gtFine_instanceIds.png")]
        photos = [p for p in list_files(s / f"{phase}_img") if "_leftImg8bit" in p.name]
        for c in sorted({p.name.split("_")[0] for p in labels}):
            def pick(files: list[Path]) -> list[Path]:
                return [f for f in files if f.name.startswith(c + "_")]
            n += _link_files(pick(labels) + pick(insts), d / "gtFine" / split / c)
            if pick(photos):
                n += _link_files(pick(photos), d / "leftImg8bit" / split / c)
    if n == 0:
        raise AsapError(f"prepare_data: no *_gtFine_labelIds.png under {s}/train_label or {s}/test_label")
    return d


def link_ade20k(src: str | os.PathLike, dst: str | os.PathLike, splits: tuple[str, ...] = ("training", "validation")
                ) -> Path:
    """The SceneParsing kit's ``images/`` + ``annotations/`` -> ``ADEChallengeData2016/{images,annotations}/<split>``
    for every split in ``splits`` (each a link to the same folder)."""
    s, d = _src(src, "images", "annotations"), _fresh(dst)
    for kind in ("images", "annotations"):
        (d / "ADEChallengeData2016" / kind).mkdir(parents=True)
        for split in splits:
            (d / "ADEChallengeData2016" / kind / split).symlink_to(s / kind, target_is_directory=True)
    return d


def link_facades(src: str | os.PathLike, dst: str | os.PathLike, phases: tuple[str, ...] = ("train", "val"),
                 labels: str = "masks", images: str = "images") -> Path:
    """A facades ``masks/`` (palette PNGs) + ``images/`` pair of folders -> ``<phase>_label/`` + ``<phase>_img/``."""
    s, d = _src(src, labels, images), _fresh(dst)
    for phase in phases:
        (d / f"{phase}_label").symlink_to(s / labels, target_is_directory=True)
        (d / f"{phase}_img").symlink_to(s / images, target_is_directory=True)
    return d


LINKERS = {"cityscapes": link_cityscapes, "ade20k": link_ade20k, "facades": link_facades}


def prepare(kind: str, src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Link ``src`` into the layout of ``data=<kind>`` under ``dst``."""
    if kind not in LINKERS:
        raise AsapError(f"prepare_data: kind={kind!r} is not one of {', '.join(LINKERS)}")
    return LINKERS[kind](src, dst)


def count_files(root: Path) -> int:
    """Image files reachable under ``root`` (following the links)."""
    return sum(1 for _, _, fs in os.walk(root, followlinks=True) for f in fs
               if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
