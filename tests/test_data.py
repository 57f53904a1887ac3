"""Data layer: readers of the official layouts on tiny generated trees, id conventions, joint augmentation,
palettes, bad-sample handling and the data configs."""
from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asap.data.ade20k import ADE20KDataset
from asap.data.cityscapes import CityscapesDataset
from asap.data.collate import collate
from asap.data.facades import FacadesDataset
from asap.data.images import ImageFolderDataset
from asap.data.pairs import PairsDataset
from asap.data.palettes import colorize, colors_to_ids, get_palette
from asap.data.transforms import JointTransform, output_size
from asap.errors import AsapError
from asap.metrics.image import psnr

H, W = 16, 32


# ---------------------------------------------------------------------------------------------------------------
# tiny trees
# ---------------------------------------------------------------------------------------------------------------
def blocks(seed: int, h: int = H, w: int = W, ids=(7, 11, 21, 23, 26), block: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.choice(np.array(ids, np.uint8), size=(h // block, w // block))
    return np.kron(small, np.ones((block, block), np.uint8))


def photo_of(label: np.ndarray, tag: int = 0) -> np.ndarray:
    """A photo whose colour encodes the label (red/green) and a per-file tag (blue)."""
    img = np.zeros(label.shape + (3,), np.uint8)
    img[..., 0] = (label.astype(np.int64) * 7) % 256
    img[..., 1] = (label.astype(np.int64) * 37 + 11) % 256
    img[..., 2] = tag
    return img


def save(arr: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def make_cityscapes(root: Path, split: str = "train", n: int = 3, city: str = "testcity") -> list[dict]:
    items = []
    for i in range(n):
        stem = f"{city}_{i:06d}_000019"
        lab = blocks(i)
        inst = lab.astype(np.uint16)
        inst[lab == 26] = 26000 + i
        save(lab, root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
        save(inst, root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")
        save(photo_of(lab, 10 * i), root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
        items.append({"label": lab, "instance": inst.astype(np.int64), "tag": 10 * i,
                      "path": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"})
    return items


def as_photo(t: torch.Tensor) -> np.ndarray:
    return np.rint((t.permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.int64)


NO_RESIZE = dict(preprocess_mode="fixed", crop_size=W, aspect_ratio=W / H)


# ---------------------------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------------------------
def test_cityscapes_reads_official_layout(tmp_path):
    items = make_cityscapes(tmp_path, "train", 3)
    make_cityscapes(tmp_path, "val", 2, city="othercity")
    ds = CityscapesDataset(tmp_path, "train", **NO_RESIZE, flip=False)
    assert len(ds) == 3 and len(CityscapesDataset(tmp_path, "val", **NO_RESIZE)) == 2
    for i, ref in enumerate(items):
        it = ds[i]
        assert it["label"].dtype == torch.int64 and it["label"].shape == (1, H, W)
        assert it["instance"].dtype == torch.int64 and it["instance"].shape == (1, H, W)
        assert it["image"].dtype == torch.float32 and it["image"].shape == (3, H, W)
        assert it["path"] == str(ref["path"])
        assert np.array_equal(it["label"][0].numpy(), ref["label"])
        assert np.array_equal(it["instance"][0].numpy(), ref["instance"])
        assert np.array_equal(as_photo(it["image"]), photo_of(ref["label"], ref["tag"]).astype(np.int64))
        assert -1.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0


def test_cityscapes_matches_by_city_seq_frame(tmp_path):
    make_cityscapes(tmp_path, "train", 3)
    # an extra photo that sorts between the others must not shift the pairing
    save(photo_of(blocks(9), 250), tmp_path / "leftImg8bit/train/testcity/testcity_000000_000019x_leftImg8bit.png")
    ds = CityscapesDataset(tmp_path, "train", **NO_RESIZE)
    tags = [int(as_photo(ds[i]["image"])[0, 0, 2]) for i in range(len(ds))]
    assert tags == [0, 10, 20]


def test_cityscapes_resize_fixed_preset(tmp_path):
    make_cityscapes(tmp_path, "train", 1)
    ds = CityscapesDataset(tmp_path, "train", preprocess_mode="fixed", crop_size=64, aspect_ratio=2.0, flip=False)
    it = ds[0]
    assert it["label"].shape == (1, 32, 64) and it["image"].shape == (3, 32, 64)
    # nearest upsampling by 2: every source pixel becomes a 2x2 block
    assert np.array_equal(it["label"][0].numpy()[::2, ::2], blocks(0))


def test_cityscapes_missing_image_and_skip(tmp_path):
    make_cityscapes(tmp_path, "train", 3)
    (tmp_path / "leftImg8bit/train/testcity/testcity_000001_000019_leftImg8bit.png").unlink()
    with pytest.raises(AsapError, match="testcity_000001_000019_gtFine_labelIds.png"):
        CityscapesDataset(tmp_path, "train", **NO_RESIZE)
    assert len(CityscapesDataset(tmp_path, "train", **NO_RESIZE, skip_bad=True)) == 2


def test_cityscapes_missing_root_and_layout_errors(tmp_path):
    with pytest.raises(AsapError) as e:
        CityscapesDataset(tmp_path / "nowhere", "train")
    msg = str(e.value)
    assert "\n" not in msg and "cityscapes" in msg and str(tmp_path / "nowhere") in msg and "gtFine" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsapError) as e:
        CityscapesDataset(tmp_path / "empty", "train")
    assert str(e.value) == (f"cityscapes: expected gtFine/train/<city>/*_gtFine_labelIds.png under "
                            f"{tmp_path / 'empty'} (found nothing)")
    make_cityscapes(tmp_path / "noimg", "train", 1)
    import shutil
    shutil.rmtree(tmp_path / "noimg" / "leftImg8bit")
    with pytest.raises(AsapError, match=r"expected leftImg8bit/train/<city>/\*_leftImg8bit.png under"):
        CityscapesDataset(tmp_path / "noimg", "train")


def test_ade20k_ids_follow_spade(tmp_path):
    base = tmp_path / "ADEChallengeData2016"
    raw = np.zeros((H, W), np.uint8)
    raw[:, 8:16] = 1
    raw[:, 16:24] = 150
    raw[:4, 24:] = 255      # official order: 255 -> label_nc first, then the shift: ends as 149
    raw[4:, 24:] = 37
    save(raw, base / "annotations/training/ADE_train_00000001.png")
    save(photo_of(raw), base / "images/training/ADE_train_00000001.jpg")
    save(raw, base / "annotations/validation/ADE_val_00000001.png")
    save(photo_of(raw), base / "images/validation/ADE_val_00000001.jpg")
    for root in (tmp_path, base):   # the parent or ADEChallengeData2016 itself
        ds = ADE20KDataset(root, "train", **NO_RESIZE, flip=False)
        it = ds[0]
        lab = it["label"][0].numpy()
        assert (lab[:, :8] == 150).all()      # unlabeled -> dontcare = label_nc
        assert (lab[:, 8:16] == 0).all() and (lab[:, 16:24] == 149).all()
        assert (lab[:4, 24:] == 149).all() and (lab[4:, 24:] == 36).all()
        assert (it["instance"] == 0).all()
    assert len(ADE20KDataset(tmp_path, "val", **NO_RESIZE)) == 1
    bad = raw.copy()
    bad[0, 0] = 151
    save(bad, base / "annotations/training/ADE_train_00000001.png")
    with pytest.raises(AsapError, match=r"ADE_train_00000001.png: label id 151"):
        ADE20KDataset(tmp_path, "train", **NO_RESIZE)[0]
    with pytest.raises(AsapError, match=r"ade20k: expected ADEChallengeData2016/annotations/training/\*.png"):
        (tmp_path / "e").mkdir()
        ADE20KDataset(tmp_path / "e", "train")


def test_facades_reads_palette_indices(tmp_path):
    ids = (np.arange(H * W).reshape(H, W) % 12 + 1).astype(np.uint8)
    img = Image.fromarray(ids, mode="P")
    img.putpalette(get_palette("facades").ravel().tolist())
    for phase in ("train", "val"):
        (tmp_path / f"{phase}_label").mkdir()
        img.save(tmp_path / f"{phase}_label/cmp_b0001.png")
        save(photo_of(ids), tmp_path / f"{phase}_img/cmp_b0001.jpg")
    ds = FacadesDataset(tmp_path, "train", **NO_RESIZE, flip=False)
    assert np.array_equal(ds[0]["label"][0].numpy(), ids)
    assert ds[0]["label"].max() == 12 and ds.label_nc == 13
    test = FacadesDataset(tmp_path, "test", **NO_RESIZE)     # the official test phase reads val_*
    assert test.samples[0].label.parent.name == "val_label"
    with pytest.raises(AsapError, match=r"facades: expected train_label/\*.png under"):
        (tmp_path / "e").mkdir()
        FacadesDataset(tmp_path / "e", "train")


def test_pairs_match_by_name_with_subfolders_and_instances(tmp_path):
    for i, sub in enumerate(["", "x/", "x/"]):
        lab = blocks(i, ids=(0, 1, 2, 3))
        save(lab, tmp_path / f"labels/{sub}img{i}.png")
        save(photo_of(lab, 5 * i), tmp_path / (f"images/{sub}img{i}.bmp" if i else f"images/img{i}.png"))
        save((lab.astype(np.uint16) * 1000 + i), tmp_path / f"inst/{sub}img{i}.png")
    save(photo_of(blocks(7), 99), tmp_path / "images/img0_extra.png")   # unmatched photos are ignored
    ds = PairsDataset(tmp_path / "labels", tmp_path / "images", tmp_path / "inst", label_nc=4, **NO_RESIZE)
    assert len(ds) == 3
    for i in range(3):
        it = ds[i]
        assert Path(it["path"]).stem == f"img{i}"
        assert np.array_equal(it["label"][0].numpy(), blocks(i, ids=(0, 1, 2, 3)))
        assert np.array_equal(it["instance"][0].numpy(), it["label"][0].numpy() * 1000 + i)
        assert (as_photo(it["image"])[..., 2] == 5 * i).all()


def test_pairs_colour_coded_labels_with_palette(tmp_path):
    lab = blocks(1)
    save(colorize(lab, "cityscapes"), tmp_path / "l/a.png")
    save(photo_of(lab), tmp_path / "i/a.png")
    ds = PairsDataset(tmp_path / "l", tmp_path / "i", label_nc=35, label_palette="cityscapes", **NO_RESIZE)
    assert np.array_equal(ds[0]["label"][0].numpy(), lab)
    with pytest.raises(AsapError, match="colour image"):
        PairsDataset(tmp_path / "l", tmp_path / "i", label_nc=35, **NO_RESIZE)[0]


def test_dontcare_mapping(tmp_path):
    lab = blocks(2, ids=(0, 1, 2))
    lab[0, :5] = 255
    save(lab, tmp_path / "l/a.png")
    save(photo_of(lab), tmp_path / "i/a.png")
    ds = PairsDataset(tmp_path / "l", tmp_path / "i", label_nc=3, contain_dontcare_label=True, **NO_RESIZE)
    out = ds[0]["label"][0].numpy()
    assert (out[0, :5] == 3).all() and np.array_equal(out[1:], lab[1:])
    with pytest.raises(AsapError, match=r"a.png: label id 255 is outside the 3 ids"):
        PairsDataset(tmp_path / "l", tmp_path / "i", label_nc=3, **NO_RESIZE)[0]


# ---------------------------------------------------------------------------------------------------------------
# bad samples
# ---------------------------------------------------------------------------------------------------------------
def test_bad_pairs_name_the_files(tmp_path):
    items = make_cityscapes(tmp_path, "train", 3)
    ds = CityscapesDataset(tmp_path, "train", **NO_RESIZE)
    # size mismatch: both files named
    img_path = ds.samples[0].image
    save(np.zeros((H, W + 2, 3), np.uint8), img_path)
    with pytest.raises(AsapError) as e:
        ds[0]
    assert str(ds.samples[0].label) in str(e.value) and str(img_path) in str(e.value) and "differs" in str(e.value)
    # ids >= label_nc
    bad = items[1]["label"].copy()
    bad[3, 3] = 40
    save(bad, ds.samples[1].label)
    with pytest.raises(AsapError, match=rf"{ds.samples[1].label.name}: label id 40 is outside the 35 ids"):
        ds[1]
    # corrupt file
    ds.samples[2].instance.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(AsapError) as e:
        ds[2]
    assert str(ds.samples[2].instance) in str(e.value) and "cannot read" in str(e.value)
    assert "\n" not in str(e.value)


def test_skip_bad_and_collate_counts(tmp_path):
    make_cityscapes(tmp_path, "train", 4)
    ds = CityscapesDataset(tmp_path, "train", **NO_RESIZE, skip_bad=True)
    ds.samples[1].image.write_bytes(b"not an image")
    assert ds[1] is None and ds[0] is not None
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=ds.collate_fn)))
    assert batch["skipped"] == 1 and batch["label"].shape == (3, 1, H, W) and len(batch["path"]) == 3
    assert collate([None, None]) is None
    clean = collate([ds[0], ds[2]])
    assert clean["skipped"] == 0 and clean["image"].shape == (2, 3, H, W)


# ---------------------------------------------------------------------------------------------------------------
# joint augmentation
# ---------------------------------------------------------------------------------------------------------------
def test_output_sizes_follow_official_formulas():
    t = lambda **k: JointTransform(**k)   # noqa: E731
    assert t(preprocess_mode="fixed", crop_size=512, aspect_ratio=2.0).resized_size(1024, 2048) == (256, 512)
    assert t(preprocess_mode="resize_and_crop", load_size=286, crop_size=256).resized_size(100, 300) == (286, 286)
    assert t(preprocess_mode="scale_width_and_crop", load_size=40).resized_size(30, 60) == (20, 40)
    assert t(preprocess_mode="scale_shortside_and_crop", load_size=40).resized_size(30, 60) == (40, 80)
    assert t(preprocess_mode="scale_shortside_and_crop", load_size=40).resized_size(90, 60) == (60, 40)
    assert t(preprocess_mode="none").resized_size(50, 70) == (64, 64)
    assert output_size("fixed", 512, 2.0) == [256, 512] and output_size("resize_and_crop", 256, 1.0) == [256, 256]
    with pytest.raises(AsapError, match="preprocess_mode"):
        JointTransform(preprocess_mode="bogus")


@pytest.mark.parametrize("mode,load,crop", [("resize_and_crop", 96, 64), ("scale_width_and_crop", 96, 48),
                                            ("scale_shortside_and_crop", 40, 32), ("fixed", 0, 60)])
def test_joint_augmentation_keeps_label_and_image_aligned(mode, load, crop):
    lab = blocks(3, h=48, w=72, ids=(1, 2, 3, 4, 5, 6), block=12)
    img = photo_of(lab)
    inst = lab.astype(np.int32) * 1000 + 7
    tf = JointTransform(preprocess_mode=mode, load_size=load or 1, crop_size=crop, aspect_ratio=1.5, flip=True)
    outs, flips = set(), 0
    for seed in range(8):
        params = tf.sample_params(48, 72, random.Random(seed))
        flips += params["flip"]
        l2, i2, n2 = tf(lab, img, inst, rng=random.Random(seed))
        assert l2.shape == i2.shape[:2] == n2.shape
        assert np.array_equal(n2 // 1000, l2) and (n2 % 1000 == 7).all()      # nearest on both masks
        # away from region borders (beyond the bicubic / area kernel) the photo colour is the label's colour there
        k = 5 if params["size"][0] > 48 else 2
        pad = np.pad(l2, k, constant_values=-1)   # unknown beyond the crop: not uniform
        uniform = np.ones(l2.shape, bool)
        for dy in range(-k, k + 1):
            for dx in range(-k, k + 1):
                uniform &= pad[k + dy:k + dy + l2.shape[0], k + dx:k + dx + l2.shape[1]] == l2
        assert uniform.sum() > 0.1 * uniform.size
        expect = photo_of(l2.astype(np.uint8)).astype(int)
        assert np.abs(i2.astype(int) - expect)[uniform].max() <= 2
        # and the label there is where the source label is, at the official crop/flip position
        rh, rw = params["size"]
        x0, y0 = params["crop_pos"] if tf.crops else (0, 0)
        yy, xx = np.nonzero(uniform)
        sx = (xx if not params["flip"] else l2.shape[1] - 1 - xx) + x0
        src = lab[((yy + y0 + 0.5) * 48 / rh).astype(int), ((sx + 0.5) * 72 / rw).astype(int)]
        assert np.array_equal(src, l2[yy, xx])
        outs.add(l2.tobytes())
    assert len(outs) > 1 and 0 < flips < 8          # the random crop/flip did act


def test_crop_past_the_border_pads_zero_bottom_right():
    lab = np.full((10, 12), 5, np.uint8)
    img = np.full((10, 12, 3), 200, np.uint8)
    tf = JointTransform(preprocess_mode="scale_width_and_crop", load_size=12, crop_size=16, flip=False)
    l2, i2, _ = tf(lab, img)
    assert l2.shape == (16, 16)
    assert (l2[:10, :12] == 5).all() and (l2[10:] == 0).all() and (l2[:, 12:] == 0).all()
    assert (i2[:10, :12] == 200).all() and (i2[10:] == 0).all()


def test_transform_is_reproducible_under_seeded_random(tmp_path):
    make_cityscapes(tmp_path, "train", 1)
    ds = CityscapesDataset(tmp_path, "train", preprocess_mode="resize_and_crop", load_size=24, crop_size=16)
    random.seed(5)
    a = ds[0]
    random.seed(5)
    b = ds[0]
    assert torch.equal(a["label"], b["label"]) and torch.equal(a["image"], b["image"])


# ---------------------------------------------------------------------------------------------------------------
# palettes
# ---------------------------------------------------------------------------------------------------------------
def test_palette_shapes_and_official_colours():
    cs, ade, ades, fac = (get_palette(n) for n in ("cityscapes", "ade20k", "ade20k_spade", "facades"))
    assert cs.shape == (35, 3) and ade.shape == (151, 3) and ades.shape == (151, 3) and fac.shape == (13, 3)
    assert cs.dtype == np.uint8
    assert tuple(cs[7]) == (128, 64, 128) and tuple(cs[26]) == (0, 0, 142) and tuple(cs[23]) == (70, 130, 180)
    assert tuple(ade[0]) == (0, 0, 0) and tuple(ade[1]) == (120, 120, 120) and tuple(ade[150]) == (92, 0, 255)
    assert np.array_equal(ades[:150], ade[1:]) and tuple(ades[150]) == (0, 0, 0)
    with pytest.raises(AsapError, match="unknown palette"):
        get_palette("nope")


@pytest.mark.parametrize("name", ["cityscapes", "ade20k", "ade20k_spade", "facades"])
def test_palette_round_trip(name):
    pal = get_palette(name)
    _, first = np.unique(pal.astype(np.int64) @ np.array([65536, 256, 1]), return_index=True)
    rng = np.random.default_rng(0)
    ids = rng.choice(np.sort(first), size=(37, 53))
    rgb = colorize(ids, pal)
    assert rgb.shape == (37, 53, 3) and rgb.dtype == np.uint8
    back = colors_to_ids(rgb, pal, source="x.png")
    assert back.dtype == np.int64 and np.array_equal(back, ids)


def test_unknown_colour_names_source_colour_and_position():
    rgb = colorize(np.full((6, 9), 7), "cityscapes")
    rgb[4, 5] = (1, 2, 3)
    rgb[5, 8] = (9, 9, 9)
    with pytest.raises(AsapError) as e:
        colors_to_ids(rgb, get_palette("cityscapes"), source="labels/a.png")
    msg = str(e.value)
    assert msg.startswith("labels/a.png:") and "(1, 2, 3)" in msg and "x=5, y=4" in msg and "\n" not in msg


def test_colors_to_ids_is_fast_on_full_cityscapes_frames():
    rng = np.random.default_rng(0)
    ids = np.kron(rng.integers(7, 34, size=(64, 128)), np.ones((16, 16), np.int64))   # 1024x2048
    rgb = colorize(ids, "cityscapes")
    t = time.perf_counter()
    back = colors_to_ids(rgb, "cityscapes", source="big.png")
    assert time.perf_counter() - t < 3.0
    expect = ids.copy()
    expect[expect == 18] = 17          # polegroup shares pole's colour: the smaller id wins
    assert np.array_equal(back, expect)


# ---------------------------------------------------------------------------------------------------------------
# unconditional images, metrics, configs
# ---------------------------------------------------------------------------------------------------------------
def test_image_folder_resizes_and_centre_crops(tmp_path):
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 20:40] = 255                       # the centre third is white
    save(img, tmp_path / "a/b/one.png")
    save(np.full((30, 30, 3), 60, np.uint8), tmp_path / "two.jpg")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = ImageFolderDataset(tmp_path, size=10, flip=True)
    assert len(ds) == 2
    it = ds[[Path(f).name for f in ds.files].index("one.png")]
    assert it["image"].shape == (3, 10, 10) and it["path"].endswith("one.png")
    assert torch.allclose(it["image"][:, 2:8, 2:8], torch.ones(3, 6, 6), atol=0.02)   # centre crop = white
    with pytest.raises(AsapError, match="does not exist"):
        ImageFolderDataset(tmp_path / "none", size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsapError, match=r"expected images .* \(found nothing\)"):
        ImageFolderDataset(tmp_path / "empty", size=8)


def test_psnr_definition():
    x = torch.rand(2, 3, 8, 8) * 1.6 - 0.8
    assert psnr(x, x) == pytest.approx(100.0)
    per = psnr(x + 0.2, x, reduction="none")      # [-1,1] offset 0.2 = 0.1 on [0,1]: MSE 0.01 -> 20 dB
    assert per.shape == (2,) and torch.allclose(per, torch.full((2,), 20.0, dtype=torch.float64))
    assert psnr(x[0] + 0.2, x[0]) == pytest.approx(20.0)


def test_data_configs_compose_and_build(tmp_path):
    import asap.config  # noqa: F401  (resolvers)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from asap.cli import compose

    make_cityscapes(tmp_path / "cs", "train", 2)
    make_cityscapes(tmp_path / "cs", "val", 1)
    cfg = compose("train", ["data=cityscapes", f"data.root={tmp_path / 'cs'}", "data.crop_size=64"])
    assert list(cfg.data.image_size) == [32, 64]
    train, val = instantiate(cfg.data.train), instantiate(cfg.data.val)
    assert len(train) == 2 and len(val) == 1 and train.transform.flip and not val.transform.flip
    assert train[0]["label"].shape == (1, 32, 64)
    for name, size in [("ade20k", [256, 256]), ("facades", [256, 256]), ("pairs", [256, 256])]:
        c = compose("train", [f"data={name}"] + (["data.label_nc=4"] if name == "pairs" else []))
        d = OmegaConf.to_container(c.data, resolve=True)
        assert d["image_size"] == size and d["train"]["_target_"].startswith("asap.data.")
        for key in ("label_nc", "contain_dontcare_label", "no_instance_edge", "no_instance_dist", "lr_instance",
                    "crop_size", "load_size", "aspect_ratio", "preprocess_mode", "no_flip", "batch_size",
                    "num_workers", "skip_bad", "palette"):
            assert key in d, (name, key)
    save(np.zeros((8, 8, 3), np.uint8), tmp_path / "imgs/a.png")
    c = compose("train", ["data=images", f"data.root={tmp_path / 'imgs'}", "data.image_size=4"])
    assert instantiate(c.data.train)[0]["image"].shape == (3, 4, 4)
