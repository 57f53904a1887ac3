"""Reliability pieces in process: run-folder locks, checkpoint integrity, config checks, image limits."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from asap.config_check import check_rules, validate
from asap.cli import CONF_DIR, compose
from asap.errors import AsapError
from asap.pretrained.common import content_digest, read_file, seal
from asap.training.lock import is_locked_by_other, lock_run_dir, release_run_dir
from tests.conftest import REPO

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from asap.training.lock import lock_run_dir
lock_run_dir({run!r})
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_elsewhere(tmp_path):
    """A run folder whose lock another live process holds."""
    run = tmp_path / "outputs" / "day" / "busy"
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), run=str(run))], stdout=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        yield run
    finally:
        p.kill()
        p.wait()


def test_second_process_is_refused_and_lock_is_released_on_exit(held_elsewhere):
    assert is_locked_by_other(held_elsewhere)
    with pytest.raises(AsapError, match=r"another training run \(pid \d+\) is using this run folder"):
        lock_run_dir(held_elsewhere)


def test_lock_is_free_after_release(tmp_path):
    run = tmp_path / "run"
    assert lock_run_dir(run) == run.resolve()
    assert lock_run_dir(run) is None          # already held by this process
    assert not is_locked_by_other(run)        # our own lock is not "another" run
    release_run_dir(run)
    assert lock_run_dir(run) == run.resolve()
    release_run_dir(run)


def test_resume_auto_skips_a_run_in_progress(held_elsewhere, tmp_path, caplog):
    """An unfinished compatible run that another process is training is not taken over by resume=auto."""
    import logging

    from tests.test_phases import ToyGAN, _trainer

    outputs = tmp_path / "outputs"
    # write a resumable checkpoint into the busy folder without taking its lock: copy one from a free run
    free = _trainer(outputs, ToyGAN(), "day/free", max_steps=20, stop_after=2, ckpt_every=1)
    free.fit()
    (held_elsewhere / "checkpoints").mkdir(parents=True, exist_ok=True)
    newest = sorted((outputs / "day/free/checkpoints").glob("step_*.pt"))[-1]
    (held_elsewhere / "checkpoints" / newest.name).write_bytes(newest.read_bytes())
    time.sleep(0.02)
    with caplog.at_level(logging.INFO, logger="asap.train"):
        tr = _trainer(outputs, ToyGAN(), "day2/new", max_steps=4, resume="auto", outputs_root=outputs)
        tr.fit()
    assert "in use by a running training process" in caplog.text
    assert tr.run_dir == outputs / "day/free"


def test_content_digest_survives_save_and_load_and_catches_changes(tmp_path):
    ckpt = seal({"format": "asap", "step": 3, "networks": {"g": {"state_dict": {"w": torch.arange(6.).view(2, 3),
                                                                              "b": torch.tensor(1, dtype=torch.int64)},
                                                                  "config": {"width": 4, "names": ("a", "b")}}}})
    path = tmp_path / "c.pt"
    torch.save(ckpt, path)
    loaded = read_file(path)
    assert loaded["integrity"]["sha256"] == content_digest(loaded) == ckpt["integrity"]["sha256"]
    loaded["networks"]["g"]["state_dict"]["w"][0, 0] = 0.5
    torch.save(loaded, path)
    with pytest.raises(AsapError, match="c.pt: corrupt checkpoint"):
        read_file(path)
    # the dtype is part of the content: the same bytes as another dtype are a different checkpoint
    assert content_digest({"t": torch.zeros(2, dtype=torch.int32)}) != content_digest({"t": torch.zeros(2)})


@pytest.mark.parametrize("override, message", [
    ("model.loss.lambda_feat=abc", "model.loss.lambda_feat='abc': must be a number >= 0"),
    ("trainer.seed=1.5", "trainer.seed=1.5: must be an integer >= 0"),
    ("model.generator.hr_width=abc", "model.generator.hr_width=abc: expected an integer (default"),
    ("model.generator.hr_width=2.5", "model.generator.hr_width=2.5: expected an integer (default"),
    ("model.discriminator.ndf=true", "model.discriminator.ndf=true: expected an integer (default"),
    ("trainer.ckpt_every=0", "trainer.ckpt_every=0: must be an integer >= 1"),
    ("model.optim.beta2=1.5", "model.optim.beta2=1.5: must be a number in [0, 1)"),
    ("trainer.precision=fp8", "trainer.precision='fp8': must be 32, bf16 or 16-mixed"),
    ("data.batch_size=0", "must be an integer >= 1"),
])
def test_train_config_errors_name_key_value_and_range(override, message):
    cfg = compose("train", [override])
    with pytest.raises(AsapError) as e:
        validate("train", cfg, [override], CONF_DIR)
    assert message in str(e.value)


def test_good_configs_pass_and_yaml_values_are_checked_too():
    for overrides in ([], ["model=stylegan2", "data=synthetic_images"], ["model=spade"], ["trainer.max_time=00:10:00"]):
        validate("train", compose("train", overrides), overrides, CONF_DIR)
    cfg = compose("train", [])
    cfg.trainer.keep_last = -2  # as if a preset file said so
    with pytest.raises(AsapError, match="trainer.keep_last=-2"):
        check_rules(cfg, "train")


def test_image_limits_from_config(tmp_path, monkeypatch):
    from asap.data.labels import read_label_ids
    from asap.utils import limits

    monkeypatch.delenv(limits.ENV["max_image_pixels"], raising=False)
    path = tmp_path / "l.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    assert read_label_ids(path).shape == (40, 50)
    limits.apply({"max_image_pixels": 1999})
    try:
        with pytest.raises(AsapError, match=r"50x40 = 2,000 pixels, over the limit of 1,999 "
                                            r"\(raise it with limits.max_image_pixels=N\)"):
            read_label_ids(path)
        with pytest.raises(AsapError, match="must be a positive integer"):
            limits.apply({"max_image_pixels": 0})
    finally:
        monkeypatch.delenv(limits.ENV["max_image_pixels"], raising=False)


def test_palette_png_whose_colours_disagree_is_read_by_index_with_a_warning(tmp_path):
    from asap.data.labels import read_label_ids
    from asap.data.palettes import get_palette

    ids = np.array([[7, 7, 26], [26, 7, 7]], np.uint8)
    good = Image.fromarray(ids, mode="P")
    good.putpalette(get_palette("cityscapes").reshape(-1).tolist())
    good.save(tmp_path / "good.png")
    bad = Image.fromarray(ids, mode="P")
    shuffled = get_palette("cityscapes")[::-1].copy()
    bad.putpalette(shuffled.reshape(-1).tolist())
    bad.save(tmp_path / "bad.png")
    said = []
    assert (read_label_ids(tmp_path / "good.png", "cityscapes", warn=said.append) == ids).all() and not said
    assert (read_label_ids(tmp_path / "bad.png", "cityscapes", warn=said.append) == ids).all()
    assert len(said) == 1 and "colours disagree with the cityscapes palette" in said[0]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder that refuses new files)")
def test_output_checks_try_the_folder_not_only_its_permission_bits(tmp_path):
    """os.access says yes to root anywhere and to /proc; the up-front check makes (and removes) a file to know."""
    from asap.utils.io import check_output_dir, check_outputs

    with pytest.raises(AsapError, match=r"^/proc: the output folder is not writable$"):
        check_outputs(["/proc/stats.npz"])
    with pytest.raises(AsapError, match=r"cannot create the output folder: /proc is not writable"):
        check_output_dir("/proc/new/folder")
    check_outputs([tmp_path / "a.png", tmp_path / "new" / "b.png"])  # a writable folder passes, nothing is left
    assert list(tmp_path.iterdir()) == []


def test_evaluate_checks_save_stats_before_scoring_the_real_images(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "tools" / "evaluate.py"), f"real={tmp_path / 'no_such_folder'}",
                        "save_stats=/proc/stats.npz"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: /proc: the output folder is not writable"]
