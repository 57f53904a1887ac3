"""Any label folder + photo folder (+ optional instance folder), matched by file name without extension.

    <label_dir>/a.png      <image_dir>/a.jpg      [<instance_dir>/a.png]
    <label_dir>/sub/b.png  <image_dir>/sub/b.png  [<instance_dir>/sub/b.png]

Files are matched by their path relative to the folder, without extension (so sub-folders are allowed). Label
maps hold one id per pixel (8/16-bit grey or palette PNG); colour-coded maps are decoded with
``label_palette`` (a palette name such as ``cityscapes``), by the rules of :func:`asap.data.labels.read_label_ids`
that translate.py shares. Id 255 is dontcare (-> label_nc), as officially.
Defaults follow SPADE's ``custom`` dataset preset: resize_and_crop, load 286 (test 256), crop 256.
"""
from __future__ import annotations

import os
from pathlib import Path

from asap.errors import AsapError

from .paired import PairedDataset, Sample, list_files, match_by_key


class PairsDataset(PairedDataset):
    """Label maps and photos from two folders matched by name."""

    name = "pairs"

    def __init__(self, label_dir: str | os.PathLike, image_dir: str | os.PathLike,
                 instance_dir: str | os.PathLike | None = None, *, label_nc: int, contain_dontcare_label: bool = False,
                 preprocess_mode: str = "resize_and_crop", load_size: int = 286, crop_size: int = 256,
                 aspect_ratio: float = 1.0, flip: bool = False, crop_position: str = "random",
                 skip_bad: bool = False, max_samples: int | None = None, label_palette: str | None = None) -> None:
        dirs = {"label_dir": label_dir, "image_dir": image_dir}
        if instance_dir is not None:
            dirs["instance_dir"] = instance_dir
        paths: dict[str, Path] = {}
        for key, d in dirs.items():
            p = Path(d).expanduser().resolve()
            if not p.is_dir():
                raise AsapError(f"{self.name}: {key} {p} does not exist (expected a folder of images)")
            paths[key] = p
        labels = list_files(paths["label_dir"], (".png", ".bmp", ".tif", ".tiff"))
        if not labels:
            raise AsapError(f"{self.name}: expected label maps (*.png) in {paths['label_dir']} (found nothing)")
        images = list_files(paths["image_dir"])
        if not images:
            raise AsapError(f"{self.name}: expected images (*.jpg, *.png, ...) in {paths['image_dir']} "
                            f"(found nothing)")

        def key_in(folder: Path):
            return lambda p: p.relative_to(folder).with_suffix("").as_posix()

        lab_key = key_in(paths["label_dir"])
        image_by = dict(match_by_key(labels, images, lab_key, self.name, skip_bad,
                                     image_key=key_in(paths["image_dir"])))
        inst_by: dict[Path, Path] = {}
        if "instance_dir" in paths:
            inst_files = list_files(paths["instance_dir"], (".png", ".tif", ".tiff"))
            inst_by = dict(match_by_key(list(image_by), inst_files, lab_key, self.name, skip_bad, "instance map",
                                        image_key=key_in(paths["instance_dir"])))
        samples = [Sample(lab, img, inst_by.get(lab)) for lab, img in image_by.items()
                   if "instance_dir" not in paths or lab in inst_by]
        if not samples:
            raise AsapError(f"{self.name}: no label map in {paths['label_dir']} has a matching image in "
                            f"{paths['image_dir']}")
        self.label_dir, self.image_dir = paths["label_dir"], paths["image_dir"]
        self.instance_dir = paths.get("instance_dir")
        super().__init__(samples, label_nc=label_nc, contain_dontcare_label=contain_dontcare_label,
                         preprocess_mode=preprocess_mode, load_size=load_size, crop_size=crop_size,
                         aspect_ratio=aspect_ratio, flip=flip, crop_position=crop_position, skip_bad=skip_bad,
                         max_samples=max_samples, label_palette=label_palette)
