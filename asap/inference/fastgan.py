"""Seeds -> images with a FastGAN generator (tools/generate.py), and its ONNX wrapper (tools/export.py).

A seed gives z = randn(1, nz) and then the generator's noise maps, in forward order, from
``torch.Generator().manual_seed(seed)`` on the CPU. Two sampling modes:

* ``eval`` (default): BatchNorm running statistics and the stored spectral-norm vectors. An image depends only on
  its seed (not on the batch it is rendered in, up to float rounding), and the ONNX export computes the same
  function.
* ``train``: what the official ``eval.py`` does (it never calls ``.eval()``): BatchNorm statistics of the batch and
  one spectral-norm power iteration per call. Images then depend on the batch they share; the network's state is
  restored after every batch, so each batch starts from the file's vectors and statistics, as eval.py's first one.
"""
from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.inference.generate import to_uint8
from asap.models.fastgan import FastGANGenerator

SAMPLING_MODES = ("eval", "train")


def seed_inputs(G: FastGANGenerator, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """z [1, nz] and the noise maps [1, 1, r, r] for ``seed`` (CPU, in that order from one generator)."""
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(1, G.nz, generator=gen)
    return z, [torch.randn(*shape, generator=gen) for shape in G.noise_shapes()]


@torch.no_grad()
def generate_fastgan(G: FastGANGenerator, seeds: Sequence[int], mode: str = "eval",
                     device: torch.device | str = "cpu", batch_size: int = 8) -> tuple[torch.Tensor, float]:
    """Render one image per seed; returns (uint8 [N, nc, H, W] on the CPU, images/s of the generator)."""
    if mode not in SAMPLING_MODES:
        raise AsapError(f"mode={mode!r} must be one of {', '.join(SAMPLING_MODES)}")
    device = torch.device(device)
    G = G.to(device).train(mode == "train")
    saved = {k: v.clone() for k, v in G.state_dict().items()} if mode == "train" else None
    out, busy = [], 0.0
    for start in range(0, len(seeds), batch_size):
        inputs = [seed_inputs(G, s) for s in seeds[start:start + batch_size]]
        t0 = time.perf_counter()
        z = torch.cat([zi for zi, _ in inputs]).to(device)
        noise = [torch.cat([n[i] for _, n in inputs]).to(device) for i in range(G.num_noise)]
        img = to_uint8(G(z, noise=noise))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        busy += time.perf_counter() - t0
        out.append(img.cpu())
        if saved is not None:
            G.load_state_dict(saved)
    G.eval()
    return torch.cat(out), (len(seeds) / busy if busy > 0 else float("inf"))


class FastGANExport(nn.Module):
    """``(z, noise_0, ..., noise_k) -> image``: the generator with every input explicit (eval mode), for ONNX."""

    def __init__(self, G: FastGANGenerator) -> None:
        super().__init__()
        self.G = G.eval()

    def forward(self, z: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.G(z, noise=list(noise))


def export_inputs(G: FastGANGenerator, batch: int = 1, seed: int = 0) -> tuple[tuple[torch.Tensor, ...], list[str]]:
    """Example inputs (z and per-sample noise maps) and their ONNX names."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.nz, generator=gen)
    noise = [torch.randn(batch, *shape[1:], generator=gen) for shape in G.noise_shapes()]
    return (z, *noise), ["z"] + [f"noise_{i}" for i in range(len(noise))]
