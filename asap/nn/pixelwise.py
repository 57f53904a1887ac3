"""Spatially-adaptive pixelwise MLPs: per-pixel MLP weights predicted on a low-resolution grid.

The parameter vector of each low-res cell holds, layer after layer, the biases (n_out values) then the
weights (n_in*n_out values, row-major as an (n_in, n_out) matrix multiplying a row vector of inputs).
Nearest upsampling by S means every pixel of an S×S tile shares its cell's MLP, so the MLP can run per tile
as batched matrix products without materialising the full-resolution parameter map.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MLPLayout:
    """Where each layer's bias and weight live inside the per-cell parameter vector."""

    channels: tuple[int, ...]  # (n_in, hidden..., n_out)

    @property
    def num_layers(self) -> int:
        return len(self.channels) - 1

    def slices(self) -> list[tuple[slice, slice]]:
        out, idx = [], 0
        for nci, nco in zip(self.channels[:-1], self.channels[1:]):
            b = slice(idx, idx + nco)
            idx += nco
            w = slice(idx, idx + nci * nco)
            idx += nci * nco
            out.append((b, w))
        return out

    def chunk_sizes(self) -> list[int]:
        """Sizes of the consecutive [bias, weight] chunks of every layer (for torch.split)."""
        return [n for nci, nco in zip(self.channels[:-1], self.channels[1:]) for n in (nco, nci * nco)]

    @property
    def num_params(self) -> int:
        return sum(nco + nci * nco for nci, nco in zip(self.channels[:-1], self.channels[1:]))


def _activation(x: torch.Tensor, last: bool, output_activation: str | None) -> torch.Tensor:
    if not last:
        return F.leaky_relu(x, 0.01)
    if output_activation == "tanh":
        return torch.tanh(x)
    if output_activation == "sigmoid":
        return torch.sigmoid(x)
    return x


def pixelwise_mlp_tiled(x: torch.Tensor, params: torch.Tensor, layout: MLPLayout, tile: int,
                       output_activation: str | None = "tanh") -> torch.Tensor:
    """Run the per-tile MLPs: x [B,Cin,H,W], params [B,P,H/tile,W/tile] -> [B,Cout,H,W].

    Each tile's k=tile*tile pixels are the rows of one small GEMM with that cell's weights; all cells go through
    one batched GEMM per layer (bias fused via baddbmm, activations in place), so the full-resolution parameter map
    is never materialised."""
    b, c, h, w = x.shape
    hl, wl = params.shape[-2:]
    k = tile
    if h != hl * k or w != wl * k:
        raise ValueError(f"input {h}x{w} is not the parameter grid {hl}x{wl} times the tile size {k}")
    n = b * hl * wl
    out = x.reshape(b, c, hl, k, wl, k).permute(0, 2, 4, 3, 5, 1).reshape(n, k * k, c)
    p = params.permute(0, 2, 3, 1).reshape(n, -1)
    # one split (not per-layer slices): its backward is a single concatenation instead of a zero-filled
    # full-size gradient per slice
    chunks = torch.split(p, layout.chunk_sizes(), dim=1)
    last = layout.num_layers - 1
    for i, (nci, nco) in enumerate(zip(layout.channels[:-1], layout.channels[1:])):
        bias, weight = chunks[2 * i], chunks[2 * i + 1]
        out = torch.baddbmm(bias.unsqueeze(1), out, weight.reshape(n, nci, nco))
        if i < last:
            F.leaky_relu_(out, 0.01)
        elif output_activation == "tanh":
            out.tanh_()
        elif output_activation == "sigmoid":
            out.sigmoid_()
    cout = layout.channels[-1]
    return out.view(b, hl, wl, k, k, cout).permute(0, 5, 1, 3, 2, 4).reshape(b, cout, h, w)


def pixelwise_mlp_reference(x: torch.Tensor, params: torch.Tensor, layout: MLPLayout, tile: int,
                            output_activation: str | None = "tanh") -> torch.Tensor:
    """Readable reference: nearest-upsample the parameters to full resolution, then one MLP per pixel."""
    full = F.interpolate(params, scale_factor=tile, mode="nearest")  # [B,P,H,W]
    out = x
    for i, ((bs, ws), nci, nco) in enumerate(zip(layout.slices(), layout.channels[:-1], layout.channels[1:])):
        weight = full[:, ws].reshape(x.shape[0], nci, nco, *x.shape[-2:])
        bias = full[:, bs]
        out = torch.einsum("bihw,biohw->bohw", out, weight) + bias
        out = _activation(out, i == layout.num_layers - 1, output_activation)
    return out
