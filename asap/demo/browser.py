"""Driving the demo page in headless Chromium (Playwright): the browser test and ``tools/demo.py measure=N``.

Chromium comes from the system's packages (Debian: ``apt-get install chromium``); Playwright drives that binary
through ``executable_path``, so no browser download is needed.
"""
from __future__ import annotations

import os
import shutil
import statistics
from pathlib import Path
from typing import Any, Sequence

from asap.errors import AsapError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium", "/usr/lib/chromium/chromium")


def find_chromium() -> str | None:
    """The Chromium binary: $ASAP_CHROMIUM, else the first of the usual names found; None when there is none."""
    wanted = os.environ.get("ASAP_CHROMIUM")
    if wanted:
        return wanted if Path(wanted).is_file() else None
    for name in CANDIDATES:
        found = shutil.which(name) if "/" not in name else (name if Path(name).is_file() else None)
        if found:
            return found
    return None


def wait_for_photo(page: Any, timeout_ms: float = 120_000) -> None:
    """Wait until the photo of the newest request is on the page."""
    page.wait_for_function("() => window.asapDemo.ready && window.asapDemo.sent > 0 && "
                           "window.asapDemo.lastSeq === window.asapDemo.sent", timeout=timeout_ms)


def stroke(page: Any, points: Sequence[tuple[float, float]], canvas: str = "#label-canvas") -> None:
    """A mouse stroke through ``points`` given as fractions (x, y) of the canvas."""
    box = page.locator(canvas).bounding_box()
    xy = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()


def choose_class(page: Any, class_id: int) -> None:
    page.locator(f"#palette li[data-id='{class_id}']").click()


def measure(url: str, strokes: int = 20, executable: str | None = None, classes: Sequence[int] = (26, 24, 21)) -> dict:
    """Paint ``strokes`` strokes one after another (each waits for its photo); returns the per-stroke stroke-end-to-
    photo times and the server's generator/encode/total times (ms), measured in the page."""
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    if executable is None:
        raise AsapError("no Chromium found (apt-get install chromium, or set ASAP_CHROMIUM=/path/to/chromium)")
    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            wait_for_photo(page)
            for i in range(strokes):
                choose_class(page, classes[i % len(classes)])
                y = 0.3 + 0.5 * ((i * 7) % 10) / 10
                stroke(page, [(0.1 + 0.03 * (i % 5), y), (0.5, y + 0.05), (0.8, y)])
                wait_for_photo(page)
                stats = page.evaluate("() => ({latency: window.asapDemo.lastLatencyMs, ...window.asapDemo.lastServer})")
                rows.append(stats)
        finally:
            browser.close()
    return {key: [r.get(key, 0.0) for r in rows] for key in ("latency", "generator", "encode", "queue", "total")}


def summary(times: dict) -> str:
    """Median (and spread) of the measured times, and the overhead over the generator alone."""
    def med(values: list[float]) -> str:
        q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        return f"{statistics.median(values):.0f} ms (quartiles {q[0]:.0f}-{q[2]:.0f})"
    overhead = [lat - gen for lat, gen in zip(times["latency"], times["generator"])]
    return (f"{len(times['latency'])} strokes: stroke end -> photo on the page {med(times['latency'])}; "
            f"generator {med(times['generator'])}; PNG encode {med(times['encode'])}; "
            f"overhead over the generator {med(overhead)}")
