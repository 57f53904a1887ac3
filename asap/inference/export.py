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


def _as_inputs(x: torch.Tensor | tuple[torch.Tensor, ...], input_names: list[str] | None):
    inputs = x if isinstance(x, tuple) else (x,)
    return inputs, (input_names or ["semantics"])


def export(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], out: str | Path, fmt: str = "onnx",
           opset: int = 17, input_names: list[str] | None = None) -> Path:
    """Write the traced model to ``out`` atomically (ONNX through the TorchScript-based exporter). ``x`` is the
    input or a tuple of inputs named ``input_names`` (default: one input 'semantics'); batch dims are dynamic."""
    model = model.eval()
    out = Path(out)
    inputs, names = _as_inputs(x, input_names)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            axes = {n: {0: "batch"} for n in [*names, "image"]}
            torch.onnx.export(model, inputs, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=["image"], dynamic_axes=axes)
        elif fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, inputs, check_trace=False)
            traced.save(str(tmp))
        else:
            raise AsapError(f"format={fmt!r} must be onnx or torchscript")
    return out


@torch.no_grad()
def max_difference(model: nn.Module, path: str | Path, x: torch.Tensor | tuple[torch.Tensor, ...], fmt: str,
                   input_names: list[str] | None = None) -> float | None:
    """Max abs difference between the exported file's output and PyTorch's; None when no runtime is installed."""
    inputs, names = _as_inputs(x, input_names)
    ref = model.eval()(*inputs).float()
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0])
    else:
        got = torch.jit.load(str(path))(*inputs)
    return float((got.float() - ref).abs().max())
