"""The failure catalogue: every kind of user mistake, for every tool, run as a subprocess.

Each case must exit non-zero with at most a few lines on stderr, no traceback, and leave its output path exactly as
it was (absent stays absent; an existing file, folder, pipe or device keeps its type and content).
"""
from __future__ import annotations

import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asap.models.asapnet import ASAPNetGenerator
from asap.models.stylegan2 import StyleGAN2Generator
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_torch
from tests.conftest import REPO

ASAP = dict(label_nc=5, instance_edge=True, lr_instance=True, downsampling=8, learned_ds_factor=4, lr_width=4,
            lr_max_width=8, lr_depth=1, hr_width=8, hr_depth=2, image_size=[32, 64])
ASAP_TARGET = "asap.models.asapnet.ASAPNetGenerator"
SG = dict(size=16, style_dim=32, n_mlp=2, channels=[32, 32, 16])
SG_TARGET = "asap.models.stylegan2.StyleGAN2Generator"
MAX_LINES = 3


def run_tool(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{tool}.py"), *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def snapshot(path: Path) -> object:
    """What is at ``path`` now: nothing, a device/pipe (its type), a file (its bytes) or a folder (its listing)."""
    if not path.exists() and not path.is_symlink():
        return None
    st = path.stat()
    if stat.S_ISDIR(st.st_mode):
        return ("dir", sorted((p.relative_to(path).as_posix(), p.stat().st_size) for p in path.rglob("*")))
    if stat.S_ISREG(st.st_mode):
        return ("file", path.read_bytes())
    return ("special", stat.S_IFMT(st.st_mode))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every input the cases need: good tiny checkpoints and inputs, and one bad file of each kind."""
    d = tmp_path_factory.mktemp("failures")
    torch.manual_seed(0)
    f: dict[str, Path] = {"dir": d}
    f["asap"] = save_torch(make_checkpoint("asapnet", {"generator": (ASAPNetGenerator(**ASAP),
                                                                      {"_target_": ASAP_TARGET, **ASAP})}), d / "a.pt")
    f["sg"] = save_torch(make_checkpoint("stylegan2", {"g_ema": (StyleGAN2Generator(**SG), {"_target_": SG_TARGET, **SG})}),
                         d / "s.pt")
    ids = np.random.default_rng(0).integers(0, 5, (32, 64)).astype(np.uint8)
    Image.fromarray(ids).save(d / "label.png")
    Image.fromarray(ids).save(d / "label.jpg", quality=95)
    Image.fromarray((ids * 0 + 9).astype(np.uint8)).save(d / "badid.png")
    Image.fromarray(ids[:3, :5]).save(d / "tiny.png")
    Image.fromarray(np.zeros((48, 48, 3), np.uint8)).save(d / "photo.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (d / "bomb.png").write_bytes(_png_header_only(60000, 60000))
    big = np.zeros((120, 120), np.uint8)
    Image.fromarray(big).save(d / "big.png")  # over a lowered limits.max_image_pixels
    # corrupted checkpoints: a flipped byte inside a stored tensor (zip CRC), and changed content (recorded SHA-256)
    raw = bytearray(f["asap"].read_bytes())
    with zipfile.ZipFile(f["asap"]) as z:
        entry = max(z.infolist(), key=lambda i: i.compress_size)
        start = entry.header_offset + 30 + len(entry.filename.encode()) + len(entry.extra)
    raw[start + entry.compress_size // 2] ^= 0x10
    (d / "flipped.pt").write_bytes(bytes(raw))
    ck = torch.load(f["asap"], weights_only=True)
    sd = ck["networks"]["generator"]["state_dict"]
    key = next(k for k, v in sd.items() if v.is_floating_point())
    sd[key] = sd[key] + 1
    torch.save(ck, d / "tampered.pt")
    # crafted checkpoints in our own format
    for name, change in {"extra_key": {"bogus": 1}, "wrong_type": {"hr_width": "wide"},
                         "absurd": {"lr_width": 10 ** 6, "lr_max_width": 10 ** 6, "hr_width": 10 ** 5}}.items():
        crafted = make_checkpoint("asapnet", {"generator": (ASAPNetGenerator(**ASAP), {"_target_": ASAP_TARGET, **ASAP})})
        crafted["networks"]["generator"]["config"].update(change)
        crafted.pop("integrity")
        torch.save(crafted, d / f"crafted_{name}.pt")
    missing = make_checkpoint("asapnet", {"generator": (ASAPNetGenerator(**ASAP), {"_target_": ASAP_TARGET, **ASAP})})
    del missing["networks"]["generator"]["config"]["label_nc"]
    missing.pop("integrity")
    torch.save(missing, d / "crafted_missing_key.pt")
    (d / "a_file").write_text("not a folder")
    (d / "a_folder").mkdir()
    os.mkfifo(d / "a_pipe")
    bad_images = d / "bad_images"
    bad_images.mkdir()
    for i in range(3):
        (bad_images / f"x{i}.png").write_bytes(b"garbage")
    return f


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's calling card)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


# (tool, args with {placeholders}, the output path the case must leave unchanged, words the error must contain)
CASES = {
    # 1. silent wrong results
    "translate-flipped-ckpt": ("translate", ["{dir}/label.png", "checkpoint={dir}/flipped.pt", "out={dir}/o1"],
                               "{dir}/o1", ["flipped.pt", "corrupt"]),
    "translate-tampered-ckpt": ("translate", ["{dir}/label.png", "checkpoint={dir}/tampered.pt", "out={dir}/o2"],
                                "{dir}/o2", ["tampered.pt", "SHA-256"]),
    "generate-flipped-ckpt": ("generate", ["checkpoint={dir}/flipped.pt", "out={dir}/o3"], "{dir}/o3", ["corrupt"]),
    "translate-jpeg-label": ("translate", ["{dir}/label.jpg", "checkpoint={asap}", "out={dir}/o4"], "{dir}/o4",
                             ["label.jpg", "JPEG"]),
    "evaluate-unknown-split": ("evaluate", ["checkpoint={asap}", "split=holdout"], None, ["split", "val"]),
    # 2. errors while writing
    "translate-out-is-file": ("translate", ["{dir}/label.png", "checkpoint={asap}", "out={dir}/a_file"],
                              "{dir}/a_file", ["a_file", "not a folder"]),
    "translate-out-is-device": ("translate", ["{dir}/label.png", "checkpoint={asap}", "out=/dev/full"], "/dev/full",
                                ["/dev/full"]),
    "translate-out-unmakeable": ("translate", ["{dir}/label.png", "checkpoint={asap}", "out={dir}/a_file/sub"],
                                 "{dir}/a_file", ["a_file"]),
    "translate-native-bad-second": ("translate", ["{dir}/label.png", "{dir}/tiny.png", "checkpoint={asap}",
                                                  "resize=native", "out={dir}/o5"], "{dir}/o5", ["tiny.png"]),
    "translate-bad-id-second": ("translate", ["{dir}/label.png", "{dir}/badid.png", "checkpoint={asap}",
                                              "out={dir}/o6"], "{dir}/o6", ["badid.png", "9"]),
    "generate-out-is-device": ("generate", ["checkpoint={sg}", "out=/dev/full"], "/dev/full", ["/dev/full"]),
    "generate-out-is-file": ("generate", ["checkpoint={sg}", "out={dir}/a_file"], "{dir}/a_file", ["a_file"]),
    "project-out-is-file": ("project", ["{dir}/photo.png", "checkpoint={sg}", "steps=1", "lpips_pretrained=false",
                                        "out={dir}/a_file"], "{dir}/a_file", ["a_file"]),
    "export-out-is-pipe": ("export", ["checkpoint={asap}", "out={dir}/a_pipe"], "{dir}/a_pipe", ["a_pipe"]),
    "export-out-is-folder": ("export", ["checkpoint={asap}", "out={dir}/a_folder"], "{dir}/a_folder", ["a_folder"]),
    "export-parity-fails": ("export", ["checkpoint={asap}", "out={dir}/o7.onnx", "tolerance=1e-30"],
                            "{dir}/o7.onnx", ["tolerance"]),
    "benchmark-out-is-folder": ("benchmark", ["models=[asapnet]", "res=[256x512]", "runs=1", "warmup=0",
                                              "out={dir}/a_folder"], "{dir}/a_folder", ["a_folder"]),
    # 3. unbounded inputs
    "translate-bomb": ("translate", ["{dir}/bomb.png", "checkpoint={asap}", "out={dir}/o8"], "{dir}/o8",
                       ["bomb.png", "limit", "limits.max_image_pixels"]),
    "project-bomb": ("project", ["{dir}/bomb.png", "checkpoint={sg}", "out={dir}/o9"], "{dir}/o9",
                     ["bomb.png", "limit"]),
    "translate-over-pixel-limit": ("translate", ["{dir}/big.png", "checkpoint={asap}", "out={dir}/o10",
                                                 "limits.max_image_pixels=10000"], "{dir}/o10", ["big.png", "10,000"]),
    "translate-corrupt-image": ("translate", ["{dir}/corrupt.png", "checkpoint={asap}", "out={dir}/o11"],
                                "{dir}/o11", ["corrupt.png"]),
    # 4. config values
    "train-max-steps-type": ("train", ["trainer.max_steps=abc", "hydra.run.dir={dir}/r1"], "{dir}/r1",
                             ["trainer.max_steps", "abc", "integer"]),
    "train-lr-type": ("train", ["model.optim.lr=abc", "hydra.run.dir={dir}/r2"], "{dir}/r2", ["model.optim.lr"]),
    "train-lr-negative": ("train", ["model.optim.lr=-0.1", "hydra.run.dir={dir}/r3"], "{dir}/r3",
                          ["model.optim.lr", "> 0"]),
    "train-batch-type": ("train", ["trainer.batch_size=abc", "hydra.run.dir={dir}/r4"], "{dir}/r4",
                         ["trainer.batch_size"]),
    "train-keep-last": ("train", ["trainer.keep_last=-1", "hydra.run.dir={dir}/r5"], "{dir}/r5",
                        ["trainer.keep_last", ">= 0"]),
    "train-model-data-mismatch": ("train", ["model=stylegan2", "data=cityscapes", "hydra.run.dir={dir}/r6"],
                                  "{dir}/r6", ["stylegan2", "cityscapes"]),
    "train-bool-type": ("train", ["trainer.progress=maybe", "hydra.run.dir={dir}/r7"], "{dir}/r7",
                        ["trainer.progress"]),
    "benchmark-res-zero": ("benchmark", ["res=[0x0]"], None, ["res"]),
    "benchmark-runs-zero": ("benchmark", ["runs=0"], None, ["runs", ">= 1"]),
    "benchmark-threads-zero": ("benchmark", ["threads=0"], None, ["threads"]),
    "export-size-bad": ("export", ["checkpoint={asap}", "size=7x9x3", "out={dir}/o12.onnx"], "{dir}/o12.onnx",
                        ["size"]),
    "generate-batch-type": ("generate", ["checkpoint={sg}", "batch_size=abc", "out={dir}/o13"], "{dir}/o13",
                            ["batch_size"]),
    "project-steps-zero": ("project", ["{dir}/photo.png", "checkpoint={sg}", "steps=0", "out={dir}/o14"],
                           "{dir}/o14", ["steps"]),
    "translate-limit-negative": ("translate", ["{dir}/label.png", "checkpoint={asap}", "out={dir}/o15",
                                               "limits.max_image_pixels=-5"], "{dir}/o15", ["limits.max_image_pixels"]),
    # 5. liveness
    "train-every-sample-bad": ("train", ["model=stylegan2", "data=images", "data.root={dir}/bad_images",
                                         "data.skip_bad=true", "data.image_size=16", "data.num_workers=0",
                                         "model.generator.channels=[32,32,16]", "model.generator.style_dim=32",
                                         "model.generator.n_mlp=2", "trainer.batch_size=2", "trainer.progress=false",
                                         "hydra.run.dir={dir}/r8"], "{dir}/r8/checkpoints", ["skip_bad", "unreadable"]),
    # 6. crafted checkpoints in our own format
    "translate-crafted-extra-key": ("translate", ["{dir}/label.png", "checkpoint={dir}/crafted_extra_key.pt",
                                                  "out={dir}/o16"], "{dir}/o16", ["bogus"]),
    "translate-crafted-missing-key": ("translate", ["{dir}/label.png", "checkpoint={dir}/crafted_missing_key.pt",
                                                    "out={dir}/o17"], "{dir}/o17", ["crafted_missing_key.pt", "label_nc"]),
    "translate-crafted-wrong-type": ("translate", ["{dir}/label.png", "checkpoint={dir}/crafted_wrong_type.pt",
                                                   "out={dir}/o18"], "{dir}/o18", ["crafted_wrong_type.pt"]),
    "export-crafted-absurd": ("export", ["checkpoint={dir}/crafted_absurd.pt", "out={dir}/o19.onnx"],
                              "{dir}/o19.onnx", ["parameters", "limits.max_parameters"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_failure_is_one_line_and_writes_nothing(case, files):
    tool, args, out, needles = CASES[case]
    fmt = {k: str(v) for k, v in files.items()}
    args = [a.format(**fmt) for a in args]
    out_path = Path(out.format(**fmt)) if out else None
    before = snapshot(out_path) if out_path else None
    r = run_tool(tool, *args, cwd=files["dir"])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip() and not ln.startswith("[")]
    assert r.returncode != 0, f"{case}: exit 0\n{r.stdout}\n{r.stderr}"
    assert "Traceback" not in r.stderr, f"{case}: traceback\n{r.stderr}"
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and len(lines) <= MAX_LINES, f"{case}: not one clean line\n{r.stderr}"
    for word in needles:
        assert word in errors[0], f"{case}: {word!r} not in {errors[0]!r}"
    if out_path is not None:
        assert snapshot(out_path) == before, f"{case}: {out_path} was changed"


def test_full_disk_mid_batch_leaves_nothing(files, tmp_path, monkeypatch):
    """A write that fails on the second image (ENOSPC) leaves neither image, nor the folder it made."""
    import errno

    from asap.inference.generate import write_images
    from asap.errors import AsapError

    calls = {"n": 0}
    real_save = Image.Image.save

    def failing_save(self, fp, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *a, **k)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    out = tmp_path / "new" / "images"
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(AsapError, match="No space left on device"):
        write_images(images, [0, 1, 2], out)
    assert not (tmp_path / "new").exists()


def test_output_writes_keep_umask_permissions(tmp_path):
    from asap.utils.io import save_png

    path = save_png(np.zeros((4, 4), np.uint8), tmp_path / "x.png")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_good_inputs_still_work(files, tmp_path):
    """The same tools on the good files succeed (the catalogue fails for the right reason)."""
    r = run_tool("translate", str(files["dir"] / "label.png"), f"checkpoint={files['asap']}", f"out={tmp_path / 't'}",
                 cwd=files["dir"])
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t" / "label.png").is_file()
