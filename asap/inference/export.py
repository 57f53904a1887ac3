"""Export a generator to ONNX or TorchScript and check the export against PyTorch on the same input."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from asap.data.preprocess import semantic_input
from asap.errors import AsapError
from asap.utils.io import atomic_path


def example_input(model: nn.Module, size: Sequence[int] | None, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A realistic input for tracing: a random label/instance map through the model's preprocessing."""
    spec = getattr(model, "spec", None)
    if spec is None:
        raise AsapError(f"{type(model).__name__}: export supports label-to-image generators")
    if size is None:
        size = getattr(model, "image_size", None)
        if size is None:
            raise AsapError("the model records no image size; pass size=HxW")
    h, w = (int(v) for v in size)
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, spec.num_label_channels, (batch, 1, h, w), generator=g)
    inst = torch.randint(0, 4, (batch, 1, h, w), generator=g)
    return semantic_input(label, inst, spec)


def export(model: nn.Module, x: torch.Tensor, out: str | Path, fmt: str = "onnx", opset: int = 17,
           tolerance: float | None = None) -> tuple[Path, float | None]:
    """Write the traced model to ``out`` atomically (ONNX through the TorchScript-based exporter).

    The export is checked against PyTorch on ``x`` while it is still a temporary file: with ``tolerance`` set, a
    larger difference is a one-line error and ``out`` is left as it was. Returns ``(out, max abs difference or
    None when no runtime is installed)``.
    """
    model = model.eval()
    out = Path(out)
    if fmt not in ("onnx", "torchscript"):
        raise AsapError(f"format={fmt!r} must be onnx or torchscript")
    with atomic_path(out) as tmp:
        _write(model, x, tmp, fmt, opset)
        diff = max_difference(model, tmp, x, fmt)
        if tolerance is not None and diff is not None and not diff <= float(tolerance):
            raise AsapError(f"export differs from PyTorch by {diff:.3g} > tolerance {tolerance}; {out} not written")
    return out, diff


def _write(model: nn.Module, x: torch.Tensor, tmp: Path, fmt: str, opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset, input_names=["semantics"],
                              output_names=["image"], dynamic_axes={"semantics": {0: "batch"}, "image": {0: "batch"}})
        elif fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, (x,), check_trace=False)
            traced.save(str(tmp))


@torch.no_grad()
def max_difference(model: nn.Module, path: str | Path, x: torch.Tensor, fmt: str) -> float | None:
    """Max abs difference between the exported file's output and PyTorch's; None when no runtime is installed."""
    ref = model.eval()(x).float()
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {"semantics": x.numpy()})[0])
    else:
        got = torch.jit.load(str(path))(x)
    return float((got.float() - ref).abs().max())
