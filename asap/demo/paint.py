"""Paint mode: a label map painted in the browser -> the photo of an ASAPNet/SPADE generator.

The page paints *model ids* (what the generator's one-hot input is indexed by) and instance ids on a canvas of the
model's size. :class:`PaintEngine` renders them through the same code as ``tools/translate.py``
(:func:`asap.inference.translate.run_generator`, same uint8 rounding), reads uploaded label/instance files with the
same reader and label convention (``labels=``), and writes the painted map back as a file that ``translate.py``
reads to the same ids: so a downloaded label map translated offline gives the downloaded photo.

Instance ids: a pixel outside any instance stroke carries its class id (what translate uses when no instance map is
given); each instance stroke gets a fresh id from :data:`FIRST_INSTANCE_ID` on, so two touching objects of one
class get an edge between them.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from asap.data.labels import LabelConvention, read_label_ids
from asap.data.palettes import (ADE20K_NAMES, CITYSCAPES_NAMES, FACADES_NAMES, get_palette)
from asap.errors import AsapError
from asap.inference.translate import (ids_from_file, label_convention, model_spec, resize_nearest, run_generator,
                                      to_uint8)

FIRST_INSTANCE_ID = 1000      # instance strokes get ids 1000, 1001, ...; class ids stay below (label_nc < 1000)
MAX_ID = 65535                # ids travel as uint16 between page and server
DONTCARE_FILE_ID = 255
DEFAULT_SIZE = (256, 512)     # canvas of a model that records no image size (an ASAPNet runs at any multiple of S)
NAMES = {"cityscapes": CITYSCAPES_NAMES, "ade20k": ADE20K_NAMES, "facades": FACADES_NAMES}


def label_colormap(n: int) -> np.ndarray:
    """The bit-interleaved colour map SPADE's visualiser uses for datasets without their own palette (e.g. COCO-Stuff):
    bits 0, 1, 2 of the id go to the high bits of red, green, blue, the next three to the next bits, and so on."""
    ids = np.arange(n)
    rgb = np.zeros((n, 3), np.int64)
    code = ids.copy()
    for bit in range(7, -1, -1):
        for channel in range(3):
            rgb[:, channel] |= ((code >> channel) & 1) << bit
        code >>= 3
    return rgb.astype(np.uint8)


def file_ids(model_ids: np.ndarray, convention: LabelConvention, label_nc: int) -> np.ndarray:
    """Model ids -> the ids a file of this convention stores (the inverse of ``convention.map_ids``): dontcare
    (``label_nc``) is written as 255, or as 0 (unlabeled) for ADE20K, whose other ids are shifted up by one."""
    ids = np.asarray(model_ids).astype(np.int64)
    if convention.name == "ade20k":
        return np.where(ids == label_nc, 0, ids + 1)
    return np.where(ids == label_nc, DONTCARE_FILE_ID, ids)


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """uint8 HxWx3 (or a PIL image) -> PNG bytes; level 1 because the page asks for one per stroke."""
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def safe_name(name: str | None, default: str = "upload") -> str:
    """The base name of an uploaded file, for messages: no folders, printable, at most 80 characters."""
    base = os.path.basename(str(name or "")).strip()
    base = re.sub(r"[^\w.\- ()+]", "_", base)[:80]
    return base or default


class PaintEngine:
    """Renders painted label maps with one label-to-image generator; all calls to ``render`` run on one thread."""

    channel = "paint"
    mode = "paint"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu", labels: str = "auto",
                 size: tuple[int, int] | None = None, source: str = "checkpoint") -> None:
        self.spec = model_spec(model)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.convention = label_convention(labels, self.spec)
        image_size = getattr(model, "image_size", None)
        self.height, self.width = (int(image_size[0]), int(image_size[1])) if image_size is not None \
            else tuple(int(v) for v in (size or DEFAULT_SIZE))
        self.multiple = int(getattr(model, "downsampling", 1))
        if self.spec.num_label_channels > FIRST_INSTANCE_ID:
            raise AsapError(f"{source}: label_nc={self.spec.label_nc} is too many classes for the demo (at most "
                            f"{FIRST_INSTANCE_ID})")
        self.source = str(source)
        self.colors, self.names = self._class_table()

    # ------------------------------------------------------------------------------------------------ description
    def _class_table(self) -> tuple[np.ndarray, list[str]]:
        """Colour and name of every model id, from the convention's palette and class names."""
        n, label_nc = self.spec.num_label_channels, self.spec.label_nc
        ids = np.arange(n)
        fids = file_ids(ids, self.convention, label_nc)
        colors = label_colormap(max(n, 256))[:n].copy()
        names = [f"id {i}" for i in range(n)]
        if self.convention.palette is not None:
            pal = get_palette(self.convention.palette)
            known = fids < len(pal)
            colors[known] = pal[fids[known]]
            table = NAMES.get(self.convention.name, ())
            offset = 1 if self.convention.name == "ade20k" else 0   # ADE20K names start at file id 1
            for i, f in enumerate(fids):
                if 0 <= f - offset < len(table):
                    names[i] = table[f - offset]
        if self.spec.contain_dontcare_label:
            colors[label_nc] = (0, 0, 0)
            names[label_nc] = "dontcare"
        return colors, names

    def start_map(self) -> list[list[int]]:
        """The map the page starts with, as bands [[class, rows], ...] from the top: sky over road for Cityscapes."""
        if self.convention.name == "cityscapes" and self.spec.num_label_channels > 23:
            return [[23, self.height // 2], [7, self.height - self.height // 2]]
        if self.convention.name == "ade20k":
            return [[2, self.height // 2], [6, self.height - self.height // 2]]   # sky over road
        first = 1 if self.convention.name == "facades" and self.spec.num_label_channels > 1 else 0
        return [[first, self.height]]

    def brush_class(self) -> int:
        """The class the brush starts with: a car on Cityscapes, a tree on ADE20K, a window on facades."""
        preferred = {"cityscapes": 26, "ade20k": 4, "facades": 3}.get(self.convention.name, 1)
        return preferred if preferred < self.spec.num_label_channels else 0

    def info(self) -> dict[str, Any]:
        """What the page needs: size, classes (id, name, colour), whether instance strokes matter."""
        return {
            "mode": self.mode, "model": type(self.model).__name__, "source": Path(self.source).name,
            "height": self.height, "width": self.width, "labels": self.convention.name,
            "uses_instance": self.spec.uses_instance, "first_instance_id": FIRST_INSTANCE_ID,
            "classes": [{"id": i, "name": name, "color": "#%02x%02x%02x" % tuple(int(c) for c in col)}
                        for i, (name, col) in enumerate(zip(self.names, self.colors))],
            "start": self.start_map(), "brush_class": self.brush_class(), "device": str(self.device),
        }

    # ---------------------------------------------------------------------------------------------------- inputs
    def decode_maps(self, body: bytes) -> tuple[np.ndarray, np.ndarray | None]:
        """Request body -> (label ids, instance ids or None): little-endian uint16 label map of the canvas size,
        then (for models that use instances) the instance map; wrong sizes or ids are one-line errors."""
        n = self.height * self.width
        maps = 2 if self.spec.uses_instance else 1
        if len(body) != 2 * n * maps:
            raise AsapError(f"expected {maps} uint16 map(s) of {self.width}x{self.height} ({2 * n * maps} bytes), "
                            f"got {len(body)} bytes")
        data = np.frombuffer(body, dtype="<u2").astype(np.int64)
        label = data[:n].reshape(self.height, self.width)
        top = int(label.max())
        if top >= self.spec.num_label_channels:
            raise AsapError(f"label id {top} is outside 0..{self.spec.num_label_channels - 1} "
                            f"(label_nc={self.spec.label_nc})")
        inst = data[n:].reshape(self.height, self.width) if maps == 2 else None
        return label, inst

    def read_upload(self, data: bytes, name: str, kind: str = "label") -> np.ndarray:
        """An uploaded label (ids or colours in the convention's palette) or instance file -> ids at the canvas
        size (nearest resize, as translate's resize=model): read by the same reader and rules as translate."""
        if kind not in ("label", "instance"):
            raise AsapError(f"unknown upload kind {kind!r} (label or instance)")
        shown = safe_name(name)
        if not data:
            raise AsapError(f"{shown}: the file is empty")
        fd, tmp = tempfile.mkstemp(prefix="asap-demo-", suffix=Path(shown).suffix[:8])
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                if kind == "label":
                    ids = ids_from_file(Path(tmp), self.spec, self.convention.name)
                else:
                    ids = read_label_ids(tmp, None, "instance map")
            except AsapError as e:
                raise AsapError(str(e).replace(tmp, shown)) from None
        finally:
            os.unlink(tmp)
        ids = resize_nearest(ids, (self.height, self.width))
        if kind == "instance" and ids.size and (ids.min() < 0 or ids.max() > MAX_ID):
            _, ids = np.unique(ids, return_inverse=True)   # same edges, ids that fit in uint16
            ids = ids.reshape(self.height, self.width) + FIRST_INSTANCE_ID
            if ids.max() > MAX_ID:
                raise AsapError(f"{shown}: the instance map has more than {MAX_ID - FIRST_INSTANCE_ID} instances")
        return ids.astype("<u2")

    # --------------------------------------------------------------------------------------------------- outputs
    @torch.inference_mode()
    def render(self, label: np.ndarray, inst: np.ndarray | None) -> tuple[bytes, dict[str, float]]:
        """Label (+instance) ids -> (photo PNG, seconds per stage): exactly translate's computation and rounding."""
        t0 = time.perf_counter()
        label_t = torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))[None, None].to(self.device)
        inst_t = None
        if self.spec.uses_instance:
            inst = label if inst is None else inst
            inst_t = torch.from_numpy(np.ascontiguousarray(inst, dtype=np.int64))[None, None].to(self.device)
        try:
            image = run_generator(self.model, self.spec, label_t, inst_t, self.multiple)[0]
        except (RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AsapError(f"the generator cannot run on this {self.width}x{self.height} map: {first}") from e
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        png = encode_png(to_uint8(image))
        return png, {"generator": t1 - t0, "encode": time.perf_counter() - t1}

    def label_file(self, label: np.ndarray) -> bytes:
        """The painted map as a lossless file translate reads to the same ids: a palette PNG whose indices are the
        convention's file ids (coloured with its palette), or a 16-bit grey PNG when an id exceeds 255."""
        fids = file_ids(label, self.convention, self.spec.label_nc)
        if self.spec.label_nc > DONTCARE_FILE_ID and (np.asarray(label) == DONTCARE_FILE_ID).any():
            raise AsapError(f"class {DONTCARE_FILE_ID} cannot be saved: in label files id {DONTCARE_FILE_ID} means "
                            f"dontcare (the official rule), so translate would read it as {self.spec.label_nc}")
        if fids.max(initial=0) > 255:
            return encode_png(Image.fromarray(fids.astype(np.uint16)), compress_level=6)
        palette = label_colormap(256)
        if self.convention.palette is not None:
            pal = get_palette(self.convention.palette)
            palette[:len(pal)] = pal
        palette[DONTCARE_FILE_ID] = (0, 0, 0)
        image = Image.frombytes("P", (fids.shape[1], fids.shape[0]), fids.astype(np.uint8).tobytes())
        image.putpalette(palette.reshape(-1).tolist())
        return encode_png(image, compress_level=6)

    def instance_file(self, inst: np.ndarray) -> bytes:
        """The instance map as a 16-bit grey PNG (``translate.py instance=...`` reads it to the same ids)."""
        return encode_png(Image.fromarray(np.asarray(inst).astype(np.uint16)), compress_level=6)


def paint_engine_for(model: nn.Module, device: torch.device, labels: str, size: Any,
                     source: str, note: Callable[[str], None] = print) -> PaintEngine:
    """A PaintEngine, saying once where the canvas size comes from when the model records none."""
    if getattr(model, "image_size", None) is None:
        note(f"note: the checkpoint records no image size; the canvas is {size[0]}x{size[1]} (size=[H,W] changes it)")
    return PaintEngine(model, device, labels, tuple(size), source)
