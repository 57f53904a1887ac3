"""Label map files -> generator input tensors -> image files: the engine behind tools/translate.py.

Label and instance files are read by :func:`asap.data.labels.read_label_ids` and mapped by the same label
convention as the training datasets (``labels=cityscapes`` reads a file as CityscapesDataset does, and so on), so
a file gives the same ids, or the same one-line error, in training and here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from asap.data.labels import CONVENTIONS as DATASET_CONVENTIONS
from asap.data.labels import LabelConvention, first_out_of_range, get_convention, read_label_ids
from asap.data.preprocess import SemanticSpec, semantic_input
from asap.errors import AsapError
from asap.utils.io import AtomicFiles, atomic_files, save_png

IMAGE_EXTS = {".png", ".bmp", ".tif", ".tiff", ".jpg", ".jpeg", ".webp"}
# labels=...: how ids stored in files map to the model's ids; the names are the training datasets' conventions
CONVENTIONS = ("auto", *DATASET_CONVENTIONS)
AUTO_BY_LABEL_NC = {35: "cityscapes", 150: "ade20k"}


@dataclass
class LabelInput:
    """One input: the label ids (model convention) and instance ids, both HxW int64, plus names."""

    path: Path
    label: np.ndarray
    instance: np.ndarray | None


# Cityscapes file kinds that sit beside label maps but are never label maps
NOT_LABELS = ("_instanceIds.png", "_leftImg8bit.png", "_leftImg8bit.jpg")


def label_files_in(folder: Path) -> list[Path]:
    """The label maps of a folder by the datasets' naming rules: a Cityscapes folder gives its ``*_labelIds.png``
    (never ``*_instanceIds.png`` or photos); any other folder gives its image files (sorted)."""
    found = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
    cityscapes = [f for f in found if f.name.endswith("_labelIds.png")]
    return cityscapes or [f for f in found if not f.name.endswith(NOT_LABELS)]


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files stay, folders expand to their label maps (:func:`label_files_in`); missing paths are an error."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = label_files_in(p)
            if not found:
                raise AsapError(f"{p}: folder holds no label maps (image files other than *_instanceIds.png and "
                                f"*_leftImg8bit photos)")
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


def label_convention(labels: str, spec: SemanticSpec) -> LabelConvention:
    """``labels=`` -> the training datasets' convention; ``auto`` picks by label_nc (35 Cityscapes, 150 ADE20K)."""
    if labels not in CONVENTIONS:
        raise AsapError(f"labels={labels!r} is not one of {', '.join(CONVENTIONS)}")
    name = AUTO_BY_LABEL_NC.get(spec.label_nc, "ids") if labels == "auto" else labels
    return get_convention(name)


def check_label_set(path: Path, spec: SemanticSpec) -> None:
    """Refuse, in one line, a file whose name says which label set it uses when the model was trained on another
    (a Cityscapes ``*_gtFine_labelIds.png`` holds the 35 Cityscapes ids)."""
    if path.name.endswith("_labelIds.png") and spec.label_nc != 35:
        raise AsapError(f"{path}: a Cityscapes labelIds map (label_nc=35) but the checkpoint's generator has "
                        f"label_nc={spec.label_nc}; use a Cityscapes checkpoint")


def ids_from_file(path: Path, spec: SemanticSpec, labels: str = "auto") -> np.ndarray:
    """A label file -> the model's ids, read and mapped exactly as the training dataset of that convention does."""
    check_label_set(path, spec)
    conv = label_convention(labels, spec)
    raw = read_label_ids(path, conv.palette, "label map")
    ids = conv.map_ids(raw, spec.label_nc)
    bad = first_out_of_range(raw, ids, spec.num_label_channels)
    if bad is not None:
        dc = f" (dontcare id {spec.label_nc} included)" if spec.contain_dontcare_label else ""
        raise AsapError(f"{path}: label id {bad} is outside 0..{spec.num_label_channels - 1} "
                        f"(label_nc={spec.label_nc}{dc})")
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
        ids = ids_from_file(p, spec, labels)
        inst = None
        if spec.uses_instance:
            ipath = find_instance(p, instance, len(paths))
            if ipath is None:
                warned = True
                inst = ids.copy()
            else:
                inst = read_label_ids(ipath, None, "instance map")
                if inst.shape != ids.shape:
                    raise AsapError(f"{ipath}: instance map size {inst.shape[1]}x{inst.shape[0]} differs from "
                                    f"label map {p.name} size {ids.shape[1]}x{ids.shape[0]}")
        if resize == "native":
            check_native_size(p, ids.shape, model)
        if resize == "model" and size is not None:
            ids = resize_nearest(ids, size)
            inst = resize_nearest(inst, size) if inst is not None else None
        out.append(LabelInput(p, ids, inst))
    if warned:  # said only once every input has passed its checks, so a failure stays one line
        warn("note: no instance maps given; using the label maps as instance maps (class boundaries as edges)")
    return out


def output_names(paths: Sequence[Path], out_dir: str | Path) -> list[Path]:
    """``<out_dir>/<stem>.png`` per input; two inputs with one stem would overwrite each other: one-line error."""
    out_dir, seen = Path(out_dir), {}
    for p in paths:
        if p.stem in seen:
            raise AsapError(f"{p} and {seen[p.stem]} would both be written to {out_dir / (p.stem + '.png')}; "
                            f"translate them in separate runs or rename one")
        seen[p.stem] = p
    return [out_dir / f"{p.stem}.png" for p in paths]


def check_native_size(path: Path, shape: Sequence[int], model: nn.Module) -> None:
    """With resize=native, each side must be at least the network's total downsampling factor (smaller inputs
    leave nothing to normalise at the lowest resolution)."""
    multiple = int(getattr(model, "downsampling", 1))
    smallest = 2 * multiple
    h, w = int(shape[0]), int(shape[1])
    if h < smallest or w < smallest:
        raise AsapError(f"{path}: label map is {w}x{h}; with resize=native each side must be at least {smallest} px "
                        f"(twice the generator's downsampling {multiple}); use resize=model")


def _pad_to_multiple(t: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    h, w = t.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        t = torch.nn.functional.pad(t.float(), (0, pw, 0, ph), mode="replicate").long()
    return t, (h, w)


def run_generator(model: nn.Module, spec: SemanticSpec, label: torch.Tensor, inst: torch.Tensor | None,
                  multiple: int) -> torch.Tensor:
    """Id maps [B,1,H,W] (+ instance ids) on the model's device -> images [B,3,H,W] in [-1, 1]: the input is padded
    (edge replicate) to a multiple of the downsampling and the output cropped back; shared by translate and the demo."""
    h, w = label.shape[-2:]
    label, _ = _pad_to_multiple(label, multiple)
    if inst is not None:
        inst, _ = _pad_to_multiple(inst, multiple)
    x = semantic_input(label, inst, spec, check=False)
    return model(x)[..., :h, :w]


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
    with atomic_files() as files:  # every image appears at the end, or none does
        for group in groups.values():
            busy += _translate_group(model, spec, group, out_dir, device, batch_size, multiple, files, written)
    return written, (len(items) / busy if busy > 0 else float("inf"))


def _translate_group(model: nn.Module, spec: SemanticSpec, group: Sequence[LabelInput], out_dir: Path,
                     device: torch.device, batch_size: int, multiple: int, files: AtomicFiles,
                     written: list[Path]) -> float:
    """Translate one group of equal-size inputs into ``files``; returns the seconds spent computing."""
    busy = 0.0
    for i in range(0, len(group), batch_size):
        chunk = group[i:i + batch_size]
        t0 = time.perf_counter()
        label = torch.from_numpy(np.stack([c.label for c in chunk])).unsqueeze(1).to(device)
        inst = None
        if spec.uses_instance:
            inst = torch.from_numpy(np.stack([c.instance for c in chunk])).unsqueeze(1).to(device)
        try:
            images = run_generator(model, spec, label, inst, multiple)
        except (RuntimeError, ValueError) as e:  # e.g. an input too small for the network's downsampling
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            h, w = label.shape[-2:]
            raise AsapError(f"{chunk[0].path}: the generator cannot run on this {w}x{h} input: {first}") from e
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        busy += time.perf_counter() - t0
        for c, img in zip(chunk, images):
            written.append(save_png(to_uint8(img), out_dir / f"{c.path.stem}.png", files))
    return busy
