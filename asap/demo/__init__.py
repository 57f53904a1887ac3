"""Live demo in the browser: paint a label map and see the photo (ASAPNet/SPADE), or sample and edit (StyleGAN-type).

``tools/demo.py`` loads a checkpoint, picks the mode with :func:`make_engine`, and serves :func:`asap.demo.app.create_app`
on localhost. Model work runs on one thread (:mod:`asap.demo.worker`) with newest-wins coalescing.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

from asap.data.preprocess import SemanticSpec


def make_engine(model: nn.Module, device: torch.device, options: Mapping[str, Any], source: str = "checkpoint",
                note: Callable[[str], None] = print) -> Any:
    """A PaintEngine for label-to-image generators, a SampleEngine for StyleGAN-type ones (else one-line error)."""
    if isinstance(getattr(model, "spec", None), SemanticSpec):
        from .paint import paint_engine_for
        return paint_engine_for(model, device, options.get("labels", "auto"), options.get("size", (256, 512)),
                                source, note)
    from .sample import SampleEngine, check_protocol, load_directions
    check_protocol(model, source)
    directions = None
    if options.get("directions"):
        w_dim = int(getattr(model, "w_dim", model.w_avg.numel()))
        directions = load_directions(options["directions"], w_dim)
    return SampleEngine(model, device, directions, edit_layers=int(options.get("edit_layers", 12)),
                        edit_scale=float(options.get("edit_scale", 0.6)),
                        preview_ratio=float(options.get("preview_ratio", 0.5)), source=source, note=note)
