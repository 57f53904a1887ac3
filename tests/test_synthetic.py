"""The embedded synthetic dataset: deterministic, in the exact Cityscapes layout, photos a function of
(label, instance, position), an honest per-class-mean baseline, atomic generation."""
from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asap.data.cityscapes import CityscapesDataset
from asap.data.palettes import CITYSCAPES, CITYSCAPES_INSTANCE_IDS, colorize
from asap.data.synthetic import (
    BUILDING, CAR, ROAD, SIDEWALK, SKY, SyntheticDataset, baseline_psnr, class_mean_baseline, ensure_synthetic,
    render_photo, synthetic_images)
from asap.errors import AsapError

SMALL = dict(num_train=6, num_val=3, height=64, width=128, seed=0)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return ensure_synthetic(tmp_path_factory.mktemp("syn") / "synthetic", **SMALL)


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_same_seed_identical_bytes_other_seed_differs(small, tmp_path):
    again = ensure_synthetic(tmp_path / "again", **SMALL)
    a, b = files(small), files(again)
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    other = files(ensure_synthetic(tmp_path / "other", **{**SMALL, "seed": 1}))
    photos = [k for k in a if k.endswith("_leftImg8bit.png")]
    assert len(photos) == 9 and all(a[k] != other[k] for k in photos)


def test_exact_cityscapes_layout(small):
    for split, n, cities in (("train", 6, {"aurora", "brightwater", "cobbleton"}), ("val", 3, {"dunmore"})):
        labels = sorted((small / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
        assert len(labels) == n and {p.parent.name for p in labels} == cities
        for lab in labels:
            stem = lab.name[: -len("_gtFine_labelIds.png")]
            assert len(stem.split("_")) == 3
            inst = lab.with_name(stem + "_gtFine_instanceIds.png")
            color = lab.with_name(stem + "_gtFine_color.png")
            photo = small / "leftImg8bit" / split / lab.parent.name / f"{stem}_leftImg8bit.png"
            assert Image.open(lab).mode == "L" and Image.open(inst).mode.startswith("I")
            assert Image.open(photo).mode == "RGB" and Image.open(photo).size == (128, 64)
            assert read(inst).dtype == np.uint16
            assert np.array_equal(read(color), colorize(read(lab), CITYSCAPES))


def test_instance_ids_follow_cityscapes_convention(small):
    seen_instances = 0
    for lab_path in sorted(small.glob("gtFine/*/*/*_gtFine_labelIds.png")):
        lab = read(lab_path).astype(np.int64)
        inst = read(Path(str(lab_path).replace("_labelIds", "_instanceIds"))).astype(np.int64)
        things = np.isin(lab, CITYSCAPES_INSTANCE_IDS)
        assert np.array_equal(inst[~things], lab[~things])              # stuff: the plain class id
        assert np.array_equal(inst[things] // 1000, lab[things])        # things: id * 1000 + k
        seen_instances += len(np.unique(inst[things]))
        assert {SKY, ROAD, SIDEWALK} <= set(np.unique(lab).tolist())
    assert seen_instances >= 6


def test_readable_by_cityscapes_dataset(small):
    ds = CityscapesDataset(small, "train", preprocess_mode="fixed", crop_size=128, aspect_ratio=2.0, flip=False)
    assert len(ds) == 6 and len(CityscapesDataset(small, "val", crop_size=128, aspect_ratio=2.0)) == 3
    it = ds[0]
    assert it["label"].shape == (1, 64, 128) and it["image"].shape == (3, 64, 128)
    lab_file = read(Path(it["path"])).astype(np.int64)
    assert np.array_equal(it["label"][0].numpy(), lab_file)
    assert int(it["label"].max()) < 35 and (it["instance"] >= 1000).any()
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 64, 128)


def test_photo_is_a_function_of_label_instance_position(small):
    for lab_path in sorted(small.glob("gtFine/*/*/*_gtFine_labelIds.png")):
        lab = read(lab_path)
        inst = read(Path(str(lab_path).replace("_labelIds", "_instanceIds"))).astype(np.int64)
        photo = read(Path(str(lab_path).replace("gtFine", "leftImg8bit", 1).replace("_gtFine_labelIds",
                                                                                      "_leftImg8bit")))
        assert np.array_equal(render_photo(lab, inst), photo)
    # position matters (a class is not one colour) and instances matter (two cars differ in tint)
    lab = np.full((32, 64), BUILDING, np.uint8)
    inst = lab.astype(np.int64)
    img = render_photo(lab, inst).astype(int)
    assert img[8:24, 8:56].reshape(-1, 3).std(axis=0).max() > 10
    assert np.array_equal(img[2:10, 2:10], img[10:18, 10:18])     # period-8 pattern
    cars = np.full((32, 64), ROAD, np.uint8)
    cars[8:24, 4:28] = CAR
    cars[8:24, 36:60] = CAR
    cinst = cars.astype(np.int64)
    cinst[8:24, 4:28] = CAR * 1000
    cinst[8:24, 36:60] = CAR * 1000 + 1
    photo = render_photo(cars, cinst).astype(int)
    assert np.abs(photo[12:20, 8:24] - photo[12:20, 40:56]).max() > 10
    same = render_photo(cars, np.where(cars == CAR, CAR * 1000, cinst)).astype(int)
    assert np.array_equal(same[12:20, 8:24], same[12:20, 40:56])


def test_baseline_json_sane_and_matches_the_psnr_definition(small):
    info = json.loads((small / "baseline.json").read_text())
    value = baseline_psnr(small)
    assert math.isfinite(value) and 10.0 < value < 30.0 and value == pytest.approx(info["psnr_db"])

    def split(name):
        labs, photos = [], []
        for p in sorted((small / "gtFine" / name).glob("*/*_gtFine_labelIds.png")):
            labs.append(read(p))
            photos.append(read(Path(str(p).replace("gtFine", "leftImg8bit", 1).replace("_gtFine_labelIds",
                                                                                        "_leftImg8bit"))))
        return labs, photos
    again = class_mean_baseline(*split("train"), *split("val"))
    assert again == pytest.approx(value, abs=1e-3)
    # the class-mean predictor does what it says: scored on its own training photos it does better
    assert class_mean_baseline(*split("train"), *split("train")) > value - 1.0


def test_second_call_reuses_and_settings_are_checked(small, tmp_path):
    manifest = small / "manifest.json"
    before = manifest.stat().st_mtime_ns
    t = time.perf_counter()
    assert ensure_synthetic(small, **SMALL) == small
    assert time.perf_counter() - t < 1.0 and manifest.stat().st_mtime_ns == before
    with pytest.raises(AsapError, match=r"other settings: num_train=6 \(want 7\)"):
        ensure_synthetic(small, **{**SMALL, "num_train": 7})
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("mine")
    with pytest.raises(AsapError, match="not a finished synthetic dataset"):
        ensure_synthetic(tmp_path / "foreign", **SMALL)
    with pytest.raises(AsapError, match="baseline.json not found"):
        baseline_psnr(tmp_path / "foreign")


def test_atomic_generation_concurrent_and_stale_temps(tmp_path):
    stale = tmp_path / ".syn.tmp-dead"
    stale.mkdir()
    (stale / "half.png").write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    results, errors = [], []

    def run():
        try:
            results.append(ensure_synthetic(tmp_path / "syn", num_train=3, num_val=2, height=32, width=64))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]       # no temp folder left, stale one removed
    assert len(list((tmp_path / "syn").glob("leftImg8bit/*/*/*.png"))) == 5


def test_synthetic_config_builds_datasets_and_baseline(tmp_path):
    import asap.config  # noqa: F401  (resolvers)
    from hydra.utils import instantiate

    from asap.cli import compose

    gen = "{num_train: 4, num_val: 2, height: 32, width: 64, seed: 3}"
    cfg = compose("train", ["data=synthetic", f"data.root={tmp_path / 'syn'}", f"data.generate={gen}",
                            "data.crop_size=64"])
    assert list(cfg.data.image_size) == [32, 64]
    train, val = instantiate(cfg.data.train), instantiate(cfg.data.val)
    assert isinstance(train, SyntheticDataset) and len(train) == 4 and len(val) == 2
    assert train[0]["image"].shape == (3, 32, 64) and train.transform.flip and not val.transform.flip
    assert cfg.data.baseline_psnr == pytest.approx(baseline_psnr(tmp_path / "syn"))
    img_cfg = compose("train", ["data=synthetic_images", f"data.root={tmp_path / 'syn'}", f"data.generate={gen}",
                                "data.image_size=16"])
    imgs = instantiate(img_cfg.data.train)
    assert len(imgs) == 4 and imgs[0]["image"].shape == (3, 16, 16)
    assert len(synthetic_images(tmp_path / "syn", "val", 8, generate=dict(num_train=4, num_val=2, height=32,
                                                                          width=64, seed=3))) == 2
