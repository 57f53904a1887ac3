#!/usr/bin/env python
"""Export a generator checkpoint to ONNX or TorchScript, with a parity check against PyTorch."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/export.py checkpoint=PATH format=onnx|torchscript [out=FILE] [size=HxW] [batch=N]

Traces the generator (our checkpoint, or an official *_net_G.pth with +official.<option>=<value>) on a random
label map of the model's training size (or size=HxW), writes the export atomically, then runs it (onnxruntime for
ONNX, when installed: pip install -e ".[export]"; torch.jit for TorchScript) and compares with PyTorch: the max
abs difference is printed and must be below tolerance=1e-4, else nothing is written and the exit code is 2.
The ONNX graph takes the preprocessed input 'semantics' [B, C, H, W] (one-hot labels + instance edges) and
returns 'image' [B, 3, H, W] in [-1, 1]; its batch dimension is dynamic, H and W are fixed.
"""


def run(cfg, positional):
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.export import example_input, export
    from asap.utils.io import check_outputs

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r} (use checkpoint=PATH)")
    official = OmegaConf.to_container(cfg.official, resolve=True) or {}
    model = asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official).float().cpu()
    size = None
    if cfg.size is not None:
        try:
            size = [int(v) for v in str(cfg.size).lower().split("x")]
        except ValueError:
            raise AsapError(f"size={cfg.size} must look like 256x512") from None
    x = example_input(model, size, int(cfg.batch))
    suffix = ".onnx" if cfg.format == "onnx" else ".ts.pt"
    out = Path(cfg.out) if cfg.out else Path(str(cfg.checkpoint)).with_suffix(suffix)
    check_outputs([out])  # before tracing: never replace a folder, device node or pipe
    out, diff = export(model, x, out, cfg.format, int(cfg.opset), tolerance=float(cfg.tolerance))
    if diff is None:
        print(f"wrote {out} (onnxruntime not installed: parity not checked; pip install -e '.[export]')")
        return 0
    print(f"wrote {out}: max abs difference vs PyTorch {diff:.3g} (tolerance {cfg.tolerance})")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("export", run, HELP))
