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
FastGAN generators (our checkpoints or official all_N.pth / N.pth files) export in eval mode with inputs 'z'
[B, nz] and 'noise_0' ... 'noise_k' [B, 1, r, r] (the noise maps in forward order; zeros for none) -> 'image'.
MobileStyleGAN exports the student's synthesis network with style_inv folded into the weights and the const noise
baked in: input 'w' [B, w_dim] -> 'image' (aux heads skipped), compared with the unfolded generator.
"""


def run(cfg, positional):
    from omegaconf import OmegaConf

    import torch

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.export import export_checked, prepare
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
    suffix = ".onnx" if cfg.format == "onnx" else ".ts.pt"
    out = Path(cfg.out) if cfg.out else Path(str(cfg.checkpoint)).with_suffix(suffix)
    check_outputs([out])  # before tracing: never replace a folder, device node or pipe
    traced, x, names = prepare(model, size, int(cfg.batch))
    reference = None
    if names == "w":  # compare against the unfolded generator itself, not only the folded copy
        with torch.no_grad():
            reference = model.synthesis(x, noise_mode="const")
    out, diff = export_checked(traced, x, out, cfg.format, int(cfg.opset), names, tolerance=float(cfg.tolerance),
                               reference=reference)
    if diff is None:
        print(f"wrote {out} (onnxruntime not installed: parity not checked; pip install -e '.[export]')")
        return 0
    print(f"wrote {out}: max abs difference vs PyTorch {diff:.3g} (tolerance {cfg.tolerance})")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("export", run, HELP))
