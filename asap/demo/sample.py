"""Sample-and-edit mode: seed, truncation, style mixing and direction sliders for StyleGAN-type generators.

Written against a small generator protocol, so every family that offers it plugs in unchanged:

- ``G.z_dim``, ``G.mapping(z) -> w [B, w_dim]``, ``G.truncate(w, psi)``, ``G.w_avg``;
- ``G.num_ws`` and ``G.broadcast(w, w2=None, inject_index=None) -> W+ [B, num_ws, w_dim]`` (mixing from a layer on);
- ``G.synthesis(ws, noise_mode="const") -> image [B, 3, H, W]`` in [-1, 1];
- optional ``G.sub_generator(ratio=r)``: a context manager under which ``synthesis`` runs a thinner sub-generator
  (Anycost GAN); used for previews while a slider moves, only when the generator has it;
- optional ``G.sub_ratios`` (the ratios it offers; default 0.25, 0.5, 0.75) and ``G.directions`` (name -> w-space
  direction), besides a ``directions=FILE`` of the Anycost boundary format (name -> [1, w_dim] tensor).

A seed gives the image of ``tools/generate.py`` for that seed (z drawn by :func:`asap.inference.generate.seed_inputs`,
the same uint8 rounding). Edits add ``alpha * direction`` to the first ``edit_layers`` entries of W+ (the Anycost
demo edits 12 of 18), with ``alpha`` = slider value (-1..1) x ``edit_scale``.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.inference.generate import parse_psi, seed_inputs, to_uint8

from .paint import encode_png

PROTOCOL = ("z_dim", "mapping", "synthesis", "num_ws", "broadcast", "truncate", "w_avg")
DEFAULT_SUB_RATIOS = (0.25, 0.5, 0.75)
MAX_SEED = 2 ** 63 - 1
MAX_PSI = 2.0


def check_protocol(G: nn.Module, source: str = "checkpoint") -> nn.Module:
    """A generator the sample mode can drive; anything else is one line naming what is missing."""
    missing = [name for name in PROTOCOL if not hasattr(G, name)]
    if missing:
        raise AsapError(f"{source}: holds a {type(G).__name__}, which has no {', '.join(missing)}: neither a "
                        f"label-to-image generator (paint mode) nor a StyleGAN-type one (sample mode)")
    return G


def load_directions(path: str | Path, w_dim: int) -> dict[str, torch.Tensor]:
    """A direction file (Anycost boundary format: a dict name -> [1, w_dim] or [w_dim] tensor), read safely."""
    from asap.pretrained.common import read_file

    obj = read_file(path)
    if not isinstance(obj, Mapping) or not obj:
        raise AsapError(f"{path}: expected a dict of named direction tensors")
    out = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor) or value.numel() != w_dim:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise AsapError(f"{path}: direction {name!r} is {shape}, expected a tensor of {w_dim} values (w_dim)")
        out[name] = value.detach().float().reshape(w_dim)
    return out


class SampleEngine:
    """Renders seeds (+ truncation, mixing, edits) with one StyleGAN-type generator, on one thread."""

    channel = "sample"
    mode = "sample"

    def __init__(self, G: nn.Module, device: torch.device | str = "cpu", directions: Mapping[str, Any] | None = None,
                 edit_layers: int = 12, edit_scale: float = 0.6, preview_ratio: float = 0.5,
                 source: str = "checkpoint", note: Callable[[str], None] | None = None) -> None:
        self.G = check_protocol(G, source)
        self.device = torch.device(device)
        self.G = G.to(self.device).eval()
        self.source = str(source)
        if hasattr(G, "has_w_avg") and not G.has_w_avg() and hasattr(G, "mean_w"):
            if note is not None:
                note("note: the checkpoint carries no w_avg; computing it from 4096 seeded samples (for truncation)")
            with torch.no_grad():
                G.mean_w()
        self.w_dim = int(getattr(G, "w_dim", G.w_avg.numel()))
        found = dict(getattr(G, "directions", None) or {})
        found.update(directions or {})
        self.directions = {k: torch.as_tensor(v).float().reshape(self.w_dim).to(self.device) for k, v in found.items()}
        self.edit_layers = max(1, min(int(edit_layers), int(G.num_ws)))
        self.edit_scale = float(edit_scale)
        self.has_sub = callable(getattr(G, "sub_generator", None))
        self.sub_ratios = [float(r) for r in getattr(G, "sub_ratios", DEFAULT_SUB_RATIOS)] if self.has_sub else []
        self.preview_ratio = float(preview_ratio)

    def info(self) -> dict[str, Any]:
        size = getattr(self.G, "size", None)
        return {
            "mode": self.mode, "model": type(self.G).__name__, "source": Path(self.source).name, "size": size,
            "num_ws": int(self.G.num_ws), "directions": sorted(self.directions), "edit_layers": self.edit_layers,
            "edit_scale": self.edit_scale, "sub_ratios": self.sub_ratios,
            "preview_ratio": self.preview_ratio if self.has_sub else None, "device": str(self.device),
        }

    def parse(self, params: Any) -> dict[str, Any]:
        """Validate a request {seed, psi, mix_seed, mix_index, edits: {name: -1..1}, preview, ratio}: one-line errors."""
        if not isinstance(params, Mapping):
            raise AsapError("expected a JSON object of sampling options")
        unknown = sorted(set(params) - {"seed", "psi", "mix_seed", "mix_index", "edits", "preview", "ratio"})
        if unknown:
            raise AsapError(f"unknown option {unknown[0]!r}")

        def seed(key: str) -> int:
            value = params.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
                raise AsapError(f"{key}={value!r} must be an integer in 0..2**63-1")
            return value

        out: dict[str, Any] = {"seed": seed("seed"), "psi": parse_psi(params.get("psi", 1.0))}
        if abs(out["psi"]) > MAX_PSI:
            raise AsapError(f"psi={out['psi']} must be within -{MAX_PSI:g}..{MAX_PSI:g}")
        out["mix_seed"] = seed("mix_seed") if params.get("mix_seed") is not None else None
        out["mix_index"] = None
        if out["mix_seed"] is not None:
            index = params.get("mix_index")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 < index < self.G.num_ws:
                raise AsapError(f"mix_index={index!r} must be an integer in 1..{self.G.num_ws - 1}")
            out["mix_index"] = index
        edits = params.get("edits") or {}
        if not isinstance(edits, Mapping):
            raise AsapError("edits must be an object {direction: value}")
        out["edits"] = {}
        for name, value in edits.items():
            if name not in self.directions:
                raise AsapError(f"unknown direction {name!r} (known: {', '.join(sorted(self.directions)) or 'none'})")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or abs(value) > 1:
                raise AsapError(f"edit {name}={value!r} must be a number in -1..1")
            out["edits"][name] = float(value)
        out["preview"] = bool(params.get("preview", False))
        ratio = params.get("ratio", self.preview_ratio)
        if out["preview"] and self.has_sub:
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or float(ratio) not in self.sub_ratios:
                raise AsapError(f"ratio={ratio!r} is not a sub-generator of this model "
                                f"({', '.join(f'{r:g}' for r in self.sub_ratios)})")
        out["ratio"] = float(ratio) if out["preview"] and self.has_sub else 1.0
        return out

    @torch.inference_mode()
    def latents(self, opts: Mapping[str, Any]) -> torch.Tensor:
        """W+ of a request: the seed's w (truncated), mixed from ``mix_index`` on, plus the edits."""
        G = self.G
        z = seed_inputs(G, opts["seed"], "const")[0].to(self.device)
        w = G.truncate(G.mapping(z), opts["psi"])
        w2 = None
        if opts["mix_seed"] is not None:
            w2 = G.truncate(G.mapping(seed_inputs(G, opts["mix_seed"], "const")[0].to(self.device)), opts["psi"])
        ws = G.broadcast(w, w2, opts["mix_index"])
        if opts["edits"]:
            ws = ws.clone()
            for name, value in opts["edits"].items():
                ws[:, :self.edit_layers] += value * self.edit_scale * self.directions[name]
        return ws

    @torch.inference_mode()
    def render(self, opts: Mapping[str, Any]) -> tuple[bytes, dict[str, float]]:
        """A parsed request -> (PNG, seconds per stage); a preview runs the chosen sub-generator when there is one."""
        t0 = time.perf_counter()
        ws = self.latents(opts)
        context = self.G.sub_generator(ratio=opts["ratio"]) if opts["ratio"] < 1 and self.has_sub \
            else contextlib.nullcontext()
        with context:
            image = self.G.synthesis(ws, noise_mode="const")
        image = to_uint8(image[0])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t1 = time.perf_counter()
        png = encode_png(image.cpu().permute(1, 2, 0).numpy())
        return png, {"generator": t1 - t0, "encode": time.perf_counter() - t1}
