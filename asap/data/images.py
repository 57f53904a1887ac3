"""Unconditional image folder: every image under a root (recursive), shorter side resized to ``size`` and centre
cropped to ``size`` x ``size``; items are ``dict(image=FloatTensor[3,size,size] in [-1,1], path=str)``."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from asap.errors import AsapError

from .collate import collate
from .paired import IMAGE_EXTENSIONS, list_files, read_rgb
from .transforms import SquareTransform

log = logging.getLogger("asap.data")


class ImageFolderDataset(Dataset):
    """All images under ``root`` (jpg, jpeg, png, bmp, webp, tif, tiff, ppm; naturally sorted)."""

    name = "images"
    collate_fn = staticmethod(collate)   # drops None items (skip_bad) and counts them in batch["skipped"]

    def __init__(self, root: str | os.PathLike, size: int = 256, flip: bool = False, *, skip_bad: bool = False,
                 max_samples: int | None = None) -> None:
        path = Path(root).expanduser().resolve()
        if not path.is_dir():
            raise AsapError(f"{self.name}: image folder {path} does not exist")
        files = list_files(path, IMAGE_EXTENSIONS, recursive=True)
        if not files:
            raise AsapError(f"{self.name}: expected images ({', '.join('*' + e for e in IMAGE_EXTENSIONS)}) under "
                            f"{path} (found nothing)")
        if int(size) < 1:
            raise AsapError(f"{self.name}: size must be positive (got {size})")
        self.root, self.files = path, files[: (int(max_samples) if max_samples is not None else None)]
        self.size, self.skip_bad = int(size), bool(skip_bad)
        self.transform = SquareTransform(self.size, bool(flip))

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        path = self.files[index]
        try:
            img = read_rgb(path)
        except AsapError as e:
            if not self.skip_bad:
                raise
            log.warning("skipping bad sample: %s", e)
            return None
        img = self.transform(img)
        tensor = torch.from_numpy(np.require(img, np.uint8, ["C", "W"])).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        return {"image": tensor, "path": str(path)}
