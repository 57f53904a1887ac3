"""ADE20K (the SceneParsing ADEChallengeData2016 release), read as the official SPADE ADE20K dataset reads it.

    <root>/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_XXXXXXXX.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_XXXXXXXX.png   ids 0..150

(``root`` may also be the ADEChallengeData2016 folder itself.) Labels and photos are matched by file stem.
Ids follow SPADE's ``postprocess``: the generic dontcare rule (255 -> label_nc) first, then every id is
shifted down by one and the resulting -1 (file id 0, "unlabeled") becomes label_nc = 150, the dontcare class
(``contain_dontcare_label``). So file ids 1..150 become 0..149 and file id 0 becomes 150. No instance maps.
Files are read by :func:`asap.data.labels.read_label_ids` (as translate.py labels=ade20k reads them): a map
saved in the ADE20K colours decodes to the same file ids.
Preset: resize_and_crop, load 286 (train) / 256 (test), crop 256, flip when training.
"""
from __future__ import annotations

import os

from asap.errors import AsapError

from .labels import ADE20K_CLASSES as NUM_CLASSES
from .paired import PairedDataset, Sample, list_files, match_by_key

SPLIT_DIRS = {"train": "training", "training": "training", "val": "validation", "validation": "validation"}


class ADE20KDataset(PairedDataset):
    """ADE20K scene-parsing labels -> photos (SPADE id convention)."""

    name = "ade20k"
    convention = "ade20k"     # ADE20K palette for colour files, SPADE's id shift (asap.data.labels.ade20k_ids)

    def __init__(self, root: str | os.PathLike, split: str = "train", *, label_nc: int = NUM_CLASSES,
                 contain_dontcare_label: bool = True, preprocess_mode: str = "resize_and_crop", load_size: int = 286,
                 crop_size: int = 256, aspect_ratio: float = 1.0, flip: bool | None = None,
                 crop_position: str = "random", skip_bad: bool = False, max_samples: int | None = None) -> None:
        if split not in SPLIT_DIRS:
            raise AsapError(f"{self.name}: split={split!r} is not one of train, val")
        sub = SPLIT_DIRS[split]
        root_path = self.check_root(root, "ADEChallengeData2016/{images,annotations}/")
        base = root_path if (root_path / "annotations").is_dir() else root_path / "ADEChallengeData2016"
        want = f"ADEChallengeData2016/annotations/{sub}/*.png"
        labels = list_files(base / "annotations" / sub, (".png",), recursive=False)
        if not labels:
            raise self.layout_error(want, root_path)
        images = list_files(base / "images" / sub, (".jpg", ".jpeg", ".png"), recursive=False)
        if not images:
            raise self.layout_error(f"ADEChallengeData2016/images/{sub}/*.jpg", root_path)
        pairs = match_by_key(labels, images, lambda p: p.stem, self.name, skip_bad)
        if not pairs:
            raise self.layout_error(want + " with matching images", root_path, "no complete pair")
        self.root, self.split = root_path, split
        super().__init__([Sample(lab, img) for lab, img in pairs], label_nc=label_nc,
                         contain_dontcare_label=contain_dontcare_label, preprocess_mode=preprocess_mode,
                         load_size=load_size, crop_size=crop_size, aspect_ratio=aspect_ratio,
                         flip=(split == "train") if flip is None else flip, crop_position=crop_position,
                         skip_bad=skip_bad, max_samples=max_samples)
