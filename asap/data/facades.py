"""CMP Facades as the official ASAPNet code reads it (``data/facades_dataset.py``).

    <root>/train_label/cmp_bXXXX.png   palette ("P" mode) PNGs: the pixel values are the class ids 1..12
    <root>/train_img/cmp_bXXXX.jpg
    <root>/val_label/...  <root>/val_img/...       (phase "test" reads val, as officially)

The label PNGs are read as stored (palette indices, not colours): 1 background, 2 facade, 3 window, 4 door,
5 cornice, 6 sill, 7 balcony, 8 blind, 9 deco, 10 molding, 11 pillar, 12 shop; 0 is unused, hence
label_nc 13 with no dontcare channel (an RGB map in the facades colours
reads the same: asap.data.labels). Labels and photos are matched by file stem. No instance maps.
Preset: resize_and_crop, load 286 (train) / 256 (test), crop 256, flip when training.
"""
from __future__ import annotations

import os

from asap.errors import AsapError

from .paired import PairedDataset, Sample, list_files, match_by_key

PHASES = {"train": "train", "val": "val", "test": "val"}


class FacadesDataset(PairedDataset):
    """CMP Facades labels -> photos."""

    name = "facades"
    convention = "facades"     # colour-coded files use the facades palette (asap.data.labels)

    def __init__(self, root: str | os.PathLike, split: str = "train", *, label_nc: int = 13,
                 contain_dontcare_label: bool = False, preprocess_mode: str = "resize_and_crop", load_size: int = 286,
                 crop_size: int = 256, aspect_ratio: float = 1.0, flip: bool | None = None,
                 crop_position: str = "random", skip_bad: bool = False, max_samples: int | None = None) -> None:
        if split not in PHASES:
            raise AsapError(f"{self.name}: split={split!r} is not one of train, val, test")
        phase = PHASES[split]
        root_path = self.check_root(root, f"{phase}_label/ and {phase}_img/")
        want = f"{phase}_label/*.png"
        labels = list_files(root_path / f"{phase}_label", (".png",), recursive=False)
        if not labels:
            raise self.layout_error(want, root_path)
        images = list_files(root_path / f"{phase}_img", recursive=False)
        if not images:
            raise self.layout_error(f"{phase}_img/*.jpg", root_path)
        pairs = match_by_key(labels, images, lambda p: p.stem, self.name, skip_bad)
        if not pairs:
            raise self.layout_error(want + f" with matching {phase}_img images", root_path, "no complete pair")
        self.root, self.split = root_path, split
        super().__init__([Sample(lab, img) for lab, img in pairs], label_nc=label_nc,
                         contain_dontcare_label=contain_dontcare_label, preprocess_mode=preprocess_mode,
                         load_size=load_size, crop_size=crop_size, aspect_ratio=aspect_ratio,
                         flip=(split == "train") if flip is None else flip, crop_position=crop_position,
                         skip_bad=skip_bad, max_samples=max_samples)
