"""The embedded default dataset: procedural street scenes written in the exact Cityscapes layout.

``ensure_synthetic(root)`` generates it on first use (deterministic in ``seed``; each scene depends only on
(seed, split, index)); it is written into a temporary sibling folder and renamed into place, so an interrupted
or concurrent run never leaves a half dataset, and ``manifest.json`` (written last) records the settings.

    <root>/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_labelIds.png     Cityscapes label ids
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_instanceIds.png  uint16: id*1000+k for cars and
                                                                                 persons, the plain id elsewhere
    <root>/gtFine/{train,val}/<city>/<city>_<seq>_000019_gtFine_color.png        Cityscapes palette colours
    <root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_000019_leftImg8bit.png    the photo
    <root>/baseline.json, <root>/manifest.json

Scenes: a sky band, buildings with varying rooflines, trees, a fence, a sidewalk with grass patches and
bushes, a road, poles carrying traffic signs and lights, persons on the sidewalk and cars on the road.

The photo is :func:`render_photo` (label map, instance map): a deterministic function of the two maps and the
pixel position - a base colour per class, position patterns of period 8 px or less (window grids, lane
dashes, tiles, foliage, slats; learnable with a Fourier positional encoding of S >= 8), a vertical gradient in
the sky, a tint per instance (hash of its id) and darkened class/instance boundaries. A per-class mean colour
cannot reproduce it; ``baseline.json`` holds the held-out PSNR of exactly that predictor (class means over the
train photos, predicted on the val photos; :func:`asap.metrics.image.psnr`, i.e. on [0, 1] values, data range 1,
per image then averaged), the number a trained model should beat.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from asap.errors import AsapError

from .cityscapes import CityscapesDataset
from .palettes import CITYSCAPES, colorize

GENERATOR_VERSION = 1
TRAIN_CITIES = ("aurora", "brightwater", "cobbleton")
VAL_CITIES = ("dunmore",)
FRAME = 19

# Cityscapes label ids used by the scenes
ROAD, SIDEWALK, BUILDING, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = (
    7, 8, 11, 13, 17, 19, 20, 21, 22, 23, 24, 26)

# photo base colour per label id (index = Cityscapes id); ids the scenes never use stay mid grey
_BASE = np.full((35, 3), 128.0, np.float32)
for _cls, _rgb in {ROAD: (88, 86, 92), SIDEWALK: (176, 160, 150), BUILDING: (170, 120, 95), FENCE: (150, 130, 100),
                   POLE: (120, 122, 128), LIGHT: (40, 45, 40), SIGN: (230, 200, 40), VEGETATION: (60, 120, 45),
                   TERRAIN: (120, 170, 80), SKY: (90, 140, 215), PERSON: (150, 90, 110), CAR: (60, 70, 140)}.items():
    _BASE[_cls] = _rgb

DEFAULTS: dict[str, int] = {"num_train": 300, "num_val": 50, "height": 128, "width": 256, "seed": 0}


# ----------------------------------------------------------------------------------------------------------------
# scenes
# ----------------------------------------------------------------------------------------------------------------
class _Canvas:
    """Label and instance maps painted together (later shapes cover earlier ones)."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.label = np.full((h, w), SKY, np.uint8)
        self.inst = np.full((h, w), SKY, np.int32)

    def rect(self, y0: float, y1: float, x0: float, x1: float, cls: int, iid: int | None = None) -> None:
        y0, y1 = max(0, int(round(y0))), min(self.h, int(round(y1)))
        x0, x1 = max(0, int(round(x0))), min(self.w, int(round(x1)))
        if y1 > y0 and x1 > x0:
            self.label[y0:y1, x0:x1] = cls
            self.inst[y0:y1, x0:x1] = cls if iid is None else iid

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, cls: int, iid: int | None = None) -> None:
        y0, y1 = max(0, int(np.floor(cy - ry))), min(self.h, int(np.ceil(cy + ry)) + 1)
        x0, x1 = max(0, int(np.floor(cx - rx))), min(self.w, int(np.ceil(cx + rx)) + 1)
        if y1 <= y0 or x1 <= x0:
            return
        yy, xx = np.ogrid[y0:y1, x0:x1]
        m = ((yy - cy) / max(ry, 0.5)) ** 2 + ((xx - cx) / max(rx, 0.5)) ** 2 <= 1.0
        self.label[y0:y1, x0:x1][m] = cls
        self.inst[y0:y1, x0:x1][m] = cls if iid is None else iid


def make_scene(rng: np.random.Generator, height: int = 128, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One procedural street scene: (label ids uint8 HxW, Cityscapes instance ids int32 HxW)."""
    H, W = height, width
    c = _Canvas(H, W)
    horizon = int(H * rng.uniform(0.50, 0.60))            # foot of the buildings / top of the sidewalk
    road_top = horizon + max(3, int(H * rng.uniform(0.07, 0.13)))

    # skyline: buildings, trees and gaps from left to right
    x = -int(rng.integers(0, W // 16 + 1))
    while x < W:
        bw = int(rng.integers(W // 10, W // 4 + 1))
        kind = rng.choice(3, p=[0.65, 0.22, 0.13])
        if kind == 0:
            top = H * rng.uniform(0.06, 0.40)
            c.rect(top, horizon, x, x + bw, BUILDING)
            if rng.random() < 0.4:                         # a stepped roof
                inset = bw * rng.uniform(0.15, 0.35)
                c.rect(top - H * rng.uniform(0.04, 0.10), top, x + inset, x + bw - inset, BUILDING)
        elif kind == 1:
            r = bw * rng.uniform(0.35, 0.55)
            c.rect(horizon - r * 0.9, horizon, x + bw / 2 - 1, x + bw / 2 + 2, VEGETATION)   # trunk
            c.ellipse(horizon - r * 1.4, x + bw / 2, r, r * rng.uniform(0.9, 1.2), VEGETATION)
        x += bw
    if rng.random() < 0.5:                                 # a fence along the foot of the buildings
        fx = rng.uniform(0, W * 0.6)
        c.rect(horizon - H * 0.06, horizon, fx, fx + W * rng.uniform(0.15, 0.4), FENCE)

    # ground: sidewalk band with grass patches and bushes, then the road
    c.rect(horizon, road_top, 0, W, SIDEWALK)
    for _ in range(int(rng.integers(0, 3))):
        gx = rng.uniform(-W * 0.1, W)
        c.rect(horizon, horizon + (road_top - horizon) * rng.uniform(0.4, 0.8), gx, gx + W * rng.uniform(0.05, 0.2),
               TERRAIN)
    for _ in range(int(rng.integers(0, 3))):
        bx, br = rng.uniform(0, W), H * rng.uniform(0.03, 0.06)
        c.ellipse(horizon, bx, br, br * 1.8, VEGETATION)
    c.rect(road_top, H, 0, W, ROAD)

    # poles with a sign or a traffic light
    for _ in range(int(rng.integers(1, 4))):
        px = rng.uniform(4, W - 4)
        foot = horizon + (road_top - horizon) * rng.uniform(0.3, 0.9)
        ptop = H * rng.uniform(0.12, 0.35)
        pw = max(2, W // 128)
        c.rect(ptop, foot, px, px + pw, POLE)
        if rng.random() < 0.5:
            s = max(4, H // 20)
            c.rect(ptop - s / 2, ptop + s, px - s / 2, px + pw + s / 2, SIGN)
        else:
            c.rect(ptop, ptop + max(6, H // 12), px - 1, px + pw + 1, LIGHT)

    # persons on the sidewalk (far ones first), then cars on the road (far ones first)
    feet = np.sort(rng.uniform(horizon + 2, road_top + 3, int(rng.integers(0, 4))))
    for k, fy in enumerate(feet):
        near = (fy - horizon) / max(1.0, H - horizon)
        ph = H * (0.20 + 0.25 * near) + 6
        cx = rng.uniform(0, W)
        iid = PERSON * 1000 + k
        c.ellipse(fy - ph * 0.42, cx, ph * 0.40, ph * 0.13, PERSON, iid)
        c.ellipse(fy - ph * 0.90, cx, ph * 0.10, ph * 0.09, PERSON, iid)
    bottoms = np.sort(rng.uniform(road_top + 8, H + 6, int(rng.integers(1, 5))))
    for k, by in enumerate(bottoms):
        near = (by - horizon) / max(1.0, H - horizon)
        ch = H * (0.12 + 0.22 * near) + 4
        cw = ch * rng.uniform(1.9, 2.5)
        cx = rng.uniform(-cw * 0.25, W - cw * 0.75)
        iid = CAR * 1000 + k
        c.rect(by - ch * 0.6, by, cx, cx + cw, CAR, iid)                       # body
        c.rect(by - ch, by - ch * 0.6, cx + cw * 0.22, cx + cw * 0.78, CAR, iid)  # cabin
    return c.label, c.inst


# ----------------------------------------------------------------------------------------------------------------
# photos
# ----------------------------------------------------------------------------------------------------------------
def _hash_tint(ids: np.ndarray) -> np.ndarray:
    """A pseudo-random colour offset in [-40, 40] per instance id (Knuth multiplicative hash)."""
    h = (ids.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    rgb = np.stack([(h >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], axis=-1).astype(np.float32)
    return rgb / 255.0 * 80.0 - 40.0


def boundaries(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """True where the class or instance differs from a 4-neighbour."""
    key = label.astype(np.int64) * 100_000 + instance.astype(np.int64)
    e = np.zeros(key.shape, bool)
    dx = key[:, 1:] != key[:, :-1]
    dy = key[1:, :] != key[:-1, :]
    e[:, 1:] |= dx
    e[:, :-1] |= dx
    e[1:, :] |= dy
    e[:-1, :] |= dy
    return e


@functools.lru_cache(maxsize=8)
def _class_fields(height: int, width: int) -> np.ndarray:
    """[36, H, W, 3] float32: the position-dependent colour of every class at every pixel (row 35: mid grey for
    ids outside the table). Instance tints and boundaries are added by :func:`render_photo`."""
    H, W = height, width
    yy, xx = np.mgrid[0:H, 0:W]
    tau = 2.0 * np.pi
    f = np.broadcast_to(np.concatenate([_BASE, np.full((1, 3), 128.0, np.float32)])[:, None, None, :],
                        (36, H, W, 3)).copy()
    # sky: brighter and paler towards the bottom of the frame
    t = (yy / max(1, H - 1)).astype(np.float32)[..., None]
    f[SKY] += t * np.array([90, 70, 30], np.float32)
    # buildings: 8x8 window grid (4x4 glass panes), darker brick rows every 4 px elsewhere
    win = ((xx % 8) >= 2) & ((xx % 8) < 6) & ((yy % 8) >= 2) & ((yy % 8) < 6)
    f[BUILDING] = np.where(win[..., None], np.array([55, 70, 95], np.float32),
                           _BASE[BUILDING] - 18.0 * ((yy % 4) == 0)[..., None])
    # road: period-4 checker texture and dashed lane marks (4 px dashes every 8 px, every 8 rows)
    dash = (((yy % 8) == 6) & ((xx % 8) < 4))[..., None]
    f[ROAD] = np.where(dash, np.array([235, 235, 225], np.float32),
                       _BASE[ROAD] + 10.0 * (((xx // 2) + (yy // 2)) % 2)[..., None])
    # sidewalk: 8x4 tiles with dark grout
    f[SIDEWALK] -= 45.0 * (((xx % 8) == 0) | ((yy % 4) == 0))[..., None]
    # vegetation: foliage from products of period-8 and period-4 waves
    leaf = 28.0 * np.sin(tau * xx / 8) * np.cos(tau * yy / 8) + 14.0 * np.cos(tau * (xx + yy) / 4)
    f[VEGETATION] += leaf[..., None].astype(np.float32) * np.array([0.5, 1.0, 0.4], np.float32)
    # terrain: diagonal stripes; fence: vertical slats; poles: cylinder shading
    f[TERRAIN] += 25.0 * (((xx + yy) % 8) < 4)[..., None]
    f[FENCE] += 40.0 * ((xx % 4) < 2)[..., None]
    f[POLE] += 30.0 * ((xx % 2) == 0)[..., None]
    # cars: rows shaded with period 8; persons: darker every other pair of rows
    f[CAR] += 30.0 * np.cos(tau * yy / 8)[..., None]
    f[PERSON] -= 20.0 * ((yy % 4) < 2)[..., None]
    f.setflags(write=False)
    return f


def render_photo(label: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """The synthetic photo (HxWx3 uint8) of a label map and instance map: a deterministic function of the two
    maps and the pixel position (see the module docstring)."""
    H, W = label.shape
    fields = _class_fields(H, W)
    lab = np.where((label >= 0) & (label < 35), label, 35).astype(np.intp)
    yy, xx = np.ogrid[0:H, 0:W]
    img = fields[lab, yy, xx]                                   # H,W,3 (a copy)
    # per-instance tint (cars 1.5x stronger than persons)
    inst_px = instance >= 1000
    if inst_px.any():
        gain = np.where(lab[inst_px] == CAR, 1.5, 1.0).astype(np.float32)[:, None]
        img[inst_px] += gain * _hash_tint(instance[inst_px])
    # darkened class / instance boundaries
    img[boundaries(label, instance)] *= 0.55
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------------
# generation
# ----------------------------------------------------------------------------------------------------------------
def _params(num_train: int, num_val: int, height: int, width: int, seed: int) -> dict[str, int]:
    p = {"num_train": int(num_train), "num_val": int(num_val), "height": int(height), "width": int(width),
         "seed": int(seed)}
    if p["num_train"] < 1 or p["num_val"] < 1:
        raise AsapError(f"synthetic: num_train and num_val must be at least 1 (got {num_train}, {num_val})")
    if p["height"] < 32 or p["width"] < 32:
        raise AsapError(f"synthetic: height and width must be at least 32 (got {height}x{width})")
    return p


def scene(split: str, index: int, seed: int = 0, height: int = 128, width: int = 256) -> tuple[np.ndarray, ...]:
    """(label, instance, photo) of one scene; depends only on (seed, split, index, size)."""
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1, int(index)])
    label, inst = make_scene(rng, height, width)
    return label, inst, render_photo(label, inst)


def file_stem(split: str, index: int) -> tuple[str, str]:
    """(city, "<city>_<seq>_<frame>") of scene ``index`` of ``split``."""
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_{FRAME:06d}"


def _save(arr: np.ndarray, path: Path) -> None:
    from PIL import Image
    Image.fromarray(arr).save(path, format="PNG")


def _write_split(out: Path, split: str, n: int, p: Mapping[str, int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    labels, photos = [], []
    for i in range(n):
        label, inst, photo = scene(split, i, p["seed"], p["height"], p["width"])
        city, stem = file_stem(split, i)
        gt = out / "gtFine" / split / city
        im = out / "leftImg8bit" / split / city
        gt.mkdir(parents=True, exist_ok=True)
        im.mkdir(parents=True, exist_ok=True)
        _save(label, gt / f"{stem}_gtFine_labelIds.png")
        _save(inst.astype(np.uint16), gt / f"{stem}_gtFine_instanceIds.png")
        _save(colorize(label, CITYSCAPES), gt / f"{stem}_gtFine_color.png")
        _save(photo, im / f"{stem}_leftImg8bit.png")
        labels.append(label)
        photos.append(photo)
    return labels, photos


def class_mean_baseline(train_labels: list[np.ndarray], train_photos: list[np.ndarray],
                        val_labels: list[np.ndarray], val_photos: list[np.ndarray]) -> float:
    """Held-out PSNR (dB, :func:`asap.metrics.image.psnr`) of predicting each pixel's class mean colour, the means
    taken over the train photos (a class absent from train gets the overall train mean)."""
    import torch

    from asap.metrics.image import psnr

    n = len(CITYSCAPES)
    lab = np.concatenate([l.ravel() for l in train_labels]).astype(np.intp)
    pix = np.concatenate([p.reshape(-1, 3) for p in train_photos]).astype(np.float64)
    counts = np.bincount(lab, minlength=n).astype(np.float64)
    sums = np.stack([np.bincount(lab, weights=pix[:, ch], minlength=n) for ch in range(3)], axis=1)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], pix.mean(axis=0))
    pred = np.stack([means[l] for l in val_labels])                  # N,H,W,3 in [0,255]
    target = np.stack(val_photos).astype(np.float64)
    to_pm1 = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) / 127.5 - 1.0   # noqa: E731
    return float(psnr(to_pm1(pred), to_pm1(target)))


def _check_existing(root: Path, p: Mapping[str, int]) -> bool:
    """True when ``root`` holds a finished dataset with these settings; AsapError when it holds something else."""
    manifest = root / "manifest.json"
    if manifest.is_file():
        try:
            got = json.loads(manifest.read_text())
        except (OSError, ValueError) as e:
            raise AsapError(f"synthetic: cannot read {manifest} ({e}); delete {root} to regenerate") from None
        want = {**p, "version": GENERATOR_VERSION}
        have = {k: got.get(k) for k in want}
        if have != want:
            diff = ", ".join(f"{k}={have[k]} (want {want[k]})" for k in want if have[k] != want[k])
            raise AsapError(f"synthetic: {root} was generated with other settings: {diff}; delete it or choose "
                            f"another data.root")
        return True
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise AsapError(f"synthetic: {root} exists but is not a finished synthetic dataset (no manifest.json); "
                        f"delete it or choose another data.root")
    return False


def _remove_stale_temps(parent: Path, prefix: str, older_than_s: float = 600.0) -> None:
    now = time.time()
    for d in parent.glob(prefix + "*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def ensure_synthetic(root: str | os.PathLike = "data/synthetic", num_train: int = 300, num_val: int = 50,
                     height: int = 128, width: int = 256, seed: int = 0) -> Path:
    """Generate the synthetic dataset under ``root`` unless it is already there; returns the absolute root."""
    p = _params(num_train, num_val, height, width, seed)
    root = Path(root).expanduser().resolve()
    if _check_existing(root, p):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{root.name}.tmp-"
    _remove_stale_temps(root.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=root.parent))
    try:
        tl, tp = _write_split(tmp, "train", p["num_train"], p)
        vl, vp = _write_split(tmp, "val", p["num_val"], p)
        baseline = class_mean_baseline(tl, tp, vl, vp)
        (tmp / "baseline.json").write_text(json.dumps({
            "psnr_db": round(baseline, 4),
            "predictor": "per-class mean colour of the train photos, predicted on the val photos",
            "psnr": "asap.metrics.image.psnr: images in [-1,1] mapped to [0,1], data range 1, per image, averaged",
            "num_images": p["num_val"]}, indent=2) + "\n")
        (tmp / "manifest.json").write_text(json.dumps({
            **p, "version": GENERATOR_VERSION, "layout": "cityscapes", "label_nc": 35}, indent=2) + "\n")
        try:
            os.rename(tmp, root)        # the commit point; fails if another process finished first
        except OSError:
            if not _check_existing(root, p):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def baseline_psnr(root: str | os.PathLike = "data/synthetic") -> float:
    """The per-class-mean-colour held-out PSNR (dB) stored in ``<root>/baseline.json``."""
    path = Path(root).expanduser().resolve() / "baseline.json"
    try:
        return float(json.loads(path.read_text())["psnr_db"])
    except FileNotFoundError:
        raise AsapError(f"synthetic: {path} not found (generate the dataset with ensure_synthetic first)") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise AsapError(f"synthetic: cannot read {path} ({e})") from None


def _gen(generate: Mapping[str, Any] | None) -> dict[str, int]:
    g = dict(DEFAULTS)
    if generate:
        unknown = set(generate) - set(DEFAULTS)
        if unknown:
            raise AsapError(f"synthetic: unknown generate option(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(DEFAULTS)})")
        g.update({k: int(v) for k, v in generate.items()})
    return g


def ensure_and_baseline(root: str | os.PathLike, generate: Mapping[str, Any] | None = None) -> float:
    """Generate if needed, then return the baseline PSNR (what ``${asap.synthetic_baseline:...}`` resolves to)."""
    return baseline_psnr(ensure_synthetic(root, **_gen(generate)))


class SyntheticDataset(CityscapesDataset):
    """:class:`CityscapesDataset` over the embedded synthetic data, generated on first use."""

    name = "synthetic"

    def __init__(self, root: str | os.PathLike = "data/synthetic", split: str = "train",
                 generate: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("preprocess_mode", "fixed")
        kwargs.setdefault("load_size", 256)
        kwargs.setdefault("crop_size", 256)
        kwargs.setdefault("aspect_ratio", 2.0)
        super().__init__(ensure_synthetic(root, **_gen(generate)), split, **kwargs)


def synthetic_split(root: str | os.PathLike = "data/synthetic", split: str = "train",
                    generate: Mapping[str, Any] | None = None, **kwargs: Any) -> SyntheticDataset:
    """The ``split`` of the synthetic dataset (generated on first use) as a Cityscapes dataset."""
    return SyntheticDataset(root, split, generate, **kwargs)


def synthetic_images(root: str | os.PathLike = "data/synthetic", split: str = "train", size: int = 128,
                     flip: bool = False, generate: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
    """The synthetic photos (leftImg8bit/<split>) as an unconditional :class:`ImageFolderDataset`."""
    from .images import ImageFolderDataset

    base = ensure_synthetic(root, **_gen(generate))
    if split not in ("train", "val"):
        raise AsapError(f"synthetic: split={split!r} is not train or val")
    return ImageFolderDataset(base / "leftImg8bit" / split, size=size, flip=flip, **kwargs)
