"""Export a generator to ONNX or TorchScript and check the export against PyTorch on the same input."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

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
            ) -> tuple[nn.Module, Any, Any]:
    """(module to trace, example input(s), input name(s)) for any generator the toolkit exports:

    - label-to-image generators (ASAPNet, SPADE) take 'semantics' [B, C, H, W];
    - FastGAN takes 'z' and its noise maps 'noise_0'... (asap.inference.fastgan), in eval mode;
    - StyleGAN-type generators (MobileStyleGAN) export their synthesis network, folded, taking 'w'
      (asap.inference.export_latent).
    """
    from asap.models.fastgan import FastGANGenerator

    if isinstance(model, FastGANGenerator):
        from asap.inference.fastgan import FastGANExport, export_inputs
        if size is not None:
            raise AsapError("size= does not apply to FastGAN (its image size is fixed by the checkpoint)")
        x, names = export_inputs(model, batch, seed)
        return FastGANExport(model), x, names
    if hasattr(model, "mapping") and hasattr(model, "synthesis"):
        from asap.inference.export_latent import synthesis_for_export
        module, w = synthesis_for_export(model, batch, seed)
        return module, w, "w"
    return model, example_input(model, size, batch, seed), "semantics"


def _as_inputs(x: torch.Tensor | tuple[torch.Tensor, ...], names: str | Sequence[str] | None
               ) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    inputs = tuple(x) if isinstance(x, (tuple, list)) else (x,)
    if names is None:
        names = ["semantics"]
    elif isinstance(names, str):
        names = [names]
    return inputs, list(names)


def export(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], out: str | Path, fmt: str = "onnx",
           opset: int = 17, input_names: str | Sequence[str] | None = None, *, input_name: str | None = None,
           tolerance: float | None = None, reference: torch.Tensor | None = None) -> Path:
    """Write the traced model to ``out`` atomically (ONNX through the TorchScript-based exporter). ``x`` is the
    input or a tuple of inputs named ``input_names`` (default: one input 'semantics'); batch dims are dynamic.

    With ``tolerance``, the export is compared with PyTorch (``reference``, default the module's own output) while
    it is still a temporary file: a larger difference is a one-line error and ``out`` is left as it was.
    """
    return export_checked(model, x, out, fmt, opset, input_names if input_name is None else input_name,
                          tolerance=tolerance, reference=reference)[0]


def export_checked(model: nn.Module, x: torch.Tensor | tuple[torch.Tensor, ...], out: str | Path, fmt: str = "onnx",
                   opset: int = 17, input_names: str | Sequence[str] | None = None, *,
                   tolerance: float | None = None, reference: torch.Tensor | None = None
                   ) -> tuple[Path, float | None]:
    """:func:`export`, also returning the max abs difference to PyTorch (None when no runtime is installed)."""
    model = model.eval()
    out = Path(out)
    if fmt not in ("onnx", "torchscript"):
        raise AsapError(f"format={fmt!r} must be onnx or torchscript")
    inputs, names = _as_inputs(x, input_names)
    diff = None
    with atomic_path(out) as tmp:
        _write(model, inputs, names, tmp, fmt, opset)
        if tolerance is not None:
            diff = max_difference(model, tmp, inputs, fmt, names, reference)
            if diff is not None and not diff <= float(tolerance):
                raise AsapError(f"export differs from PyTorch by {diff:.3g} > tolerance {tolerance}; "
                                f"{out} not written")
    return out, diff


def _write(model: nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str], tmp: Path, fmt: str,
           opset: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            axes = {n: {0: "batch"} for n in [*names, "image"]}
            torch.onnx.export(model, inputs, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=["image"], dynamic_axes=axes)
        else:
            with torch.no_grad():
                traced = torch.jit.trace(model, inputs, check_trace=False)
            traced.save(str(tmp))


@torch.no_grad()
def max_difference(model: nn.Module, path: str | Path, x: torch.Tensor | tuple[torch.Tensor, ...], fmt: str,
                   input_names: str | Sequence[str] | None = None,
                   reference: torch.Tensor | None = None) -> float | None:
    """Max abs difference between the exported file's output and PyTorch's (``reference``, default the traced
    module's own output); None when no runtime is installed."""
    inputs, names = _as_inputs(x, input_names)
    ref = (model.eval()(*inputs) if reference is None else reference).float()
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
