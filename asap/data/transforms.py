"""One geometric pipeline applied identically to a label map, its instance map and its photo (albumentations).

The preprocess modes are those of the official SPADE/ASAPNet ``data/base_dataset.py``:

- ``fixed``: resize to ``crop_size`` x ``round(crop_size / aspect_ratio)`` (W x H); no crop.
- ``resize_and_crop``: resize to ``load_size`` x ``load_size``, then crop ``crop_size`` x ``crop_size``.
- ``scale_width_and_crop``: width to ``load_size`` (height ``int(load_size * h / w)``), then crop.
- ``scale_shortside_and_crop``: shorter side to ``load_size`` (longer ``int(load_size * long / short)``), then
  crop. (The official ``__scale_shortside`` keeps the original short side by mistake, which distorts the
  aspect; we scale as the option's name and help say.)
- ``none``: round each side to the nearest multiple of 32.
- then a horizontal flip with probability 1/2 when ``flip`` (the official code flips only when training and
  not ``--no_flip``).

Crops that reach past the image are padded with zeros at the right/bottom, as PIL's ``crop`` does in the
official code. The random crop corner and flip are drawn from Python's ``random`` module in the official order
(x, y, flip), so seeding ``random`` (as ``asap.training.loader.SeededDataset`` does) makes a sample reproducible.
Label and instance maps use nearest-neighbour resampling (``INTER_NEAREST_EXACT``: PIL's pixel-centre rule);
photos use area averaging when shrinking and bicubic when enlarging.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from asap.errors import AsapError

PREPROCESS_MODES = ("fixed", "resize_and_crop", "scale_width_and_crop", "scale_shortside_and_crop", "none")
CROP_POSITIONS = ("random", "center")


def output_size(preprocess_mode: str, crop_size: int, aspect_ratio: float) -> list[int]:
    """[H, W] of what the model sees for a mode (nominal for ``none``, whose size follows the files)."""
    if preprocess_mode in ("fixed", "none"):
        return [int(round(crop_size / aspect_ratio)), int(crop_size)]
    if preprocess_mode not in PREPROCESS_MODES:
        raise AsapError(f"preprocess_mode={preprocess_mode!r} is not one of {', '.join(PREPROCESS_MODES)}")
    return [int(crop_size), int(crop_size)]


@dataclass(frozen=True)
class JointTransform:
    """Resize / crop / flip with the official preprocess options; see the module docstring."""

    preprocess_mode: str = "fixed"
    load_size: int = 512
    crop_size: int = 512
    aspect_ratio: float = 1.0
    flip: bool = False
    crop_position: str = "random"   # "random" (official) or "center" (deterministic, for held-out scoring)

    def __post_init__(self) -> None:
        if self.preprocess_mode not in PREPROCESS_MODES:
            raise AsapError(f"preprocess_mode={self.preprocess_mode!r} is not one of {', '.join(PREPROCESS_MODES)}")
        if self.crop_position not in CROP_POSITIONS:
            raise AsapError(f"crop_position={self.crop_position!r} is not one of {', '.join(CROP_POSITIONS)}")
        if int(self.load_size) < 1 or int(self.crop_size) < 1 or float(self.aspect_ratio) <= 0:
            raise AsapError(f"load_size, crop_size and aspect_ratio must be positive (got {self.load_size}, "
                            f"{self.crop_size}, {self.aspect_ratio})")

    @property
    def crops(self) -> bool:
        return self.preprocess_mode.endswith("_and_crop")

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """(H, W) after the resize step, before any crop."""
        m, load, crop = self.preprocess_mode, int(self.load_size), int(self.crop_size)
        if m == "fixed":
            return int(round(crop / self.aspect_ratio)), crop
        if m == "resize_and_crop":
            return load, load
        if m == "scale_width_and_crop":
            return (h, w) if w == load else (int(load * h / w), load)
        if m == "scale_shortside_and_crop":
            short, long = min(h, w), max(h, w)
            if short == load:
                return h, w
            long = int(load * long / short)
            return (long, load) if w == short else (load, long)
        base = 32  # "none"
        return max(base, int(round(h / base) * base)), max(base, int(round(w / base) * base))

    def sample_params(self, h: int, w: int, rng: Any = random) -> dict[str, Any]:
        """Crop corner and flip for an (h, w) input, drawn like the official ``get_params``."""
        rh, rw = self.resized_size(h, w)
        crop = int(self.crop_size)
        if self.crop_position == "center":
            x, y = max(0, rw - crop) // 2, max(0, rh - crop) // 2
        else:
            x = rng.randint(0, max(0, rw - crop))
            y = rng.randint(0, max(0, rh - crop))
        do_flip = bool(self.flip) and rng.random() > 0.5
        return {"size": (rh, rw), "crop_pos": (x, y), "flip": do_flip}

    def pipeline(self, h: int, w: int, params: dict[str, Any], with_instance: bool) -> Any:
        """The albumentations Compose for one sample (all randomness already fixed in ``params``)."""
        import albumentations as A

        rh, rw = params["size"]
        ops: list[Any] = []
        if (rh, rw) != (h, w):
            ops.append(A.Resize(rh, rw, interpolation=cv2.INTER_CUBIC, mask_interpolation=cv2.INTER_NEAREST_EXACT,
                                area_for_downscale="image"))
        if self.crops:
            crop = int(self.crop_size)
            x, y = params["crop_pos"]
            if rh < y + crop or rw < x + crop:
                ops.append(A.PadIfNeeded(min_height=max(rh, y + crop), min_width=max(rw, x + crop),
                                         position="top_left", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0))
            ops.append(A.Crop(x_min=x, y_min=y, x_max=x + crop, y_max=y + crop))
        if params["flip"]:
            ops.append(A.HorizontalFlip(p=1.0))
        return A.Compose(ops, additional_targets={"instance": "mask"} if with_instance else None)

    def __call__(self, label: np.ndarray, image: np.ndarray | None = None, instance: np.ndarray | None = None,
                 rng: Any = random) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Transform HxW ``label`` (ints), HxWx3 uint8 ``image`` and HxW ``instance`` the same way."""
        h, w = label.shape[:2]
        params = self.sample_params(h, w, rng)
        if image is None:
            image = np.zeros((h, w, 3), np.uint8)
            no_image = True
        else:
            no_image = False
        lab = label.astype(np.int32, copy=False)
        data = {"image": image, "mask": lab}
        if instance is not None:
            data["instance"] = instance.astype(np.int32, copy=False)
        out = self.pipeline(h, w, params, instance is not None)(**data)
        return (np.asarray(out["mask"]), None if no_image else np.asarray(out["image"]),
                np.asarray(out["instance"]) if instance is not None else None)


@dataclass(frozen=True)
class SquareTransform:
    """Shorter side to ``size``, centre crop ``size`` x ``size``, then a random horizontal flip when ``flip``
    (unconditional image datasets)."""

    size: int
    flip: bool = False

    def __call__(self, image: np.ndarray, rng: Any = random) -> np.ndarray:
        import albumentations as A

        ops: list[Any] = [A.SmallestMaxSize(max_size=int(self.size), interpolation=cv2.INTER_CUBIC,
                                            area_for_downscale="image"),
                          A.CenterCrop(int(self.size), int(self.size))]
        if self.flip and rng.random() > 0.5:
            ops.append(A.HorizontalFlip(p=1.0))
        return np.asarray(A.Compose(ops)(image=image)["image"])
