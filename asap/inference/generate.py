"""Seeds -> latents -> images with a StyleGAN-type generator: the engine behind tools/generate.py.

A seed fully determines its image: z is drawn on the CPU from ``torch.Generator().manual_seed(seed)`` (and, with
``noise_mode='random'``, the noise maps right after it from the same generator), so an image does not depend on
the batch it was rendered in, nor on the device (up to floating-point differences of the device).
"""
from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.nn.stylegan import NOISE_MODES
from asap.utils.io import atomic_files, save_png

_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def parse_seeds(spec: Any) -> list[int]:
    """Seeds from config: an int, a list of ints, or a string of ints and ranges ('0-7', '1,4,10-12').

    Ranges include both ends. Repeated seeds are kept once (first occurrence order)."""
    def bad(why: str) -> AsapError:
        return AsapError(f"seeds={spec!r}: {why} (use seeds=[0,1,2], seeds=5 or seeds=0-7)")

    items: list[Any]
    if isinstance(spec, bool) or spec is None:
        raise bad("expected seed numbers")
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [p for p in re.split(r"[,\s]+", spec.strip().strip("[]")) if p]
    elif isinstance(spec, Iterable):
        items = list(spec)
    else:
        raise bad("expected seed numbers")
    seeds: list[int] = []
    for item in items:
        if isinstance(item, bool):
            raise bad(f"{item!r} is not a seed")
        if isinstance(item, int):
            seeds.append(item)
            continue
        if isinstance(item, float) and item.is_integer():
            seeds.append(int(item))
            continue
        text = str(item).strip()
        m = _RANGE.match(text)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise bad(f"range {text} ends before it starts")
            if hi - lo >= 1_000_000:
                raise bad(f"range {text} is too long")
            seeds.extend(range(lo, hi + 1))
        elif text.isdigit():
            seeds.append(int(text))
        else:
            raise bad(f"{text!r} is not a seed or a range like 0-7")
    if not seeds:
        raise bad("no seeds given")
    for s in seeds:
        if not 0 <= s < 2 ** 63:
            raise bad(f"seed {s} is out of range (0 .. 2**63-1)")
    return list(dict.fromkeys(seeds))


def check_stylegan(model: nn.Module, source: str | Path = "checkpoint") -> nn.Module:
    """A StyleGAN-type generator has a mapping and a synthesis network; anything else is a clear error."""
    if not (isinstance(getattr(model, "mapping", None), nn.Module)
            and isinstance(getattr(model, "synthesis", None), nn.Module)):
        raise AsapError(f"{source}: holds a {type(model).__name__}, not a StyleGAN-type generator "
                        f"(it needs a mapping and a synthesis network)")
    return model


def parse_psi(value: Any) -> float:
    if isinstance(value, bool):
        raise AsapError(f"truncation_psi={value!r} is not a number")
    try:
        psi = float(value)
    except (TypeError, ValueError):
        raise AsapError(f"truncation_psi={value!r} is not a number") from None
    if not math.isfinite(psi):
        raise AsapError(f"truncation_psi={value!r} must be finite")
    return psi


def check_options(truncation_psi: Any, noise_mode: str, batch_size: Any) -> tuple[float, int]:
    """Validate the sampling options (before any checkpoint is read); returns (psi, batch_size)."""
    psi = parse_psi(truncation_psi)
    if noise_mode not in NOISE_MODES:
        raise AsapError(f"noise_mode={noise_mode!r} must be one of {', '.join(NOISE_MODES)}")
    try:
        batch = int(batch_size)
    except (TypeError, ValueError):
        raise AsapError(f"batch_size={batch_size!r} is not an integer") from None
    if batch < 1:
        raise AsapError(f"batch_size must be >= 1, got {batch}")
    return psi, batch


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] in [-1, 1] -> uint8 of the same shape: (x + 1) * 127.5, clamped to [0, 255], rounded."""
    return ((images.detach().float() + 1) * 127.5).clamp(0, 255).round().to(torch.uint8)


def hwc(image: torch.Tensor) -> np.ndarray:
    """uint8 [3, H, W] tensor -> HxWx3 numpy array for save_png."""
    return np.ascontiguousarray(image.cpu().permute(1, 2, 0).numpy())


def seed_inputs(G: nn.Module, seed: int, noise_mode: str) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """z [1, z_dim] for ``seed`` and, for noise_mode='random', its noise maps (CPU, drawn after z)."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, G.z_dim, generator=gen)
    noise = None
    if noise_mode == "random":
        noise = [torch.randn(*shape, generator=gen) for shape in G.synthesis.noise_shapes()]
    return z, noise


def ensure_w_avg(G: nn.Module, note: Callable[[str], None] | None = None) -> None:
    """Compute ``G.w_avg`` with ``G.mean_w()`` when the checkpoint does not carry it."""
    if not G.has_w_avg():
        if note is not None:
            note("note: the checkpoint carries no w_avg; computing it from 4096 seeded samples (G.mean_w())")
        G.mean_w()


@torch.inference_mode()
def generate(G: nn.Module, seeds: Sequence[int], truncation_psi: float = 1.0, noise_mode: str = "const",
             device: torch.device | str = "cpu", batch_size: int = 8,
             note: Callable[[str], None] | None = None) -> tuple[torch.Tensor, float]:
    """Render one image per seed; returns (uint8 [N, 3, H, W] on the CPU, images/s of the generator).

    ``truncation_psi`` pulls w towards ``G.w_avg`` (computed with ``G.mean_w()`` if unknown and psi != 1);
    ``noise_mode``: const (the stored noise maps), random (per-seed noise maps) or none."""
    check_stylegan(G, type(G).__name__)
    truncation_psi, batch_size = check_options(truncation_psi, noise_mode, batch_size)
    device = torch.device(device)
    G = G.to(device).eval()
    if truncation_psi != 1:
        ensure_w_avg(G, note)
    out, busy = [], 0.0
    for start in range(0, len(seeds), batch_size):
        chunk = seeds[start:start + batch_size]
        inputs = [seed_inputs(G, s, noise_mode) for s in chunk]
        t0 = time.perf_counter()
        z = torch.cat([zi for zi, _ in inputs]).to(device)
        noise = None
        if noise_mode == "random":
            noise = [torch.cat([n[i] for _, n in inputs]).to(device) for i in range(G.synthesis.num_noise)]
        w = G.truncate(G.mapping(z), truncation_psi)
        img = G.synthesis(G.broadcast(w), noise=noise, noise_mode=noise_mode)
        img = to_uint8(img)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        busy += time.perf_counter() - t0
        out.append(img.cpu())
    return torch.cat(out), (len(seeds) / busy if busy > 0 else float("inf"))


def make_grid(images: torch.Tensor, nrow: int | None = None) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> one uint8 [3, H', W'] grid (torchvision make_grid, about square, 2 px padding)."""
    from torchvision.utils import make_grid as tv_make_grid

    n = images.shape[0]
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    return tv_make_grid(images, nrow=nrow, padding=2, pad_value=0)


def write_images(images: torch.Tensor, seeds: Sequence[int], out_dir: str | Path, grid: bool = True) -> list[Path]:
    """``<out_dir>/seed%04d.png`` for each image (+ ``grid.png``), each written atomically."""
    out_dir = Path(out_dir)
    with atomic_files() as files:  # all images appear together, or none (full disk, unwritable folder)
        written = [save_png(hwc(img), out_dir / f"seed{int(s):04d}.png", files) for s, img in zip(seeds, images)]
        if grid:
            written.append(save_png(hwc(make_grid(images)), out_dir / "grid.png", files))
    return written


def output_names(seeds: Sequence[int], out_dir: str | Path, grid: bool = True) -> list[Path]:
    """The files :func:`write_images` will write (checked before any work is done)."""
    out_dir = Path(out_dir)
    return [out_dir / f"seed{int(s):04d}.png" for s in seeds] + ([out_dir / "grid.png"] if grid else [])
