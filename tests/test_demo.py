"""The demo server without a browser: endpoints, the photo = translate/generate, coalescing, limits, bad uploads."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from asap.data.labels import get_convention
from asap.demo import make_engine
from asap.demo.app import create_app
from asap.demo.paint import FIRST_INSTANCE_ID, PaintEngine, file_ids
from asap.demo.sample import SampleEngine
from asap.demo.server import bind, running
from asap.demo.worker import ModelWorker, Superseded
from asap.errors import AsapError
from asap.inference.generate import generate
from asap.inference.translate import ids_from_file, prepare, translate
from asap.models.asapnet import ASAPNetGenerator
from asap.models.stylegan2 import StyleGAN2Generator
from asap.pretrained import load
from asap.pretrained.native import make_checkpoint
from asap.utils.io import save_torch
from tests.conftest import REPO, fixture_dir

H, W = 32, 64
TINY = dict(label_nc=35, instance_edge=True, lr_instance=True, downsampling=8, learned_ds_factor=4, lr_width=4,
            lr_max_width=8, lr_depth=1, hr_width=8, hr_depth=2, image_size=[H, W])
TINY_SG = dict(size=16, style_dim=32, n_mlp=2, channels=[32, 32, 16])


def tiny_asapnet(**over) -> ASAPNetGenerator:
    torch.manual_seed(0)
    return ASAPNetGenerator(**{**TINY, **over}).eval()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny_city.pt"
    save_torch(make_checkpoint("asapnet", {"generator": (tiny_asapnet(), {"_target_": "asap.models.asapnet."
                                                                          "ASAPNetGenerator", **TINY})}, step=0), path)
    return path


@pytest.fixture(scope="module")
def paint_server(ckpt):
    engine = PaintEngine(load(ckpt), "cpu", source=str(ckpt))
    app = create_app(engine, max_upload_bytes=200_000)
    with running(app) as url:
        yield url, engine, app


def call(url: str, data: bytes | None = None, method: str | None = None) -> tuple[int, Any, bytes]:
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"))
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def png_array(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im)


def png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def painted() -> tuple[np.ndarray, np.ndarray]:
    """Sky over road, a car stroke, and two touching person instances (instance ids from 1000 on)."""
    label = np.full((H, W), 7, np.uint16)
    label[:12] = 23
    label[14:22, 5:20] = 26
    inst = label.copy()
    label[16:30, 30:50] = 24
    inst[16:30, 30:40] = FIRST_INSTANCE_ID
    inst[16:30, 40:50] = FIRST_INSTANCE_ID + 1
    return label, inst


def body_of(label: np.ndarray, inst: np.ndarray | None = None) -> bytes:
    inst = label if inst is None else inst
    return label.astype("<u2").tobytes() + inst.astype("<u2").tobytes()


# ------------------------------------------------------------------------------------------------------- worker
def test_worker_runs_only_the_newest_waiting_request():
    worker = ModelWorker()
    gate, started, ran = threading.Event(), threading.Event(), []

    def slow():
        started.set()
        gate.wait(10)
        ran.append("first")
        return "first"
    first = worker.submit("paint", slow)
    assert started.wait(10)
    waiting = [worker.submit("paint", lambda i=i: ran.append(i) or i) for i in range(3)]
    other = worker.submit("sample", lambda: ran.append("sample") or "sample")   # another channel is not replaced
    gate.set()
    assert first.result(10) == "first"
    for f in waiting[:2]:
        with pytest.raises(Superseded):
            f.result(10)
    assert waiting[2].result(10) == 2 and other.result(10) == "sample"
    assert sorted(map(str, ran)) == ["2", "first", "sample"]
    assert worker.computed == 3 and worker.superseded == 2
    # an exception in one job reaches its caller; the worker goes on
    with pytest.raises(ZeroDivisionError):
        worker.submit("paint", lambda: 1 / 0).result(10)
    assert worker.submit("paint", lambda: 5).result(10) == 5
    worker.close()
    with pytest.raises(RuntimeError, match="closed"):
        worker.submit("paint", lambda: 0)


# ---------------------------------------------------------------------------------------------------- endpoints
def test_page_info_and_static_files(paint_server):
    url, engine, _ = paint_server
    status, _, page = call(url)
    assert status == 200 and b"asap demo" in page and b"/static/demo.js" in page
    for name in ("demo.js", "demo.css"):
        assert call(url + "static/" + name)[0] == 200
    status, _, raw = call(url + "api/info")
    info = json.loads(raw)
    assert (info["mode"], info["height"], info["width"], info["labels"]) == ("paint", H, W, "cityscapes")
    assert info["uses_instance"] and info["max_upload_bytes"] == 200_000 and info["source"] == "tiny_city.pt"
    classes = info["classes"]
    assert len(classes) == 35 and classes[26] == {"id": 26, "name": "car", "color": "#00008e"}
    assert classes[7]["name"] == "road" and classes[23]["color"] == "#4682b4"   # Cityscapes colours by id
    assert info["start"] == [[23, H // 2], [7, H - H // 2]] and info["brush_class"] == 26
    assert call(url + "api/sample", b"{}")[0] in (404, 405)   # paint mode has no sample endpoint


def test_painted_photo_equals_translate_of_the_downloaded_maps(paint_server, tmp_path):
    url, engine, _ = paint_server
    label, inst = painted()
    status, headers, photo = call(url + "api/paint", body_of(label, inst))
    assert status == 200 and headers["Content-Type"] == "image/png"
    stages = dict(p.strip().split(";dur=") for p in headers["Server-Timing"].split(","))
    assert set(stages) == {"queue", "generator", "encode", "total"} and float(stages["generator"]) > 0
    photo = png_array(photo)
    assert photo.shape == (H, W, 3) and photo.dtype == np.uint8 and photo.std() > 0
    # the downloads are files translate reads back to the same ids
    status, _, label_png = call(url + "api/label-file", body_of(label, inst))
    assert status == 200
    status, _, inst_png = call(url + "api/instance-file", body_of(label, inst))
    assert status == 200
    (tmp_path / "label.png").write_bytes(label_png)
    (tmp_path / "instance.png").write_bytes(inst_png)
    with Image.open(tmp_path / "label.png") as im:
        assert im.mode == "P" and tuple(im.getpalette()[26 * 3:27 * 3]) == (0, 0, 142)   # looks like Cityscapes
    model = load(engine.source)
    items = prepare([tmp_path / "label.png"], model, instance=tmp_path / "instance.png", warn=lambda m: None)
    assert np.array_equal(items[0].label, label) and np.array_equal(items[0].instance, inst)
    translate(model, items, tmp_path / "out", torch.device("cpu"))
    assert np.array_equal(png_array((tmp_path / "out" / "label.png").read_bytes()), photo)
    # instance strokes matter: the same labels without the instance split give another photo
    plain = png_array(call(url + "api/paint", body_of(label))[2])
    assert not np.array_equal(plain, photo)
    # ... and equal translate without an instance map (label map as instance map)
    items = prepare([tmp_path / "label.png"], model, warn=lambda m: None)
    translate(model, items, tmp_path / "plain", torch.device("cpu"))
    assert np.array_equal(png_array((tmp_path / "plain" / "label.png").read_bytes()), plain)


@pytest.mark.parametrize("labels,over", [("cityscapes", dict(label_nc=35, contain_dontcare_label=True)),
                                         ("ade20k", dict(label_nc=150, contain_dontcare_label=True)),
                                         ("facades", dict(label_nc=13)), ("ids", dict(label_nc=300))])
def test_label_file_reads_back_to_the_painted_ids(labels, over, tmp_path):
    engine = PaintEngine(tiny_asapnet(**over), "cpu", labels=labels)
    n = engine.spec.num_label_channels
    ids = np.random.default_rng(0).integers(0, n, (H, W))
    ids[0, :min(n, W)] = np.arange(min(n, W))
    if n > 255:   # file id 255 means dontcare in every convention: such a class cannot be written
        ids[ids == 255] = 0
        with pytest.raises(AsapError, match="class 255 cannot be saved: in label files id 255 means dontcare"):
            engine.label_file(np.full((H, W), 255))
    path = tmp_path / f"{labels}.png"
    path.write_bytes(engine.label_file(ids))
    assert np.array_equal(ids_from_file(path, engine.spec, labels), ids)
    conv = get_convention(labels)
    assert np.array_equal(conv.map_ids(file_ids(ids, conv, engine.spec.label_nc), engine.spec.label_nc), ids)
    if labels == "ade20k":
        assert engine.names[0] == "wall" and engine.names[149] == "flag" and engine.names[150] == "dontcare"
        assert engine.info()["classes"][0]["color"] == "#787878"


def test_bad_paint_requests_get_a_message_and_the_server_goes_on(paint_server):
    url, engine, _ = paint_server
    status, _, body = call(url + "api/paint", b"\x00" * 10)
    assert status == 400 and "expected 2 uint16 map(s) of 64x32" in error_of(body)
    label = np.zeros((H, W), np.uint16)
    label[3, 4] = 35
    status, _, body = call(url + "api/paint", body_of(label))
    assert status == 400 and error_of(body) == "label id 35 is outside 0..34 (label_nc=35)"
    status, _, body = call(url + "api/paint", b"\x00" * (5 * H * W))
    assert status == 413 and "over the limit" in error_of(body)
    assert call(url + "api/info")[0] == 200
    assert call(url + "api/paint", body_of(np.zeros((H, W))))[0] == 200


def test_uploads_are_bounded_and_bad_files_get_one_line(paint_server, monkeypatch):
    url, engine, _ = paint_server
    up = url + "api/upload?kind={}&name={}"
    cases = {
        "garbage.png": (b"not an image at all", "garbage.png: cannot read label map: unreadable or corrupt"),
        "empty.png": (b"", "empty.png: the file is empty"),
        "photo.jpg": (png_bytes(np.zeros((H, W, 3), np.uint8), "JPEG"), "photo.jpg: label map is a JPEG file"),
        "colours.png": (png_bytes(np.full((H, W, 3), (1, 2, 3), np.uint8)),
                        "colours.png: label map: colour (1, 2, 3) at pixel (x=0, y=0) is not in the cityscapes"),
        "ids.png": (png_bytes(np.full((H, W), 40, np.uint8)), "ids.png: label id 40 is outside 0..34"),
    }
    for name, (data, message) in cases.items():
        status, _, body = call(up.format("label", name), data)
        assert status == 400 and error_of(body).startswith(message), (name, error_of(body))
        assert "/tmp" not in error_of(body)   # the server's temporary path is not shown
    status, _, body = call(up.format("label", "big.png"), b"\x00" * 200_001)
    assert status == 413 and error_of(body) == "uploaded file has 200,001 bytes, over the limit of 200,000 bytes"
    status, _, body = call(up.format("label", "../../etc/x.png"), b"junk")
    assert status == 400 and error_of(body).startswith("x.png: cannot read label map")
    status, _, body = call(up.format("palette", "a.png"), png_bytes(np.zeros((H, W), np.uint8)))
    assert status == 400 and "unknown upload kind 'palette'" in error_of(body)
    monkeypatch.setenv("ASAP_MAX_IMAGE_PIXELS", "1000")   # the tools' pixel limit (limits.max_image_pixels)
    status, _, body = call(up.format("label", "wide.png"), png_bytes(np.zeros((H, W), np.uint8)))
    assert status == 400 and error_of(body) == ("wide.png: label map declares 2,048 pixels, over the limit of 1,000 "
                                                     "(raise it with limits.max_image_pixels=N)")
    monkeypatch.delenv("ASAP_MAX_IMAGE_PIXELS")
    # good uploads: ids of another size (nearest-resized to the canvas), colours, a 16-bit instance map
    ids = np.repeat(np.repeat(np.arange(8, dtype=np.uint8).reshape(2, 4) + 20, 16, 0), 16, 1)   # 32x64 -> 64x128
    ids = np.repeat(np.repeat(ids, 2, 0), 2, 1)
    status, headers, body = call(up.format("label", "ids.png"), png_bytes(ids))
    assert status == 200 and headers["X-Map-Size"] == f"{W}x{H}"
    got = np.frombuffer(body, "<u2").reshape(H, W)
    assert np.array_equal(got, ids[::2, ::2])
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:] = (70, 130, 180)   # sky
    colours[H // 2:] = (128, 64, 128)   # road
    status, _, body = call(up.format("label", "colours.png"), png_bytes(colours))
    assert status == 200 and set(np.unique(np.frombuffer(body, "<u2"))) == {7, 23}
    inst = np.full((H, W), 26001, np.uint16)
    inst[:, W // 2:] = 26002
    status, _, body = call(up.format("instance", "inst.png"), png_bytes(inst))
    assert status == 200 and np.array_equal(np.frombuffer(body, "<u2").reshape(H, W), inst)
    inst32 = np.full((H, W), 70000, np.int32)   # over uint16: renumbered, same edges
    inst32[:, :10] = 90000
    buf = io.BytesIO()
    Image.fromarray(inst32).save(buf, format="TIFF")
    status, _, body = call(up.format("instance", "inst32.tif"), buf.getvalue())
    got = np.frombuffer(body, "<u2").reshape(H, W)
    assert status == 200 and got[0, 0] != got[0, 20] and len(np.unique(got)) == 2
    assert call(url + "api/info")[0] == 200


def test_requests_arriving_during_a_render_are_coalesced(ckpt):
    """While one photo is computed, three more maps arrive: the first two are dropped (204), only the last runs."""
    class Gated(PaintEngine):
        calls: list = []
        gate, started = threading.Event(), threading.Event()

        def render(self, label, inst):
            self.calls.append(int(label[0, 0]))
            if len(self.calls) == 1:
                self.started.set()
                self.gate.wait(30)
            return super().render(label, inst)

    engine = Gated(load(ckpt), "cpu")
    app = create_app(engine)
    worker = app.state.worker
    with running(app) as url, ThreadPoolExecutor(4) as pool:
        def send(cls: int):
            return call(url + "api/paint", body_of(np.full((H, W), cls, np.uint16)))
        futures = [pool.submit(send, 1)]
        assert engine.started.wait(30)
        for i, cls in enumerate((2, 3, 4)):
            futures.append(pool.submit(send, cls))
            deadline = time.monotonic() + 30
            while worker.superseded < i or not worker._pending:   # this one is waiting before the next is sent
                assert time.monotonic() < deadline
                time.sleep(0.01)
        engine.gate.set()
        results = [f.result(60) for f in futures]
    assert [r[0] for r in results] == [200, 204, 204, 200]
    assert engine.calls == [1, 4] and worker.superseded == 2
    single = png_array(call_once(engine, 4))
    assert np.array_equal(png_array(results[3][2]), single)   # the newest map's photo


def call_once(engine: PaintEngine, cls: int) -> bytes:
    return PaintEngine.render(engine, np.full((H, W), cls, np.int64), None)[0]


# ---------------------------------------------------------------------------------------------------- sample mode
class WithSubGenerator(StyleGAN2Generator):
    """A StyleGAN2 generator with the optional sub-generator hook: at ratio r the output is scaled by r (a stand-in
    that makes the preview visibly different and records which ratios ran)."""

    sub_ratios = (0.25, 0.5)

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ratio, self.used = 1.0, []

    def sub_generator(self, ratio: float):
        import contextlib

        @contextlib.contextmanager
        def ctx():
            self.ratio = ratio
            self.used.append(ratio)
            try:
                yield self
            finally:
                self.ratio = 1.0
        return ctx()


def test_sample_mode_matches_generate_and_edits(tmp_path):
    torch.manual_seed(0)
    G = WithSubGenerator(**TINY_SG).eval()
    synthesis = G.synthesis.forward
    G.synthesis.forward = lambda ws, **kw: synthesis(ws, **kw) * G.ratio
    direction = torch.randn(1, 32)
    save_torch({"00_Smiling": direction, "01_Young": torch.randn(32)}, tmp_path / "dirs.pt")
    engine = make_engine(G, torch.device("cpu"), {"directions": str(tmp_path / "dirs.pt"), "edit_layers": 3},
                         note=lambda m: None)
    assert isinstance(engine, SampleEngine) and G.has_w_avg()   # w_avg computed at start for truncation
    with running(create_app(engine)) as url:
        info = json.loads(call(url + "api/info")[2])
        assert info["mode"] == "sample" and info["num_ws"] == G.num_ws and info["sub_ratios"] == [0.25, 0.5]
        assert info["directions"] == ["00_Smiling", "01_Young"] and info["edit_layers"] == 3

        def sample(**opts):
            status, headers, body = call(url + "api/sample", json.dumps(opts).encode())
            return status, (png_array(body) if status == 200 else error_of(body))
        status, img = sample(seed=3, psi=0.7)
        expected = generate(G, [3], 0.7, "const", "cpu")[0][0].permute(1, 2, 0).numpy()
        assert status == 200 and np.array_equal(img, expected)   # tools/generate.py's image of seed 3
        assert G.used == []
        _, mixed = sample(seed=3, psi=0.7, mix_seed=5, mix_index=2)
        _, edited = sample(seed=3, psi=0.7, edits={"00_Smiling": 1.0})
        _, preview = sample(seed=3, psi=0.7, edits={"00_Smiling": 1.0}, preview=True, ratio=0.25)
        assert not np.array_equal(mixed, img) and not np.array_equal(edited, img)
        assert G.used == [0.25] and not np.array_equal(preview, edited)
        ws = engine.latents(engine.parse({"seed": 3, "psi": 0.7, "edits": {"00_Smiling": 0.5}}))
        base = engine.latents(engine.parse({"seed": 3, "psi": 0.7}))
        diff = ws - base
        assert torch.allclose(diff[0, :3], (0.5 * 0.6 * direction).expand(3, -1), atol=1e-6)
        assert diff[0, 3:].abs().max() == 0
        for opts, message in [({"seed": -1}, "seed=-1 must be an integer in 0..2**63-1"),
                              ({"seed": 1, "psi": "x"}, "truncation_psi='x' is not a number"),
                              ({"seed": 1, "psi": 9}, "psi=9.0 must be within -2..2"),
                              ({"seed": 1, "mix_seed": 2, "mix_index": 99}, "mix_index=99 must be an integer in 1.."),
                              ({"seed": 1, "edits": {"Bald": 1}}, "unknown direction 'Bald'"),
                              ({"seed": 1, "edits": {"01_Young": 3}}, "edit 01_Young=3 must be a number in -1..1"),
                              ({"seed": 1, "preview": True, "ratio": 0.3}, "ratio=0.3 is not a sub-generator"),
                              ({"seed": 1, "colour": 1}, "unknown option 'colour'")]:
            status, text = sample(**opts)
            assert status == 400 and text.startswith(message), (opts, text)
        status, _, body = call(url + "api/sample", b"{not json")
        assert status == 400 and "not valid JSON" in error_of(body)
        assert sample(seed=0)[0] == 200


def test_spade_checkpoint_paints_like_translate(tmp_path):
    """A SPADE generator (facades-like: 13 classes, no instances) in paint mode: no instance map is sent, the canvas
    has the model's size and the photo equals translate's on the downloaded label file."""
    from asap.models.spade import SPADEGenerator

    torch.manual_seed(0)
    model = SPADEGenerator(label_nc=13, instance_edge=False, ngf=2, crop_size=64, aspect_ratio=2.0).eval()
    engine = make_engine(model, torch.device("cpu"), {"labels": "facades"})
    assert (engine.height, engine.width) == (32, 64) and not engine.info()["uses_instance"]
    assert engine.names[3] == "window" and engine.info()["brush_class"] == 3
    label = np.full((32, 64), 2, np.uint16)
    label[4:12, 8:20] = 3
    with running(create_app(engine)) as url:
        status, _, photo = call(url + "api/paint", label.astype("<u2").tobytes())
        assert status == 200
        status, _, body = call(url + "api/paint", body_of(label))   # two maps for a model without instances
        assert status == 400 and "expected 1 uint16 map(s) of 64x32" in error_of(body)
        (tmp_path / "facade.png").write_bytes(call(url + "api/label-file", label.astype("<u2").tobytes())[2])
    items = prepare([tmp_path / "facade.png"], model, labels="facades", warn=lambda m: None)
    translate(model, items, tmp_path / "out", torch.device("cpu"))
    assert np.array_equal(png_array((tmp_path / "out" / "facade.png").read_bytes()), png_array(photo))


def test_sample_mode_without_sub_generator_renders_previews_at_full_size(tmp_path):
    torch.manual_seed(0)
    G = StyleGAN2Generator(**TINY_SG).eval()
    engine = SampleEngine(G, "cpu")
    assert engine.info()["sub_ratios"] == [] and engine.info()["preview_ratio"] is None
    full = engine.render(engine.parse({"seed": 1}))[0]
    assert engine.render(engine.parse({"seed": 1, "preview": True, "ratio": 0.3}))[0] == full
    with pytest.raises(AsapError, match="neither a label-to-image generator"):
        make_engine(torch.nn.Linear(2, 2), torch.device("cpu"), {}, source="x.pt")
    from asap.demo.sample import load_directions
    save_torch({"00_A": torch.zeros(3)}, tmp_path / "dirs.pt")
    with pytest.raises(AsapError, match="direction '00_A' is \\(3,\\), expected a tensor of 32 values"):
        load_directions(tmp_path / "dirs.pt", 32)


# ------------------------------------------------------------------------------------------------------- the tool
def run_demo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "demo.py"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_tool_refuses_remote_hosts_taken_ports_and_bad_values(ckpt):
    r = run_demo(f"checkpoint={ckpt}", "host=0.0.0.0")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: host=0.0.0.0 would let other machines reach the demo; pass allow_remote=true to bind to anything "
        "but localhost (127.0.0.1, ::1)"]
    r = run_demo(f"checkpoint={ckpt}", "port=70000")
    assert r.returncode == 2 and "port=70000: must be an integer in 0..65535" in r.stderr
    taken = bind("127.0.0.1", 0)
    try:
        r = run_demo(f"checkpoint={ckpt}", f"port={taken.getsockname()[1]}")
        assert r.returncode == 2 and "cannot listen on 127.0.0.1:" in r.stderr and len(r.stderr.splitlines()) == 1
    finally:
        taken.close()
    r = run_demo("checkpoint=/nonexistent.pt", "port=0")
    assert r.returncode == 2 and r.stderr.strip() == "error: /nonexistent.pt: no such file"


def test_tool_serves_the_page_and_says_where(ckpt):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "demo.py"), f"checkpoint={ckpt}", "port=0",
                             "log_level=warning"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("asap demo (paint mode, ASAPNetGenerator on cpu): open http://127.0.0.1:"), line
        url = line.split("open ")[1].split()[0]
        status, _, raw = call(url + "api/info")
        assert status == 200 and json.loads(raw)["classes"][26]["name"] == "car"
    finally:
        proc.terminate()
        proc.wait(30)


def test_official_checkpoint_with_translate_options_renders_the_official_photo(tmp_path):
    """The official ASAPNet fixture, loaded with translate's +official.* options: its label and instance files
    uploaded through the page's endpoints give the official rendering (equal, or off by one as translate)."""
    d = fixture_dir("asapnet")
    meta = json.loads((d / "meta.json").read_text())
    model = load(d / "latest_net_G.pth", **meta["options"])
    engine = make_engine(model, torch.device("cpu"), {"labels": "auto"}, source=str(d / "latest_net_G.pth"))
    with running(create_app(engine)) as url:
        assert json.loads(call(url + "api/info")[2])["height"] == meta["height"]
        maps = []
        for kind, name in (("label", "label_0.png"), ("instance", "instance_0.png")):
            status, _, body = call(url + f"api/upload?kind={kind}&name={name}", (d / name).read_bytes())
            assert status == 200, body
            maps.append(body)
        status, _, photo = call(url + "api/paint", b"".join(maps))
    assert status == 200
    ours = png_array(photo).astype(int)
    ref = np.array(Image.open(d / "expected_0.png")).astype(int)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1
