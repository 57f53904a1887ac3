"""Label colour tables of the supported datasets, and fast id <-> colour conversion.

Each palette is a uint8 array [N, 3] indexed by the label id stored in the dataset's annotation files:

- ``cityscapes``: ids 0..33 with the colours of cityscapesScripts ``helpers/labels.py``; id 34 (unused by the
  dataset, but inside ``label_nc`` = 35) gets white.
- ``ade20k``: raw ADEChallengeData2016 annotation ids: 0 = unlabeled (black), 1..150 = the 150 classes.
- ``ade20k_spade``: the ids the ADE20K dataset *returns* (SPADE convention): 0..149 = classes 1..150,
  150 = dontcare (black). Use it to colour tensors that came out of :class:`asap.data.ade20k.ADE20KDataset`.
- ``facades``: CMP Facades palette indices 0..12 (0 unused, 1 background ... 12 shop), a 12-step jet ramp.

Some palettes repeat a colour (Cityscapes ids 0-4 are all black, pole/polegroup share a grey; ADE20K road and
skyscraper share a grey): :func:`colors_to_ids` maps a repeated colour to its smallest id.
"""
from __future__ import annotations

import numpy as np

from asap.errors import AsapError

CITYSCAPES_NAMES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle", "(unused)")

# Cityscapes label ids whose pixels carry instance ids (id * 1000 + k) in *_instanceIds.png.
CITYSCAPES_INSTANCE_IDS = (24, 25, 26, 27, 28, 29, 30, 31, 32, 33)

CITYSCAPES = np.array([
    (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (0, 0, 0), (111, 74, 0), (81, 0, 81), (128, 64, 128),
    (244, 35, 232), (250, 170, 160), (230, 150, 140), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (180, 165, 180), (150, 100, 100), (150, 120, 90), (153, 153, 153), (153, 153, 153), (250, 170, 30),
    (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142),
    (0, 0, 70), (0, 60, 100), (0, 0, 90), (0, 0, 110), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    (255, 255, 255),
], dtype=np.uint8)

_ADE20K_CLASSES = np.array([
    (120, 120, 120), (180, 120, 120), (6, 230, 230), (80, 50, 50), (4, 200, 3), (120, 120, 80), (140, 140, 140),
    (204, 5, 255), (230, 230, 230), (4, 250, 7), (224, 5, 255), (235, 255, 7), (150, 5, 61), (120, 120, 70),
    (8, 255, 51), (255, 6, 82), (143, 255, 140), (204, 255, 4), (255, 51, 7), (204, 70, 3), (0, 102, 200),
    (61, 230, 250), (255, 6, 51), (11, 102, 255), (255, 7, 71), (255, 9, 224), (9, 7, 230), (220, 220, 220),
    (255, 9, 92), (112, 9, 255), (8, 255, 214), (7, 255, 224), (255, 184, 6), (10, 255, 71), (255, 41, 10),
    (7, 255, 255), (224, 255, 8), (102, 8, 255), (255, 61, 6), (255, 194, 7), (255, 122, 8), (0, 255, 20),
    (255, 8, 41), (255, 5, 153), (6, 51, 255), (235, 12, 255), (160, 150, 20), (0, 163, 255), (140, 140, 140),
    (250, 10, 15), (20, 255, 0), (31, 255, 0), (255, 31, 0), (255, 224, 0), (153, 255, 0), (0, 0, 255),
    (255, 71, 0), (0, 235, 255), (0, 173, 255), (31, 0, 255), (11, 200, 200), (255, 82, 0), (0, 255, 245),
    (0, 61, 255), (0, 255, 112), (0, 255, 133), (255, 0, 0), (255, 163, 0), (255, 102, 0), (194, 255, 0),
    (0, 143, 255), (51, 255, 0), (0, 82, 255), (0, 255, 41), (0, 255, 173), (10, 0, 255), (173, 255, 0),
    (0, 255, 153), (255, 92, 0), (255, 0, 255), (255, 0, 245), (255, 0, 102), (255, 173, 0), (255, 0, 20),
    (255, 184, 184), (0, 31, 255), (0, 255, 61), (0, 71, 255), (255, 0, 204), (0, 255, 194), (0, 255, 82),
    (0, 10, 255), (0, 112, 255), (51, 0, 255), (0, 194, 255), (0, 122, 255), (0, 255, 163), (255, 153, 0),
    (0, 255, 10), (255, 112, 0), (143, 255, 0), (82, 0, 255), (163, 255, 0), (255, 235, 0), (8, 184, 170),
    (133, 0, 255), (0, 255, 92), (184, 0, 255), (255, 0, 31), (0, 184, 255), (0, 214, 255), (255, 0, 112),
    (92, 255, 0), (0, 224, 255), (112, 224, 255), (70, 184, 160), (163, 0, 255), (153, 0, 255), (71, 255, 0),
    (255, 0, 163), (255, 204, 0), (255, 0, 143), (0, 255, 235), (133, 255, 0), (255, 0, 235), (245, 0, 255),
    (255, 0, 122), (255, 245, 0), (10, 190, 212), (214, 255, 0), (0, 204, 255), (20, 0, 255), (255, 255, 0),
    (0, 153, 255), (0, 41, 255), (0, 255, 204), (41, 0, 255), (41, 255, 0), (173, 0, 255), (0, 245, 255),
    (71, 0, 255), (122, 0, 255), (0, 255, 184), (0, 92, 255), (184, 255, 0), (0, 133, 255), (255, 214, 0),
    (25, 194, 194), (102, 255, 0), (92, 0, 255),
], dtype=np.uint8)
assert len(_ADE20K_CLASSES) == 150

# ADE20K's 150 class names in annotation-id order (id 1 = wall ... id 150 = flag; id 0 is unlabeled).
ADE20K_NAMES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag")
assert len(ADE20K_NAMES) == 150

_BLACK = np.zeros((1, 3), np.uint8)
ADE20K = np.concatenate([_BLACK, _ADE20K_CLASSES])            # raw annotation ids 0..150
ADE20K_SPADE = np.concatenate([_ADE20K_CLASSES, _BLACK])      # dataset output ids 0..149, 150 = dontcare

FACADES_NAMES = ("(unused)", "background", "facade", "window", "door", "cornice", "sill", "balcony", "blind",
                 "deco", "molding", "pillar", "shop")
FACADES = np.array([
    (0, 0, 0), (0, 0, 170), (0, 0, 255), (0, 85, 255), (0, 170, 255), (0, 255, 255), (85, 255, 170),
    (170, 255, 85), (255, 255, 0), (255, 170, 0), (255, 85, 0), (255, 0, 0), (170, 0, 0),
], dtype=np.uint8)

PALETTES = {"cityscapes": CITYSCAPES, "ade20k": ADE20K, "ade20k_spade": ADE20K_SPADE, "facades": FACADES}


def get_palette(name: str) -> np.ndarray:
    """A copy of the named palette, uint8 [N, 3] (row = label id)."""
    key = str(name).lower()
    if key not in PALETTES:
        raise AsapError(f"unknown palette {name!r} (known: {', '.join(PALETTES)})")
    return PALETTES[key].copy()


def _as_palette(palette: np.ndarray | str) -> np.ndarray:
    if isinstance(palette, str):
        return get_palette(palette)
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise AsapError(f"a palette must be an [N, 3] array, got shape {pal.shape}")
    return pal.astype(np.uint8)


def colorize(ids: np.ndarray, palette: np.ndarray | str) -> np.ndarray:
    """Label ids HxW -> colours HxWx3 uint8; an id outside the palette raises AsapError."""
    pal = _as_palette(palette)
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= len(pal)):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise AsapError(f"label id {bad} has no colour (the palette has {len(pal)} entries)")
    return pal[ids.astype(np.intp, copy=False)]


def _pack(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] -> int32 keys r << 16 | g << 8 | b."""
    rgb = rgb.astype(np.int32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def palette_lookup(rgb: np.ndarray, palette: np.ndarray | str) -> tuple[np.ndarray, np.ndarray]:
    """Colours HxWx3 -> (ids HxW int64, known HxW bool) without raising, so a caller can choose its fallback;
    a colour used by several ids maps to the smallest, an unknown colour to 0 with ``known`` False."""
    pal = _as_palette(palette)
    keys, first_id = np.unique(_pack(pal), return_index=True)   # sorted keys; first (smallest) id of each colour
    img = _pack(np.asarray(rgb))
    pos = np.minimum(np.searchsorted(keys, img), len(keys) - 1)
    known = keys[pos] == img
    return np.where(known, first_id[pos], 0).astype(np.int64), known


def colors_to_ids(rgb: np.ndarray, palette: np.ndarray | str, source: str = "label map") -> np.ndarray:
    """Colour-coded label map HxWx3 -> ids HxW int64; a colour absent from the palette raises AsapError naming
    ``source``, the first such colour and its pixel position. A colour used by several ids maps to the smallest."""
    pal = _as_palette(palette)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise AsapError(f"{source}: expected an HxWx3 colour image, got shape {rgb.shape}")
    ids, known = palette_lookup(rgb, pal)
    if not known.all():
        y, x = np.unravel_index(int(np.argmin(known)), known.shape)
        c = tuple(int(v) for v in rgb[y, x])
        name = f"the {palette} palette" if isinstance(palette, str) else "the palette"
        raise AsapError(f"{source}: colour {c} at pixel (x={x}, y={y}) is not in {name} ({len(pal)} colours)")
    return ids
