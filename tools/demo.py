#!/usr/bin/env python
"""Live demo in the browser: paint a label map and watch the photo (ASAPNet/SPADE), or sample and edit (StyleGAN)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/demo.py checkpoint=PATH [+official.preset=cityscapes] [port=7860] [key=value ...]

Starts a local web server and prints the address to open. The page depends on the checkpoint:
  paint  (ASAPNet/SPADE): draw a label map in the dataset's colours (palette with class names, brush size, fill, undo,
         eraser to a chosen class, instance strokes), upload a label/instance PNG, download label, instance and
         photo; the photo updates after every stroke and the page shows the times. Strokes that arrive while the
         generator runs are coalesced: only the newest map is computed.
  sample (StyleGAN-type generators): seed, truncation, style mixing, direction sliders (directions=FILE) and, for
         generators with sub-generators (Anycost), a fast preview while a slider moves and the full image when it
         stops, both timed.
A downloaded label map (and instance map) translated with tools/translate.py gives the downloaded photo.

Keys (conf/demo.yaml):
  checkpoint=PATH     our checkpoint or an official file (ASAPNet/SPADE *_net_G.pth, rosinality stylegan2 .pt)
  family=NAME         official format (default: detected from the file's keys)
  +official.K=V       official options by their official names, as for tools/translate.py, e.g.
                      +official.preset=cityscapes|facades|facades512|ade20k or +official.label_nc=35
  labels=MODE         paint: auto | ids | cityscapes | ade20k | facades (palette, class names, ids of files)
  size=[H,W]          paint: canvas size for a model that records none (default [256,512])
  directions=FILE     sample: named w-space directions (dict name -> [1, w_dim] tensor), one slider each
  edit_layers=N edit_scale=X preview_ratio=R   sample: edit the first N W+ entries by slider*X; preview ratio
  host=127.0.0.1 port=7860   where to listen (port=0: any free port); another host needs allow_remote=true
  max_upload_bytes=N  largest uploaded file (default 16 MiB); limits.max_image_pixels=N its pixels (default 4096^2)
  device=auto|cpu|cuda|cuda:N   log_level=info|warning|debug
  measure=N           paint mode: instead of serving, paint N strokes in headless Chromium (the system's chromium,
                      or ASAP_CHROMIUM=PATH) and print the stroke-end-to-photo time and the generator's share

A bad checkpoint, option or address prints one line and exits with code 2; bad uploads are refused on the page.
"""


def run(cfg, positional):
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.demo import make_engine
    from asap.demo.app import create_app
    from asap.demo.server import bind, serve, url_of
    from asap.errors import AsapError
    from asap.utils.device import resolve_device

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r} (use checkpoint=PATH)")
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        raise AsapError("checkpoint=PATH is required")
    sock = bind(cfg.host, int(cfg.port), bool(cfg.allow_remote))  # before loading: a taken port fails at once
    try:
        device = resolve_device(cfg.device)
        official = OmegaConf.to_container(cfg.official, resolve=True) or {}
        model = asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official)
        size = cfg.size if OmegaConf.is_list(cfg.size) else [cfg.size, cfg.size]
        options = {"labels": cfg.labels, "size": [int(v) for v in size], "directions": cfg.directions,
                   "edit_layers": cfg.edit_layers, "edit_scale": cfg.edit_scale, "preview_ratio": cfg.preview_ratio}
        engine = make_engine(model, device, options, source=str(cfg.checkpoint),
                             note=lambda m: print(m, file=sys.stderr))
        app = create_app(engine, max_upload_bytes=int(cfg.max_upload_bytes))
    except BaseException:
        sock.close()
        raise
    if int(cfg.measure) > 0:
        return measure(app, sock, engine, int(cfg.measure))
    print(f"asap demo ({engine.mode} mode, {type(model).__name__} on {device}): open {url_of(sock)} in a browser "
          f"(Ctrl-C stops it)", flush=True)
    serve(app, sock, log_level=str(cfg.log_level))
    return 0


def measure(app, sock, engine, strokes: int) -> int:
    """Serve in the background, paint ``strokes`` strokes in headless Chromium, print the stroke-to-photo times."""
    from asap.demo.browser import measure as paint_and_time, summary
    from asap.demo.server import running
    from asap.errors import AsapError

    if engine.mode != "paint":
        raise AsapError("measure=N times painting: it needs a label-to-image checkpoint")
    host, port = sock.getsockname()[:2]
    sock.close()
    with running(app, host, port) as url:
        print(f"measuring {strokes} strokes on {engine.width}x{engine.height} in headless Chromium at {url}", flush=True)
        times = paint_and_time(url, strokes)
    print(summary(times))
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("demo", run, HELP))
