"""One label reader: the same file gives the same ids, or the same one-line error, through a training dataset
and through translate's input preparation (asap.data.labels.read_label_ids behind both)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch.nn as nn
from PIL import Image

from asap.data.ade20k import ADE20KDataset
from asap.data.cityscapes import CityscapesDataset
from asap.data.facades import FacadesDataset
from asap.data.labels import read_label_ids
from asap.data.pairs import PairsDataset
from asap.data.palettes import colorize, get_palette
from asap.data.preprocess import SemanticSpec
from asap.errors import AsapError
from asap.inference.translate import prepare

H, W = 16, 32
NO_RESIZE = dict(preprocess_mode="fixed", crop_size=W, aspect_ratio=W / H, flip=False)
PAIRS_NC = 1200      # room for 16-bit ids


class SpecOnly(nn.Module):
    """All of a generator that translate's prepare() reads: its SemanticSpec (no image_size: no resize)."""

    def __init__(self, spec: SemanticSpec) -> None:
        super().__init__()
        self.spec = spec


def blocks(ids, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    """An HxW map of 4x4 blocks drawn from ``ids``, every id present at least once."""
    rng = np.random.default_rng(seed)
    small = rng.choice(np.asarray(ids), size=(H // 4, W // 4))
    small.flat[: len(ids)] = ids
    return np.kron(small, np.ones((4, 4), np.int64)).astype(dtype)


def photo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(path)


# ---------------------------------------------------------------------------------------------------------------
# one tiny tree per dataset; each returns the label file's path and the dataset (built before the file is written,
# so that a missing or corrupt label file still reaches __getitem__)
# ---------------------------------------------------------------------------------------------------------------
def cityscapes(root: Path) -> tuple[Path, Callable]:
    label = root / "gtFine/train/c/c_000000_000019_gtFine_labelIds.png"
    photo(root / "leftImg8bit/train/c/c_000000_000019_leftImg8bit.png")
    return label, lambda: CityscapesDataset(root, "train", instance=False, **NO_RESIZE)


def ade20k(root: Path) -> tuple[Path, Callable]:
    label = root / "ADEChallengeData2016/annotations/training/ADE_train_00000001.png"
    photo(root / "ADEChallengeData2016/images/training/ADE_train_00000001.png")
    return label, lambda: ADE20KDataset(root, "train", **NO_RESIZE)


def facades(root: Path) -> tuple[Path, Callable]:
    label = root / "train_label/cmp_b0001.png"
    photo(root / "train_img/cmp_b0001.png")
    return label, lambda: FacadesDataset(root, "train", **NO_RESIZE)


def pairs(root: Path) -> tuple[Path, Callable]:
    label = root / "labels/a.png"
    photo(root / "images/a.png")
    return label, lambda: PairsDataset(root / "labels", root / "images", label_nc=PAIRS_NC, **NO_RESIZE)


# dataset -> (tree builder, the model spec translate sees, translate's labels= for that dataset's files)
DATASETS = {
    "cityscapes": (cityscapes, SemanticSpec(35, False, instance_edge=False), "auto"),
    "ade20k": (ade20k, SemanticSpec(150, True, instance_edge=False), "auto"),
    "facades": (facades, SemanticSpec(13, False, instance_edge=False), "facades"),
    "pairs": (pairs, SemanticSpec(PAIRS_NC, False, instance_edge=False), "ids"),
}


def outcome(fn: Callable[[], np.ndarray]) -> tuple[str, object]:
    """("ids", HxW int64 array) or ("error", the AsapError line)."""
    try:
        return "ids", fn()
    except AsapError as e:
        return "error", str(e)


def both_ways(tmp_path: Path, dataset: str, write: Callable[[Path], None]) -> tuple[Path, tuple, tuple]:
    """Write one label file into ``dataset``'s tree; read it as training does and as translate does."""
    build, spec, labels = DATASETS[dataset]
    label, make = build(tmp_path)
    label.parent.mkdir(parents=True, exist_ok=True)
    write(label)
    ds = make()                       # finds the files without reading them
    label = ds.samples[0].label       # the very path training reads
    train = outcome(lambda: ds[0]["label"][0].numpy())
    translate = outcome(lambda: prepare([label], SpecOnly(spec), labels=labels, resize="native",
                                        warn=lambda m: None)[0].label)
    return label, train, translate


def assert_same_ids(train: tuple, translate: tuple, expected: np.ndarray) -> None:
    assert train[0] == "ids", train[1]
    assert translate[0] == "ids", translate[1]
    assert train[1].dtype == np.int64 and translate[1].dtype == np.int64
    assert np.array_equal(train[1], expected)
    assert np.array_equal(translate[1], expected)


def assert_same_error(label: Path, train: tuple, translate: tuple, *needles: str) -> str:
    assert train[0] == "error" and translate[0] == "error", (train, translate)
    assert train[1] == translate[1]
    msg = train[1]
    assert "\n" not in msg and msg.startswith(f"{label}:"), msg
    for n in needles:
        assert n in msg, msg
    return msg


# ---------------------------------------------------------------------------------------------------------------
# single-channel files: read as stored
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cityscapes", "facades"])
def test_palette_png_gives_its_indices_not_its_colours(tmp_path, dataset):
    ids = blocks([1, 2, 3, 7, 11, 12])
    # a palette whose colours are *other* ids' colours in the dataset palette: decoding colours would shift ids
    pal = np.roll(get_palette("cityscapes" if dataset == "cityscapes" else "facades"), 1, axis=0)

    def write(p: Path) -> None:
        img = Image.fromarray(ids, mode="P")
        img.putpalette(pal.ravel().tolist())
        img.save(p)

    label, train, translate = both_ways(tmp_path, dataset, write)
    assert Image.open(label).mode == "P"
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_8bit_grey(tmp_path):
    ids = blocks([0, 7, 8, 11, 21, 23, 26, 33])
    label, train, translate = both_ways(tmp_path, "cityscapes", lambda p: Image.fromarray(ids).save(p))
    assert Image.open(label).mode == "L"
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_16bit_ids_above_255(tmp_path):
    ids = blocks([0, 3, 255, 256, 300, 1000, 1199], dtype=np.uint16)
    ids[ids == 255] = 254          # 255 is the dontcare id; keep this case about bit depth
    label, train, translate = both_ways(tmp_path, "pairs", lambda p: Image.fromarray(ids).save(p))
    assert Image.open(label).mode.startswith("I")
    assert_same_ids(train, translate, ids.astype(np.int64))
    assert translate[1].max() == 1199


def test_16bit_instance_map_reads_the_same(tmp_path):
    lab = blocks([7, 24, 26])
    inst = lab.astype(np.uint16)
    inst[lab == 26] = 26001
    inst[lab == 24] = 24002
    root = tmp_path
    stem = "c_000000_000019"
    lpath = root / f"gtFine/train/c/{stem}_gtFine_labelIds.png"
    ipath = root / f"gtFine/train/c/{stem}_gtFine_instanceIds.png"
    lpath.parent.mkdir(parents=True)
    Image.fromarray(lab).save(lpath)
    Image.fromarray(inst).save(ipath)
    photo(root / f"leftImg8bit/train/c/{stem}_leftImg8bit.png")
    train = CityscapesDataset(root, "train", **NO_RESIZE)[0]["instance"][0].numpy()
    item = prepare([lpath], SpecOnly(SemanticSpec(35, False)), resize="native")[0]   # finds the sibling
    assert np.array_equal(train, inst.astype(np.int64)) and np.array_equal(item.instance, inst.astype(np.int64))
    assert np.array_equal(item.label, lab.astype(np.int64))


# ---------------------------------------------------------------------------------------------------------------
# colour files: the dataset's palette, grey-looking RGB as ids, anything else one line
# ---------------------------------------------------------------------------------------------------------------
def test_rgb_in_the_cityscapes_palette(tmp_path):
    ids = blocks([0, 7, 8, 11, 17, 21, 23, 24, 26, 33])      # 1-4 share black with 0, 18 shares 17's grey
    _, train, translate = both_ways(tmp_path, "cityscapes",
                                    lambda p: Image.fromarray(colorize(ids, "cityscapes")).save(p))
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_opaque_rgba_in_the_cityscapes_palette(tmp_path):
    ids = blocks([7, 11, 26])
    rgba = np.concatenate([colorize(ids, "cityscapes"), np.full((H, W, 1), 255, np.uint8)], axis=2)
    _, train, translate = both_ways(tmp_path, "cityscapes", lambda p: Image.fromarray(rgba, mode="RGBA").save(p))
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_rgb_in_the_ade20k_palette_gets_spade_ids(tmp_path):
    raw = blocks([0, 1, 2, 37, 150])
    _, train, translate = both_ways(tmp_path, "ade20k", lambda p: Image.fromarray(colorize(raw, "ade20k")).save(p))
    expected = raw.astype(np.int64) - 1
    expected[raw == 0] = 150            # unlabeled -> dontcare = label_nc
    assert_same_ids(train, translate, expected)


def test_rgb_in_the_facades_palette(tmp_path):
    ids = blocks([1, 2, 3, 12])
    _, train, translate = both_ways(tmp_path, "facades", lambda p: Image.fromarray(colorize(ids, "facades")).save(p))
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_rgb_with_an_unknown_colour_is_one_line_naming_it(tmp_path):
    rgb = colorize(blocks([7, 11]), "cityscapes")
    rgb[5, 9] = (1, 2, 3)
    label, train, translate = both_ways(tmp_path, "cityscapes", lambda p: Image.fromarray(rgb).save(p))
    assert_same_error(label, train, translate, "(1, 2, 3)", "x=9, y=5", "cityscapes palette")


@pytest.mark.parametrize("dataset", ["cityscapes", "pairs"])
def test_grey_looking_rgb_reads_as_ids(tmp_path, dataset):
    ids = blocks([0, 7, 8, 11, 21, 26])     # (7, 7, 7) ... are not Cityscapes colours: the grey values are the ids
    rgb = np.repeat(ids[..., None], 3, axis=2)
    label, train, translate = both_ways(tmp_path, dataset, lambda p: Image.fromarray(rgb).save(p))
    assert Image.open(label).mode == "RGB"
    assert_same_ids(train, translate, ids.astype(np.int64))


def test_colour_rgb_without_a_palette_is_one_line(tmp_path):
    rgb = colorize(blocks([7, 11]), "cityscapes")
    label, train, translate = both_ways(tmp_path, "pairs", lambda p: Image.fromarray(rgb).save(p))
    assert_same_error(label, train, translate, "colour image", "no palette applies")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_and_two_channel_files_are_one_line(tmp_path, mode):
    if mode == "RGBA":
        arr = np.concatenate([colorize(blocks([7, 11]), "cityscapes"), np.zeros((H, W, 1), np.uint8)], axis=2)
        needles = ("transparent", "RGBA")
    else:
        arr = np.stack([blocks([7, 11]), np.full((H, W), 255, np.uint8)], axis=2)
        needles = ("LA", "2 channels")
    label, train, translate = both_ways(tmp_path, "cityscapes", lambda p: Image.fromarray(arr, mode=mode).save(p))
    assert_same_error(label, train, translate, *needles)


# ---------------------------------------------------------------------------------------------------------------
# broken files
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataset", ["cityscapes", "ade20k", "pairs"])
def test_corrupt_file_is_the_same_one_line(tmp_path, dataset):
    Image.fromarray(blocks([1, 2])).save(tmp_path / "good.png")
    truncated = (tmp_path / "good.png").read_bytes()[:60]
    label, train, translate = both_ways(tmp_path / "tree", dataset, lambda p: p.write_bytes(truncated))
    assert_same_error(label, train, translate, "cannot read label map", "corrupt")


def test_missing_file_is_the_same_one_line(tmp_path):
    build, spec, labels = DATASETS["cityscapes"]
    label, make = build(tmp_path)
    label.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(blocks([7])).save(label)
    ds = make()
    label = ds.samples[0].label
    label.unlink()                                  # gone after the dataset listed it
    train = outcome(lambda: ds[0]["label"][0].numpy())
    translate = outcome(lambda: prepare([label], SpecOnly(spec), labels=labels, resize="native")[0].label)
    assert_same_error(label, train, translate, "cannot read label map", "no such file")


# ---------------------------------------------------------------------------------------------------------------
# id rules shared with the datasets
# ---------------------------------------------------------------------------------------------------------------
def test_ade20k_dontcare_and_bad_ids_follow_one_rule(tmp_path):
    raw = blocks([0, 1, 150, 255])
    _, train, translate = both_ways(tmp_path, "ade20k", lambda p: Image.fromarray(raw).save(p))
    expected = raw.astype(np.int64) - 1
    expected[raw == 0] = 150
    expected[raw == 255] = 149          # SPADE's order: 255 -> label_nc, then the shift
    assert_same_ids(train, translate, expected)

    raw[0, 0] = 151                     # not an ADE20K id: refused both ways, quoting the file's id
    label, train, translate = both_ways(tmp_path / "b", "ade20k", lambda p: Image.fromarray(raw).save(p))
    assert train[0] == translate[0] == "error"
    for msg in (train[1], translate[1]):
        assert msg.startswith(f"{label}: label id 151 is outside") and "\n" not in msg


def test_reader_rules_directly(tmp_path):
    """The reader itself: modes as stored, palette first, grey fallback, errors name the file."""
    ids = blocks([0, 7, 11])
    Image.fromarray(np.repeat(ids[..., None], 3, axis=2)).save(tmp_path / "grey.png")
    Image.fromarray(colorize(ids, "cityscapes")).save(tmp_path / "colour.png")
    Image.fromarray(ids.astype(np.uint16) * 300).save(tmp_path / "deep.png")
    assert np.array_equal(read_label_ids(tmp_path / "grey.png"), ids)
    assert np.array_equal(read_label_ids(tmp_path / "grey.png", "cityscapes"), ids)       # (7,7,7) not a colour
    assert np.array_equal(read_label_ids(tmp_path / "colour.png", "cityscapes"), ids)
    assert np.array_equal(read_label_ids(tmp_path / "deep.png"), ids.astype(np.int64) * 300)
    with pytest.raises(AsapError, match=r"colour.png: label map is a colour image"):
        read_label_ids(tmp_path / "colour.png")
    with pytest.raises(AsapError, match=r"nope.png: cannot read instance map: no such file"):
        read_label_ids(tmp_path / "nope.png", what="instance map")
