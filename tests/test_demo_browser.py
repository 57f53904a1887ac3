"""The demo page in headless Chromium (Playwright + the system's Chromium): paint, photo = translate.py, bad upload."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from asap.demo.app import create_app
from asap.demo.browser import choose_class, find_chromium, stroke, wait_for_photo
from asap.demo.paint import PaintEngine
from asap.demo.server import running
from asap.models.asapnet import ASAPNetGenerator
from asap.pretrained import load
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_torch
from tests.conftest import REPO

TINY = dict(label_nc=35, instance_edge=True, lr_instance=True, downsampling=8, learned_ds_factor=4, lr_width=4,
            lr_max_width=8, lr_depth=1, hr_width=8, hr_depth=2, image_size=[64, 128])


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[dev])")
    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium binary found (apt-get install chromium, or set ASAP_CHROMIUM=/path/to/chromium)")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, headless=True)
        except Exception as e:  # a browser that cannot start here: say why
            pytest.skip(f"Chromium at {executable} could not be started: {str(e).strip().splitlines()[0]}")
        yield b
        b.close()


def download(page, button: str, path):
    with page.expect_download() as info:
        page.click(button)
    info.value.save_as(path)
    return path


def read(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im)


def test_paint_in_chromium_gives_translate_photo_and_bad_upload_message(browser, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny_city.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (ASAPNetGenerator(**TINY), {
        "_target_": "asap.models.asapnet.ASAPNetGenerator", **TINY})}, step=0), ckpt)
    engine = PaintEngine(load(ckpt), "cpu", source=str(ckpt))
    with running(create_app(engine)) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        page.goto(url)
        wait_for_photo(page, 60_000)
        start = read(download(page, "#download-photo", tmp_path / "start.png"))
        choose_class(page, 26)   # car
        stroke(page, [(0.1, 0.6), (0.3, 0.65), (0.45, 0.7)])
        choose_class(page, 24)   # person
        stroke(page, [(0.6, 0.3), (0.65, 0.6), (0.7, 0.9)])
        wait_for_photo(page, 60_000)
        assert "stroke → photo" in page.inner_text("#timing")
        photo = read(download(page, "#download-photo", tmp_path / "photo.png"))
        label_path = download(page, "#download-label", tmp_path / "label.png")
        ids = read(label_path)
        assert set(np.unique(ids)) == {7, 23, 24, 26}   # sky, road and the two painted classes
        assert photo.shape == (64, 128, 3) and not np.array_equal(photo, start)
        r = subprocess.run([sys.executable, str(REPO / "tools" / "translate.py"), str(label_path), f"checkpoint={ckpt}",
                            f"out={tmp_path / 'translated'}"], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=str(REPO)))
        assert r.returncode == 0, r.stderr
        assert np.array_equal(read(tmp_path / "translated" / "label.png"), photo)

        page.set_input_files("#upload-label", files=[{"name": "broken.png", "mimeType": "image/png",
                                                      "buffer": b"\x89PNG\r\n\x1a\n this is not a PNG"}])
        page.wait_for_selector("#message:not([hidden])", timeout=30_000)
        assert page.inner_text("#message-text").startswith("broken.png: cannot read label map: unreadable or corrupt")
        page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        assert (tmp_path / "demo.png").stat().st_size > 10_000
        # the page still works after the refusal
        choose_class(page, 21)
        stroke(page, [(0.2, 0.2), (0.4, 0.25)])
        wait_for_photo(page, 60_000)
        page.close()


def test_sample_page_previews_with_the_sub_generator_and_finishes_full(browser, tmp_path):
    """Sample mode in Chromium: moving the truncation slider asks for sub-generator previews, releasing it for the
    full image; the shown image is generate()'s for the seed."""
    from asap.demo.sample import SampleEngine
    from asap.inference.generate import generate
    from tests.test_demo import TINY_SG, WithSubGenerator

    torch.manual_seed(0)
    G = WithSubGenerator(**TINY_SG).eval()
    engine = SampleEngine(G, "cpu", note=lambda m: None)
    with running(create_app(engine)) as url:
        page = browser.new_page(accept_downloads=True)
        page.goto(url)
        wait_for_photo(page, 60_000)
        assert G.used == []
        page.fill("#seed", "3")
        page.dispatch_event("#seed", "change")
        wait_for_photo(page, 60_000)
        expected = generate(G, [3], 0.7, "const", "cpu")[0][0].permute(1, 2, 0).numpy()
        assert np.array_equal(read(download(page, "#sample-download", tmp_path / "seed3.png")), expected)
        slider = page.locator("#psi").bounding_box()
        page.mouse.move(slider["x"] + slider["width"] * 0.47, slider["y"] + slider["height"] / 2)
        page.mouse.down()
        page.mouse.move(slider["x"] + slider["width"] * 0.9, slider["y"] + slider["height"] / 2, steps=5)
        wait_for_photo(page, 60_000)
        assert 0.5 in G.used and "preview (0.5×)" in page.inner_text("#sample-timing")
        page.mouse.up()
        wait_for_photo(page, 60_000)
        assert page.inner_text("#sample-caption") == "image" and "full " in page.inner_text("#sample-timing")
        page.close()
