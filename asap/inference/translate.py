"""Label map files -> generator input tensors -> image files: the engine behind tools/translate.py."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image, UnidentifiedImageError

from asap.data.preprocess import SemanticSpec, check_label_ids, semantic_input
from asap.errors import AsapError
from asap.utils.io import save_png

IMAGE_EXTS = {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
# label conventions: how ids stored in files map to the model's ids (see ids_from_file)
CONVENTIONS = ("auto", "ids", "cityscapes", "ade20k", "facades")


@dataclass
class LabelInput:
    """One input: the label ids (model convention) and instance ids, both HxW int64, plus names."""

    path: Path
    label: np.ndarray
    instance: np.ndarray | None


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files stay, folders expand to their image files (sorted); missing paths are an error."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
            if not found:
                raise AsapError(f"{p}: folder holds no image files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise AsapError(f"{p}: no such file or folder")
    if not out:
        raise AsapError("no input label maps given (pass files or folders as arguments)")
    stems = [p.stem for p in out]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise AsapError(f"two inputs share the file stem '{dup[0]}'; outputs are named by stem")
    return out


def read_image_array(path: Path) -> np.ndarray:
    """Read an image file fully into a numpy array; unreadable or corrupt files raise AsapError."""
    if not path.is_file():
        raise AsapError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                return np.array(im)  # palette images store ids as indices
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return np.array(im).astype(np.int64)
            if im.mode == "RGBA":
                arr = np.array(im)
                if (arr[..., 3] != 255).any():
                    raise AsapError(f"{path}: RGBA label map with transparent pixels; expected an id map or an "
                                    f"opaque colour-coded map")
                return arr[..., :3]
            if im.mode not in ("L", "RGB", "1"):
                raise AsapError(f"{path}: unsupported image mode {im.mode} ({len(im.getbands())} channels); expected "
                                f"a single-channel id map or an RGB colour-coded label map")
            return np.array(im.convert("L") if im.mode == "1" else im)
    except AsapError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise AsapError(f"{path}: unreadable or corrupt image ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from e


def _palette_for(convention: str, spec: SemanticSpec) -> str | None:
    if convention in ("cityscapes", "ade20k", "facades"):
        return convention
    if convention == "auto":
        if spec.label_nc == 35:
            return "cityscapes"
        if spec.label_nc == 150:
            return "ade20k"
    return None


def ids_from_file(arr: np.ndarray, path: Path, spec: SemanticSpec, convention: str = "auto") -> np.ndarray:
    """Raw file content (ids or RGB colours) -> label ids in the model's convention, checked against label_nc."""
    if convention not in CONVENTIONS:
        raise AsapError(f"labels={convention!r} is not one of {', '.join(CONVENTIONS)}")
    palette_name = _palette_for(convention, spec)
    if arr.ndim == 3:
        if arr.shape[2] != 3:
            raise AsapError(f"{path}: {arr.shape[2]} channels; expected 1 (ids) or 3 (colour-coded labels)")
        if (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all() and palette_name is None:
            ids = arr[..., 0].astype(np.int64)
        else:
            if palette_name is None:
                raise AsapError(f"{path}: colour-coded label map but no palette is known for label_nc="
                                f"{spec.label_nc}; pass labels=cityscapes|ade20k|facades")
            from asap.data.palettes import colors_to_ids, get_palette
            ids = colors_to_ids(arr, get_palette(palette_name), source=str(path)).astype(np.int64)
    elif arr.ndim == 2:
        ids = arr.astype(np.int64)
    else:
        raise AsapError(f"{path}: unexpected array shape {arr.shape}")
    dataset = palette_name if convention == "auto" else convention
    if dataset == "ade20k":
        # ADE20K files: 0 = unlabeled, 1..150 classes -> model ids 0..149, dontcare = label_nc
        ids = ids - 1
        ids[ids < 0] = spec.label_nc if spec.contain_dontcare_label else -1
    elif spec.contain_dontcare_label:
        ids[ids == 255] = spec.label_nc
    check_label_ids(torch.from_numpy(ids), spec, source=str(path))
    return ids


def find_instance(label_path: Path, instance: str | Path | None, num_inputs: int) -> Path | None:
    """Instance map for ``label_path``: the given file (one input only), a folder matched by stem, or the
    Cityscapes sibling ``*_instanceIds.png``; None when there is none."""
    if instance is not None:
        inst = Path(instance)
        if inst.is_file():
            if num_inputs != 1:
                raise AsapError(f"instance={inst} is a single file but {num_inputs} label maps were given; "
                                f"pass a folder of instance maps matched by file stem")
            return inst
        if not inst.is_dir():
            raise AsapError(f"{inst}: no such instance file or folder")
        stem = label_path.stem
        stems = dict.fromkeys([stem, stem.replace("labelIds", "instanceIds"), stem.replace("label", "instance")])
        for s in stems:
            for cand in sorted(inst.glob(f"{s}.*")):
                if cand.suffix.lower() in IMAGE_EXTS and cand.resolve() != label_path.resolve():
                    return cand
        raise AsapError(f"{inst}: no instance map for {label_path.name} (expected a file named {label_path.stem}.png)")
    if "labelIds" in label_path.name:
        sib = label_path.with_name(label_path.name.replace("labelIds", "instanceIds"))
        if sib.is_file():
            return sib
    return None


def resize_nearest(arr: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of an id map with PIL (as the official datasets do)."""
    h, w = size_hw
    if arr.shape[:2] == (h, w):
        return arr
    im = Image.fromarray(arr.astype(np.int32), mode="I")
    return np.array(im.resize((w, h), Image.NEAREST)).astype(np.int64)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3,H,W] in [-1,1] -> HxWx3 uint8 as the official code renders: (x+1)/2*255, clipped, truncated."""
    arr = ((image.detach().float().cpu().numpy().transpose(1, 2, 0) + 1) / 2.0 * 255.0)
    return np.clip(arr, 0, 255).astype(np.uint8)


def model_spec(model: nn.Module) -> SemanticSpec:
    spec = getattr(model, "spec", None)
    if not isinstance(spec, SemanticSpec):
        raise AsapError(f"{type(model).__name__} is not a label-to-image generator")
    return spec


def prepare(paths: Sequence[Path], model: nn.Module, instance: str | Path | None = None, labels: str = "auto",
            resize: str = "model", warn: Callable[[str], None] = print) -> list[LabelInput]:
    """Read and check every input before any output is written (a bad file fails the whole run up front)."""
    spec = model_spec(model)
    size = getattr(model, "image_size", None)
    if resize not in ("model", "native"):
        raise AsapError(f"resize={resize!r} must be 'model' or 'native'")
    out, warned = [], False
    for p in paths:
        ids = ids_from_file(read_image_array(p), p, spec, labels)
        inst = None
        if spec.uses_instance:
            ipath = find_instance(p, instance, len(paths))
            if ipath is None:
                warned = True
                inst = ids.copy()
            else:
                inst = read_image_array(ipath)
                if inst.ndim != 2:
                    raise AsapError(f"{ipath}: instance map must have one channel, found {inst.shape[2]}")
                inst = inst.astype(np.int64)
                if inst.shape != ids.shape:
                    raise AsapError(f"{ipath}: instance map size {inst.shape[1]}x{inst.shape[0]} differs from "
                                    f"label map {p.name} size {ids.shape[1]}x{ids.shape[0]}")
        if resize == "model" and size is not None:
            ids = resize_nearest(ids, size)
            inst = resize_nearest(inst, size) if inst is not None else None
        out.append(LabelInput(p, ids, inst))
    if warned:  # said only once every input has passed its checks, so a failure stays one line
        warn("note: no instance maps given; using the label maps as instance maps (class boundaries as edges)")
    return out


def _pad_to_multiple(t: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = t.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        t = torch.nn.functional.pad(t.float(), (0, pw, 0, ph), mode="replicate").long()
    return t, (h, w)


@torch.inference_mode()
def translate(model: nn.Module, items: Sequence[LabelInput], out_dir: str | Path, device: torch.device,
              batch_size: int = 4) -> tuple[list[Path], float]:
    """Run the generator on ``items`` in batches of equal size; write ``<out_dir>/<stem>.png``.

    Returns the written paths and the throughput in images/s (generator + preprocessing, excluding file I/O).
    """
    if batch_size < 1:
        raise AsapError(f"batch_size must be >= 1, got {batch_size}")
    spec = model_spec(model)
    multiple = int(getattr(model, "downsampling", 1))
    model = model.to(device).eval()
    out_dir = Path(out_dir)
    groups: dict[tuple[int, int], list[LabelInput]] = {}
    for it in items:
        groups.setdefault(it.label.shape, []).append(it)
    written, busy = [], 0.0
    for group in groups.values():
        for i in range(0, len(group), batch_size):
            chunk = group[i:i + batch_size]
            t0 = time.perf_counter()
            label = torch.from_numpy(np.stack([c.label for c in chunk])).unsqueeze(1).to(device)
            inst = None
            if spec.uses_instance:
                inst = torch.from_numpy(np.stack([c.instance for c in chunk])).unsqueeze(1).to(device)
            label, (h, w) = _pad_to_multiple(label, multiple)
            if inst is not None:
                inst, _ = _pad_to_multiple(inst, multiple)
            x = semantic_input(label, inst, spec, check=False)
            images = model(x)[..., :h, :w]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            busy += time.perf_counter() - t0
            for c, img in zip(chunk, images):
                written.append(save_png(to_uint8(img), out_dir / f"{c.path.stem}.png"))
    return written, (len(items) / busy if busy > 0 else float("inf"))
