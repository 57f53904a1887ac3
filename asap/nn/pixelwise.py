"""Spatially-adaptive pixelwise MLPs: per-pixel MLP weights predicted on a low-resolution grid.

The parameter vector of each low-res cell holds, layer after layer, the biases (n_out values) then the
weights (n_in*n_out values, row-major as an (n_in, n_out) matrix multiplying a row vector of inputs).
Nearest upsampling by S means every pixel of an S×S tile shares its cell's MLP, so the MLP can run per tile
as batched matrix products without materialising the full-resolution parameter map.

Three implementations of the same function: ``pixelwise_mlp_reference`` (readable, full-resolution parameters),
``pixelwise_mlp_tiled`` (all tiles in one batched GEMM per layer; differentiable, traceable: training and export)
and ``pixelwise_mlp_blocks`` (inference only: a few tiles at a time through every layer, so activations stay in
cache and peak memory stays flat in the image size).
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


def _activation_(x: torch.Tensor, last: bool, output_activation: str | None) -> torch.Tensor:
    """In-place :func:`_activation` (for freshly computed layer outputs)."""
    if not last:
        return F.leaky_relu_(x, 0.01)
    if output_activation == "tanh":
        return x.tanh_()
    if output_activation == "sigmoid":
        return x.sigmoid_()
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
        out = _activation_(torch.baddbmm(bias.unsqueeze(1), out, weight.reshape(n, nci, nco)), i == last,
                           output_activation)
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


def cells_major(params: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """[B,P,h,w] -> contiguous [B,h,w,P], transposed ``chunk`` channels at a time (each piece stays in cache,
    about twice as fast on CPU as one strided copy of a large map)."""
    b, p, h, w = params.shape
    if params.permute(0, 2, 3, 1).is_contiguous():
        return params.permute(0, 2, 3, 1)
    out = params.new_empty(b, h * w, p)
    flat = params.reshape(b, p, h * w)
    for i in range(b):
        for j in range(0, p, chunk):
            out[i, :, j:j + chunk] = flat[i, j:j + chunk].t()
    return out.view(b, h, w, p)


def pixelwise_mlp_blocks(x: torch.Tensor, params: torch.Tensor, layout: MLPLayout, tile: int,
                         output_activation: str | None = "tanh", tile_encoding: torch.Tensor | None = None,
                         max_pixels: int = 1 << 14) -> torch.Tensor:
    """Inference-only per-tile MLP, block by block: x [B,C,H,W], params [B,P,H/tile,W/tile] -> [B,Cout,H,W].

    ``tile_encoding`` [E,tile,tile] is a positional encoding that repeats every tile (ASAPNet's cosine code has
    periods dividing S); its E channels are appended to every pixel's input after the C channels of ``x``, as if
    the full-resolution encoding had been concatenated. Blocks of at most ``max_pixels`` pixels (whole tiles) go
    through all layers, so the working set stays in cache and no full-resolution intermediate
    exists besides the output. Hidden layers are [pixels, channels] row-major GEMMs (the stored weight layout,
    no copy); the narrow last layer is computed transposed, straight into channels-first output. Not
    differentiable (in-place activations into a reused input buffer): use :func:`pixelwise_mlp_tiled` under autograd.
    """
    b, c, h, w = x.shape
    hl, wl = params.shape[-2:]
    k = tile
    kk = k * k
    if h != hl * k or w != wl * k:
        raise ValueError(f"input {h}x{w} is not the parameter grid {hl}x{wl} times the tile size {k}")
    e = 0 if tile_encoding is None else tile_encoding.shape[0]
    if c + e != layout.channels[0] or params.shape[1] != layout.num_params:
        raise ValueError(f"expected {layout.channels[0]} input channels and {layout.num_params} parameters, "
                         f"got {c}+{e} and {params.shape[1]}")
    cout = layout.channels[-1]
    out = x.new_empty(b, cout, h, w)
    # a block is a rectangle of cells: whole grid rows when a row fits the budget, else part of one row
    row_pixels = wl * kk
    rows = max(1, max_pixels // row_pixels)
    cols = wl if rows > 1 or row_pixels <= max_pixels else max(1, max_pixels // kk)
    cells = rows * cols
    inp = x.new_empty(cells, kk, c + e)
    if e:  # constant columns, written once
        inp[:, :, c:] = tile_encoding.reshape(e, kk).t().to(x.dtype)
    grid = cells_major(params)  # [B, hl, wl, P]: every cell's parameters contiguous
    sizes = layout.chunk_sizes()
    last = layout.num_layers - 1
    for bi in range(b):
        for r0 in range(0, hl, rows):
            nr = min(rows, hl - r0)
            for c0 in range(0, wl, cols):
                nc = min(cols, wl - c0)
                n = nr * nc
                ys, xs = slice(r0 * k, (r0 + nr) * k), slice(c0 * k, (c0 + nc) * k)
                a = inp[:n]
                a[:, :, :c] = x[bi, :, ys, xs].reshape(c, nr, k, nc, k).permute(1, 3, 2, 4, 0).reshape(n, kk, c)
                chunks = torch.split(grid[bi, r0:r0 + nr, c0:c0 + nc].reshape(n, -1), sizes, dim=1)
                for i, (nci, nco) in enumerate(zip(layout.channels[:-1], layout.channels[1:])):
                    bias, weight = chunks[2 * i], chunks[2 * i + 1].reshape(n, nci, nco)
                    if i < last:  # [n, kk, nco] = [n, kk, nci] @ [n, nci, nco]
                        a = torch.bmm(a, weight).add_(bias.unsqueeze(1))
                    else:  # transposed: [n, nco, kk] = [n, nco, nci] @ [n, nci, kk]
                        a = torch.bmm(weight.transpose(1, 2), a.transpose(1, 2)).add_(bias.unsqueeze(2))
                    a = _activation_(a, i == last, output_activation)
                out[bi, :, ys, xs] = a.view(nr, nc, cout, k, k).permute(2, 0, 3, 1, 4).reshape(cout, nr * k, nc * k)
    return out
