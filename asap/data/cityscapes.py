"""Cityscapes in its official layout (gtFine + leftImg8bit), read as the official ASAPNet/SPADE code reads it.

    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      label ids 0..33 (8-bit)
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   16-bit: id*1000+k or plain id
    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png     photo

or pix2pixHD's flat copy of it (``datasets/cityscapes/`` in NVIDIA/pix2pixHD), read as that code reads it:

    <root>/<split>_label/*_gtFine_labelIds.png   <root>/<split>_inst/*_gtFine_instanceIds.png
    <root>/<split>_img/*_leftImg8bit.png

The layout is picked by what ``root`` holds (``gtFine/`` first). Label, instance and photo are matched by the first three ``_``-separated name components
([city]_[seq]_[frame]), as the official ``paths_match`` does. Preset: label_nc 35, no dontcare channel,
preprocess ``fixed`` with crop 512 / aspect 2 (256x512), flip when training. Label files are read by
:func:`asap.data.labels.read_label_ids` (as translate.py reads them): a label map saved in the Cityscapes
colours decodes to the same ids.
"""
from __future__ import annotations

import os
from pathlib import Path
from asap.errors import AsapError

from .paired import PairedDataset, Sample, list_files, match_by_key

SPLITS = ("train", "val", "test")


def frame_key(path: Path) -> str:
    """[city]_[seq]_[frame] of a Cityscapes file name."""
    return "_".join(path.name.split("_")[:3])


class CityscapesDataset(PairedDataset):
    """Cityscapes label ids (+ instance ids) -> photos; items as described in :mod:`asap.data.paired`."""

    name = "cityscapes"
    convention = "cityscapes"     # colour-coded files use the cityscapes palette (asap.data.labels)

    def __init__(self, root: str | os.PathLike, split: str = "train", *, label_nc: int = 35,
                 contain_dontcare_label: bool = False, instance: bool = True, preprocess_mode: str = "fixed",
                 load_size: int = 512, crop_size: int = 512, aspect_ratio: float = 2.0, flip: bool | None = None,
                 crop_position: str = "random", skip_bad: bool = False, max_samples: int | None = None) -> None:
        if split not in SPLITS:
            raise AsapError(f"{self.name}: split={split!r} is not one of {', '.join(SPLITS)}")
        root_path = self.check_root(root, f"gtFine/ and leftImg8bit/ from the official Cityscapes download")
        flat = not (root_path / "gtFine").is_dir() and (root_path / f"{split}_label").is_dir()
        if flat:   # pix2pixHD's flat copy
            label_dir, image_dir, inst_dir = (root_path / f"{split}_{k}" for k in ("label", "img", "inst"))
            want, want_img = f"{split}_label/*_gtFine_labelIds.png", f"{split}_img/*_leftImg8bit.png"
        else:
            label_dir, image_dir = root_path / "gtFine" / split, root_path / "leftImg8bit" / split
            inst_dir = None
            want = f"gtFine/{split}/<city>/*_gtFine_labelIds.png"
            want_img = f"leftImg8bit/{split}/<city>/*_leftImg8bit.png"
        labels = [p for p in list_files(label_dir, (".png",)) if p.name.endswith("_gtFine_labelIds.png")]
        if not labels:
            raise self.layout_error(want, root_path)
        images = [p for p in list_files(image_dir, (".png", ".jpg")) if "_leftImg8bit" in p.name]
        if not images:
            raise self.layout_error(want_img, root_path)
        pairs = match_by_key(labels, images, frame_key, self.name, skip_bad, "leftImg8bit image")
        samples = []
        for lab, img in pairs:
            inst = None
            if instance:
                inst = lab.with_name(lab.name[: -len("_labelIds.png")] + "_instanceIds.png")
                if inst_dir is not None:
                    inst = inst_dir / inst.name
                if not inst.is_file():
                    if not skip_bad:
                        raise AsapError(f"{self.name}: no instance map {inst} for {lab} (set instance=false to "
                                        f"train without instance maps)")
                    continue
            samples.append(Sample(lab, img, inst))
        if not samples:
            raise self.layout_error(want + " with matching leftImg8bit images", root_path, "no complete pair")
        self.root, self.split = root_path, split
        super().__init__(samples, label_nc=label_nc, contain_dontcare_label=contain_dontcare_label,
                         preprocess_mode=preprocess_mode, load_size=load_size, crop_size=crop_size,
                         aspect_ratio=aspect_ratio, flip=(split == "train") if flip is None else flip,
                         crop_position=crop_position, skip_bad=skip_bad, max_samples=max_samples)

