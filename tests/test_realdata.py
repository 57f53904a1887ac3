"""Every reader and tool on the small REAL data sets in ../shared/realdata (skipped, saying why, when absent).

The expected numbers (sizes, id sets, crowd ids, palette indices) are the ones each folder's README measured.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import asap.config  # noqa: F401  (registers the asap.* config resolvers)
from asap.data.labels import read_label_ids
from asap.errors import AsapError
from asap.data.preprocess import instance_edges
from tests.conftest import REPO, realdata_dir

CS_TRAIN_IDS = {0, 1, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 32, 33}
CS_CROWD = {"aachen_000002_000019": {26}, "aachen_000004_000019": {26, 33}, "aachen_000006_000019": {24}}


def run_tool(tool: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True,
                          env=env, timeout=600)


def frame(path: str | Path) -> str:
    return "_".join(Path(path).name.split("_")[:3])


# ------------------------------------------------------------------------------------------------------------------
# Cityscapes (pix2pixHD's 7 train triplets + 15 val label/instance maps)
# ------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cityscapes_linked(tmp_path_factory) -> Path:
    from asap.data.prepare import link_cityscapes

    return link_cityscapes(realdata_dir("cityscapes_pix2pixhd"), tmp_path_factory.mktemp("cs") / "cityscapes")


def test_cityscapes_flat_layout_items(tmp_path):
    from asap.data.cityscapes import CityscapesDataset

    ds = CityscapesDataset(realdata_dir("cityscapes_pix2pixhd"), "train", flip=False, crop_position="center")
    assert len(ds) == 7
    seen = set()
    for i in (0, 4):
        it = ds[i]
        assert it["label"].shape == (1, 256, 512) and it["label"].dtype == torch.int64
        assert it["instance"].shape == (1, 256, 512) and it["image"].shape == (3, 256, 512)
        assert -1.0 <= float(it["image"].min()) < -0.5 and 0.5 < float(it["image"].max()) <= 1.0
        seen |= set(it["label"].unique().tolist())
        # instance ids survive the nearest resize: id*1000+k objects and plain class ids, never blended values
        inst = it["instance"]
        big = inst >= 1000
        assert torch.equal(inst[big] // 1000, it["label"][big]) and torch.equal(inst[~big], it["label"][~big])
    assert seen <= CS_TRAIN_IDS and {7, 11, 26} <= seen
    assert int(ds[0]["instance"].max()) == 33001


def test_cityscapes_native_ids_instances_and_crowd(cityscapes_linked):
    from asap.data.cityscapes import CityscapesDataset

    ds = CityscapesDataset(cityscapes_linked, "train")          # the official gtFine/leftImg8bit layout (links)
    assert len(ds) == 7
    union = set()
    for s in ds.samples:
        ids, image, inst = ds.load(s)                           # untransformed: 2048x1024
        assert ids.shape == (1024, 2048) and image.shape == (1024, 2048, 3) and inst.shape == ids.shape
        assert inst.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 33
        union |= set(np.unique(ids).tolist())
        obj = inst >= 1000
        assert (inst[obj] // 1000 == ids[obj]).all() and (inst[~obj] == ids[~obj]).all()
        crowd = set(np.unique(inst[~obj & (ids >= 24)]).tolist())   # instance classes without an instance number
        assert crowd == CS_CROWD.get(frame(s.label), set()), frame(s.label)
    assert union == CS_TRAIN_IDS


def test_cityscapes_instance_edges_split_touching_objects():
    """Edges of the 16-bit instance map separate same-class objects (and a crowd from its members) where the label
    map has no boundary: the reason the official models take instance edges."""
    root = realdata_dir("cityscapes_pix2pixhd")
    name = "aachen_000004_000019"
    ids = torch.from_numpy(read_label_ids(root / "train_label" / f"{name}_gtFine_labelIds.png"))[None, None]
    inst = torch.from_numpy(read_label_ids(root / "train_inst" / f"{name}_gtFine_instanceIds.png"))[None, None]
    assert inst.dtype == torch.int64 and int(inst.max()) > 26000     # 16-bit values kept, not clipped to 8 bit
    e_inst, e_lab = instance_edges(inst).bool(), instance_edges(ids).bool()
    assert (e_lab & ~e_inst).sum() == 0                               # every class boundary is an instance boundary
    inner = e_inst & ~e_lab                                           # object/object and crowd/object boundaries
    assert int(inner.sum()) > 100
    assert set(ids[inner].unique().tolist()) <= set(range(24, 34))    # only inside instance classes
    # the crowd region (plain 26) touches individual cars (26xxx): that boundary is among the inner edges
    crowd = inst == 26
    assert bool((inner & crowd).any())


def test_cityscapes_val_frames_link_as_val_split(cityscapes_linked):
    labels = sorted((cityscapes_linked / "gtFine" / "val" / "frankfurt").glob("*_labelIds.png"))
    insts = sorted((cityscapes_linked / "gtFine" / "val" / "frankfurt").glob("*_instanceIds.png"))
    assert len(labels) == 15 and len(insts) == 15 and all(p.is_symlink() for p in labels)
    assert not (cityscapes_linked / "leftImg8bit" / "val").exists()   # the source has no photos for them
    extra = set()
    for p in labels:
        extra |= set(np.unique(read_label_ids(p)).tolist()) - CS_TRAIN_IDS
    assert extra == {2, 18, 27, 28, 31}


def test_cityscapes_config_composes_to_real_data():
    from hydra.utils import instantiate

    from asap.cli import compose

    root = realdata_dir("cityscapes_pix2pixhd")
    cfg = compose("train", ["model=asapnet", "data=cityscapes", "preset=asapnet_cityscapes_real",
                            f"data.root={root}"])
    assert list(cfg.data.image_size) == [256, 512]
    train, val = instantiate(cfg.data.train), instantiate(cfg.data.val)
    assert len(train) == 7 and len(val) == 7 and val.split == "train"


def test_cityscapes_real_preset_baseline_is_measured():
    """The preset's baseline_psnr is the per-class-mean-colour PSNR of the 7 training images (recomputed)."""
    from hydra.utils import instantiate

    from asap.cli import compose
    from asap.metrics.translation import class_mean_psnr

    root = realdata_dir("cityscapes_pix2pixhd")
    cfg = compose("train", ["model=asapnet", "data=cityscapes", "preset=asapnet_cityscapes_real",
                            f"data.root={root}"])
    val = instantiate(cfg.data.val)
    assert class_mean_psnr(val, val, cfg.data.label_nc) == pytest.approx(float(cfg.data.baseline_psnr), abs=1e-3)


# ------------------------------------------------------------------------------------------------------------------
# COCO-Stuff (SPADE's samples): data=pairs, label_nc 182 + dontcare
# ------------------------------------------------------------------------------------------------------------------
COCO_IDS = {"000000029286": {0, 49, 104, 106, 131, 152, 155, 175, 255},
            "000000001503": {71, 72, 73, 75, 109, 129, 138, 142, 171, 179, 255}}


@pytest.mark.parametrize("split,n", [("train", 13), ("val", 8)])
def test_coco_stuff_pairs_dontcare_and_instances(split, n):
    from asap.data.pairs import PairsDataset

    c = realdata_dir("coco_stuff_spade")
    ds = PairsDataset(c / f"{split}_label", c / f"{split}_img", c / f"{split}_inst", label_nc=182,
                      contain_dontcare_label=True, preprocess_mode="resize_and_crop", load_size=256, crop_size=256)
    assert len(ds) == n and all(s.instance is not None for s in ds.samples)
    for s in ds.samples:
        raw = read_label_ids(s.label)
        ids, image, inst = ds.load(s)
        assert (raw == 255).any() and not ((raw > 181) & (raw != 255)).any()
        assert (ids[raw == 255] == 182).all() and (ids[raw != 255] == raw[raw != 255]).all()   # 255 -> dontcare
        assert image.shape[:2] == ids.shape and inst.shape == ids.shape and 0 <= inst.min() and inst.max() <= 255
        if s.label.stem in COCO_IDS:
            assert set(np.unique(raw).tolist()) == COCO_IDS[s.label.stem]
    it = ds[0]
    assert it["label"].shape == (1, 256, 256) and int(it["label"].max()) <= 182 and it["image"].shape == (3, 256, 256)


def test_coco_stuff_config_with_instance_edges():
    from hydra.utils import instantiate

    from asap.cli import compose

    c = realdata_dir("coco_stuff_spade")
    over = ["model=spade", "data=pairs", "data.label_nc=182", "data.contain_dontcare_label=true",
            "data.no_instance_edge=false"]
    for split in ("train", "val"):
        over += [f"data.{split}.label_dir={c}/{split}_label", f"data.{split}.image_dir={c}/{split}_img",
                 f"data.{split}.instance_dir={c}/{split}_inst"]
    cfg = compose("train", over)
    val = instantiate(cfg.data.val)
    it = val[0]
    assert len(val) == 8 and it["label"].shape == (1, 256, 256)
    assert instance_edges(it["instance"][None]).sum() > 0


# ------------------------------------------------------------------------------------------------------------------
# ADE20K (3 validation pairs) through tools/prepare_data.py
# ------------------------------------------------------------------------------------------------------------------
def test_ade20k_prepare_tool_and_spade_id_shift(tmp_path):
    from asap.data.ade20k import ADE20KDataset

    src = realdata_dir("ade20k_sceneparsing")
    r = run_tool("prepare_data.py", "kind=ade20k", f"src={src}", f"dst={tmp_path / 'ade'}")
    assert r.returncode == 0, r.stderr
    assert "linked 12 file(s)" in r.stdout
    for split in ("train", "val"):
        ds = ADE20KDataset(tmp_path / "ade", split)
        assert len(ds) == 3
    sizes = {"ADE_val_00000001": (512, 683), "ADE_val_00000002": (364, 500), "ADE_val_00000003": (300, 400)}
    for s in ds.samples:
        raw = read_label_ids(s.label)
        ids, image, _ = ds.load(s)
        assert raw.shape == image.shape[:2] == sizes[s.label.stem]
        assert 0 <= raw.min() and raw.max() <= 150
        assert (ids[raw == 0] == 150).all() and (ids[raw > 0] == raw[raw > 0] - 1).all()   # SPADE's shift
    first = ADE20KDataset(tmp_path / "ade", "val").samples[0]
    assert set(np.unique(read_label_ids(first.label)).tolist()) == {0, 1, 2, 3, 5, 7, 10, 18}
    it = ds[0]
    assert it["label"].shape == (1, 256, 256) and int(it["label"].max()) <= 150


def test_prepare_tool_refuses_non_empty_destination(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    r = run_tool("prepare_data.py", "kind=ade20k", f"src={realdata_dir('ade20k_sceneparsing')}",
                 f"dst={tmp_path / 'busy'}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "not an empty folder" in r.stderr
    r = run_tool("prepare_data.py", "kind=lsun", f"src={tmp_path}", f"dst={tmp_path / 'new'}")
    assert r.returncode == 2 and "kind='lsun'" in r.stderr


# ------------------------------------------------------------------------------------------------------------------
# CMP Facades: a palette PNG whose indices are the ids
# ------------------------------------------------------------------------------------------------------------------
def test_facades_palette_indices_kept(tmp_path):
    from PIL import Image

    from asap.data.facades import FacadesDataset
    from asap.data.prepare import link_facades

    src = realdata_dir("facades_mask2coco")
    png = src / "masks" / "cmp_b0001.png"
    pil = Image.open(png)
    assert pil.mode == "P" and len(pil.getpalette()) // 3 == 13
    raw = read_label_ids(png)
    assert raw.shape == (1024, 543) and set(np.unique(raw).tolist()) == set(range(1, 12))   # indices, not colours
    ds = FacadesDataset(link_facades(src, tmp_path / "fac"), "train", flip=False, crop_position="center")
    ids, image, _ = ds.load(ds.samples[0])
    assert np.array_equal(ids, raw) and image.shape == (1024, 543, 3)                     # portrait kept
    it = ds[0]
    assert it["label"].shape == (1, 256, 256) and set(it["label"].unique().tolist()) <= set(range(1, 12))
    val = FacadesDataset(tmp_path / "fac", "test")
    assert len(val) == 1


# ------------------------------------------------------------------------------------------------------------------
# Unconditional image folders
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,n,size", [("afhq_stargan2", 43, 512), ("celebahq_sean", 48, 1024)])
def test_image_folders(name, n, size):
    from PIL import Image

    from asap.data.images import ImageFolderDataset

    root = realdata_dir(name)
    ds = ImageFolderDataset(root, size=64)
    assert len(ds) == n
    assert Image.open(ds.files[0]).size == (size, size)
    it = ds[n - 1]
    assert it["image"].shape == (3, 64, 64) and -1.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
    assert float(it["image"].std()) > 0.1


# ------------------------------------------------------------------------------------------------------------------
# One rule set: translate reads every real label file exactly as the training reader does
# ------------------------------------------------------------------------------------------------------------------
def test_translate_reads_labels_like_the_datasets(tmp_path):
    from asap.data.pairs import PairsDataset
    from asap.data.preprocess import SemanticSpec
    from asap.inference.translate import ids_from_file

    cs = realdata_dir("cityscapes_pix2pixhd")
    from asap.data.cityscapes import CityscapesDataset
    ds = CityscapesDataset(cs, "train")
    s = ds.samples[2]
    assert np.array_equal(ids_from_file(s.label, SemanticSpec(35), "auto"), ds.load(s)[0])
    c = realdata_dir("coco_stuff_spade")
    coco = PairsDataset(c / "val_label", c / "val_img", label_nc=182, contain_dontcare_label=True)
    s = coco.samples[0]
    assert np.array_equal(ids_from_file(s.label, SemanticSpec(182, True), "ids"), coco.load(s)[0])
    ade = realdata_dir("ade20k_sceneparsing") / "annotations" / "ADE_val_00000003.png"
    got = ids_from_file(ade, SemanticSpec(150, True), "auto")
    raw = read_label_ids(ade)
    assert (got[raw == 0] == 150).all() and (got[raw > 0] == raw[raw > 0] - 1).all() and got[raw > 0].max() == 102


# ------------------------------------------------------------------------------------------------------------------
# tools/translate.py on real label folders with tiny checkpoints
# ------------------------------------------------------------------------------------------------------------------
def tiny_checkpoint(path: Path, **over) -> Path:
    from asap.models.asapnet import ASAPNetGenerator
    from asap.pretrained.native import make_checkpoint
    from asap.utils.io import save_torch

    cfg = dict(label_nc=35, instance_edge=True, lr_instance=True, downsampling=8, learned_ds_factor=4, lr_width=4,
               lr_max_width=8, lr_depth=1, hr_width=8, hr_depth=2, image_size=[32, 64])
    cfg.update(over)
    torch.manual_seed(0)
    g = ASAPNetGenerator(**cfg)
    save_torch(make_checkpoint("asapnet", {"generator": (g, {"_target_": "asap.models.asapnet.ASAPNetGenerator",
                                                             **cfg})}, step=0), path)
    return path


def test_translate_cityscapes_val_folder_with_instance_folder(tmp_path):
    from PIL import Image

    from asap.inference.translate import expand_inputs, find_instance

    cs = realdata_dir("cityscapes_pix2pixhd")
    ck = tiny_checkpoint(tmp_path / "cs.pt")
    out = tmp_path / "out"
    r = run_tool("translate.py", str(cs / "test_label"), f"instance={cs / 'test_inst'}", f"checkpoint={ck}",
                 "labels=ids", f"out={out}")
    assert r.returncode == 0, r.stderr
    assert "wrote 15 image(s)" in r.stdout and "no instance maps" not in r.stderr
    outs = sorted(out.iterdir())
    assert [p.stem for p in outs] == sorted(p.stem for p in (cs / "test_label").glob("*_labelIds.png"))
    arrs = [np.asarray(Image.open(p)) for p in outs]
    assert all(a.shape == (32, 64, 3) and a.dtype == np.uint8 for a in arrs)
    assert len({a.tobytes() for a in arrs}) == 15                     # each label map gave its own image
    # each label is paired with its own instance map; a folder of instance maps is never read as labels
    labels = expand_inputs([cs / "test_label"])
    assert len(labels) == 15 and all(p.name.endswith("_labelIds.png") for p in labels)
    with pytest.raises(AsapError, match="no label maps"):
        expand_inputs([cs / "test_inst"])
    inst = find_instance(labels[3], cs / "test_inst", 15)
    assert inst.name == labels[3].name.replace("labelIds", "instanceIds")


def test_translate_cityscapes_native_size_and_mixed_folder(tmp_path, cityscapes_linked):
    from PIL import Image

    ck = tiny_checkpoint(tmp_path / "cs.pt")
    mixed = cityscapes_linked / "gtFine" / "val" / "frankfurt"     # labelIds + instanceIds side by side
    out = tmp_path / "native"
    one = sorted(mixed.glob("*_labelIds.png"))[0]
    r = run_tool("translate.py", str(one), f"checkpoint={ck}", "resize=native", f"out={out}")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(out / f"{one.stem}.png")).shape == (1024, 2048, 3)
    r = run_tool("translate.py", str(mixed), f"checkpoint={ck}", f"out={tmp_path / 'mixed'}")   # siblings found
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "mixed").iterdir())) == 15 and "no instance maps" not in r.stderr


def test_translate_refuses_a_facades_checkpoint_on_cityscapes_labels(tmp_path):
    cs = realdata_dir("cityscapes_pix2pixhd")
    ck = tiny_checkpoint(tmp_path / "facades.pt", label_nc=13, instance_edge=False, lr_instance=False,
                         image_size=[32, 32])
    out = tmp_path / "out"
    r = run_tool("translate.py", str(cs / "test_label"), f"instance={cs / 'test_inst'}", f"checkpoint={ck}",
                 f"out={out}")
    assert r.returncode == 2 and not out.exists()
    err = r.stderr.strip()
    assert "\n" not in err and "label_nc=13" in err and "Cityscapes" in err


def test_translate_coco_stuff_and_facades_palette(tmp_path):
    from PIL import Image

    c = realdata_dir("coco_stuff_spade")
    ck = tiny_checkpoint(tmp_path / "coco.pt", label_nc=182, contain_dontcare_label=True, image_size=[32, 32])
    r = run_tool("translate.py", str(c / "val_label"), f"instance={c / 'val_inst'}", f"checkpoint={ck}",
                 "labels=ids", f"out={tmp_path / 'coco'}")
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "coco").iterdir())) == 8
    ck13 = tiny_checkpoint(tmp_path / "fac.pt", label_nc=13, instance_edge=False, lr_instance=False,
                           image_size=[64, 32])
    png = realdata_dir("facades_mask2coco") / "masks" / "cmp_b0001.png"
    r = run_tool("translate.py", str(png), f"checkpoint={ck13}", "labels=ids", f"out={tmp_path / 'fac'}")
    assert r.returncode == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "fac" / "cmp_b0001.png")).shape == (64, 32, 3)
    # a COCO-Stuff label map (ids up to 180 + 255) on the 13-class checkpoint: one line, nothing written
    r = run_tool("translate.py", str(c / "val_label"), f"checkpoint={ck13}", f"out={tmp_path / 'bad'}")
    assert r.returncode == 2 and "\n" not in r.stderr.strip() and "label_nc=13" in r.stderr
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------------------------------
# tools/evaluate.py: split=test really scores the test split (or refuses), unconditional FID/KID end to end
# ------------------------------------------------------------------------------------------------------------------
def test_evaluate_split_test_scores_test_or_refuses(tmp_path):
    import json

    from asap.data.prepare import link_facades

    fac = link_facades(realdata_dir("facades_mask2coco"), tmp_path / "fac", phases=("val",))
    ck = tiny_checkpoint(tmp_path / "fac.pt", label_nc=13, instance_edge=False, lr_instance=False,
                         image_size=[64, 64])
    small = ["data.crop_size=64", "data.load_size=64", "lpips_pretrained=false", "progress=false"]
    r = run_tool("evaluate.py", f"checkpoint={ck}", "data=facades", f"data.root={fac}", "split=test", *small)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["split"] == "test" and res["num_images"] == 1.0 and 0 < res["psnr"] < 100   # facades test = val
    assert -1 <= res["ssim"] < 1
    r = run_tool("evaluate.py", f"checkpoint={ck}", "data=facades", f"data.root={fac}", "split=train", *small)
    assert r.returncode == 2 and "train_label" in r.stderr          # no train folders linked: not silently val
    cs = realdata_dir("cityscapes_pix2pixhd")
    ck35 = tiny_checkpoint(tmp_path / "cs.pt")
    r = run_tool("evaluate.py", f"checkpoint={ck35}", "data=cityscapes", f"data.root={cs}", "split=test", *small)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "test_img" in r.stderr   # no photos
    r = run_tool("evaluate.py", f"checkpoint={ck}", "data=pairs", "data.label_nc=13", "split=test", *small)
    assert r.returncode == 2 and "no test split" in r.stderr
    r = run_tool("evaluate.py", f"checkpoint={ck}", "data=facades", "split=holdout", *small)
    assert r.returncode == 2 and "split='holdout'" in r.stderr


@pytest.fixture(scope="module")
def inception_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds seeded random FID-Inception weights (the real file cannot be downloaded)."""
    from asap.metrics.inception import WEIGHTS_FILE
    from tests.test_fid import save_random_inception

    home = tmp_path_factory.mktemp("torch_home")
    save_random_inception(home / "hub" / "checkpoints" / WEIGHTS_FILE)
    return home


STYLEGAN_TINY = ["model.generator.style_dim=16", "model.generator.n_mlp=2", "model.generator.channels=[16,16,8]",
                 "data.image_size=16", "data.batch_size=4", "data.num_workers=0", "model.samples.num=4"]


def test_stylegan2_ada_on_afhq_then_evaluate_fid_kid(tmp_path, inception_home):
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    afhq = realdata_dir("afhq_stargan2")
    r = run_env(f"TORCH_HOME={inception_home}", "train.py", "model=stylegan2", "data=images", f"data.root={afhq}",
                *STYLEGAN_TINY, "model.augment.enabled=true", "model.augment.p=0.2", "trainer.max_steps=4",
                "trainer.ckpt_every=4", "trainer.image_every=2", "trainer.log_every=1", "trainer.val_every=4",
                f"metrics.fid.real={afhq}", "metrics.fid.n=4", "metrics.fid.dims=192", "trainer.progress=false",
                f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    acc = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    assert "train/samples" in acc.Tags()["images"] or acc.Tags()["images"]
    assert "augment/p" in acc.Tags()["scalars"]
    fids = acc.Scalars("val/fid")                                   # FID at val_every although data.val is null
    assert [e.step for e in fids] == [4] and fids[0].value > 0
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000004.pt"
    env_home = f"TORCH_HOME={inception_home}"
    common = [f"checkpoint={ckpt}", "n=6", "batch_size=3", "kid_subsets=5", "kid_subset_size=4", "inception_dims=192"]
    stats = tmp_path / "afhq.npz"
    r = run_env(env_home, "evaluate.py", *common, f"real={afhq}", "max_images=6", f"save_stats={stats}")
    assert r.returncode == 0, r.stderr[-2000:]
    first = json.loads(r.stdout.strip().splitlines()[-1])
    assert first["fid"] > 0 and np.isfinite(first["kid"]) and stats.is_file()
    p = first["protocol"]
    assert p["num_fake"] == 6 and p["num_real"] == 6 and p["fake_resolution"] == [[16, 16]]
    assert p["real_resolution"] == [[512, 512]] and len(p["weights_sha256"]) == 64
    assert str(afhq.resolve()) in p["real_stats"]                     # the folder as resolved (links followed)
    assert "bilinear 299x299" in p["resize"] and "pytorch-fid" in p["inception"]
    assert "generated" in r.stderr                                   # the progress bar
    r = run_env(env_home, "evaluate.py", *common, f"real={stats}", "progress=false")
    assert r.returncode == 0, r.stderr[-2000:]
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert again["fid"] == pytest.approx(first["fid"], rel=1e-9) and again["kid"] == pytest.approx(first["kid"])
    assert "stats file" in again["protocol"]["real_stats"]
    # offline without the weights: one line naming the file and where to put it, before any work
    r = run_env(f"TORCH_HOME={tmp_path / 'empty'}", "evaluate.py", *common, f"real={afhq}")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "pt_inception-2015-12-05-6726825d.pth" in r.stderr and str(tmp_path / "empty") in r.stderr


def run_env(assign: str, tool: str, *args: str) -> subprocess.CompletedProcess:
    key, value = assign.split("=", 1)
    env = dict(os.environ, PYTHONPATH=str(REPO), **{key: value})
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True,
                          env=env, timeout=600)
