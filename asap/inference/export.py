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


def prepare(model: nn.Module, size: Sequence[int] | None, batch: int = 1, seed: int = 0
            ) -> tuple[nn.Module, torch.Tensor, str]:
    """(module to trace, example input, input name): label-to-image generators take 'semantics'; StyleGAN-type
    generators (MobileStyleGAN) export their synthesis network, folded, taking 'w' (asap.inference.export_latent)."""
    if hasattr(model, "mapping") and hasattr(model, "synthesis"):
        from asap.inference.export_latent import synthesis_for_export
        module, w = synthesis_for_export(model, batch, seed)
        return module, w, "w"
    return model, example_input(model, size, batch, seed), "semantics"


def export(model: nn.Module, x: torch.Tensor, out: str | Path, fmt: str = "onnx", opset: int = 17,
           input_name: str = "semantics") -> Path:
    """Write the traced model to ``out`` atomically (ONNX through the TorchScript-based exporter)."""
    model = model.eval()
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset, input_names=[input_name],
                              output_names=["image"], dynamic_axes={input_name: {0: "batch"}, "image": {0: "batch"}})
        elif fmt == "torchscript":
            with torch.no_grad():
                traced = torch.jit.trace(model, (x,), check_trace=False)
            traced.save(str(tmp))
        else:
            raise AsapError(f"format={fmt!r} must be onnx or torchscript")
    return out


@torch.no_grad()
def max_difference(model: nn.Module, path: str | Path, x: torch.Tensor, fmt: str, input_name: str = "semantics",
                   reference: torch.Tensor | None = None) -> float | None:
    """Max abs difference between the exported file's output and PyTorch's (``reference``, default the traced
    module's own output); None when no runtime is installed."""
    ref = (model.eval()(x) if reference is None else reference).float()
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(sess.run(None, {input_name: x.numpy()})[0])
    else:
        got = torch.jit.load(str(path))(x)
    return float((got.float() - ref).abs().max())
