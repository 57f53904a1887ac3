"""ASAPNet generator (Shaham et al., "Spatially-Adaptive Pixelwise Networks for Fast Image Translation", CVPR 2021).

A convolutional low-resolution stream predicts, for every cell of a grid S times coarser than the image, the
parameters of a small MLP; every full-resolution pixel of the cell's S×S tile runs that MLP on its label vector
and a Fourier positional encoding.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from asap.data.preprocess import SemanticSpec
from asap.nn.layers import ConvNormAct, TentDownsample
from asap.nn.pixelwise import MLPLayout, pixelwise_mlp_blocks, pixelwise_mlp_reference, pixelwise_mlp_tiled
from asap.nn.positional import cosine_encoding, cosine_encoding_channels
from asap.nn.init import init_weights_official


class ASAPNetGenerator(nn.Module):
    """Label map (one-hot + instance channels) -> image in [-1, 1].

    Defaults are those of the official code (its option parser with the ASAPNet model defaults): COCO-sized
    label_nc 182, crop 512 at aspect 1 (S = 512 // 16 = 32), learned_ds_factor 16, widths 64/1024/64, depths 7/5.

    Inference (eval mode with autograd off, not tracing) takes the fast path: the pixelwise MLP block by block
    with the tile-periodic encoding appended in place (:func:`pixelwise_mlp_blocks`) and, on CPU, the wide 3x3
    convs of the low-res stream as Winograd F(2x2,3x3) with cached filters (~67 MB per 1024-wide conv). Both
    are as accurate as the reference path (float rounding differs; measured against float64). Set
    ``fast_inference = False`` for the training path, ``winograd_min_channels = None`` for direct convs only.
    """

    fast_inference: bool = True
    # Winograd for 3x3 convs at least this wide on both sides: on a 2-core AVX-512 CPU a 1024-wide conv at 16x32
    # takes ~0.55x the time of the direct one; 64-wide convs at full resolution get slower (transform-bound)
    winograd_min_channels: int | None = 256
    block_pixels: int = 1 << 14  # pixels per block of the CPU inference MLP (fits the L2 cache of common CPUs)

    def __init__(self, label_nc: int = 182, contain_dontcare_label: bool = False, instance_edge: bool = True,
                 instance_dist: bool = False, lr_instance: bool = True, downsampling: int = 32,
                 learned_ds_factor: int = 16, lr_width: int = 64, lr_max_width: int = 1024, lr_depth: int = 7,
                 hr_width: int = 64, hr_depth: int = 5, positional_encoding: str | None = "cosine",
                 norm: str = "instanceaffine", pad_mode: str = "zeros", output_nc: int = 3,
                 output_activation: str | None = "tanh", image_size: Sequence[int] | None = None,
                 init_type: str | None = "xavier", init_gain: float = 0.02) -> None:
        super().__init__()
        if downsampling < 1 or downsampling & (downsampling - 1):
            raise ValueError(f"downsampling S must be a power of two, got {downsampling}")
        if learned_ds_factor < 1 or learned_ds_factor & (learned_ds_factor - 1) or learned_ds_factor > downsampling:
            raise ValueError(f"learned_ds_factor must be a power of two <= downsampling ({downsampling}), "
                             f"got {learned_ds_factor}")
        if positional_encoding not in ("cosine", None):
            raise ValueError(f"unknown positional_encoding '{positional_encoding}' (cosine or null)")
        self.spec = SemanticSpec(label_nc, contain_dontcare_label, instance_edge, instance_dist)
        self.lr_instance = lr_instance
        self.downsampling = int(downsampling)
        self.learned_ds_factor = int(learned_ds_factor)
        self.positional_encoding = positional_encoding
        self.output_activation = output_activation
        self.image_size = tuple(image_size) if image_size is not None else None

        num_in = self.spec.num_channels
        hr_in = num_in - (1 if lr_instance else 0)
        if positional_encoding == "cosine":
            hr_in += cosine_encoding_channels(self.downsampling)
        self.layout = MLPLayout((hr_in,) + (hr_width,) * (hr_depth - 1) + (output_nc,))

        pre = self.downsampling // self.learned_ds_factor
        self.pre_downsample = TentDownsample(pre, num_in) if pre > 1 else None
        relu = nn.ReLU
        layers: list[nn.Module] = [ConvNormAct(num_in, lr_width, 3, 1, norm, pad_mode, relu())]
        n_ds = int(math.log2(self.learned_ds_factor))
        width = lr_width
        for i in range(n_ds):
            out = lr_max_width if i == n_ds - 1 else width
            layers.append(ConvNormAct(width, out, 3, 2, norm, pad_mode, relu()))
            width = out
        for _ in range(lr_depth):
            layers.append(ConvNormAct(width, width, 3, 1, norm, pad_mode, relu()))
        layers.append(nn.Conv2d(width, self.layout.num_params, 1))
        self.lr_stream = nn.Sequential(*layers)
        self._pe_cache: dict[tuple, torch.Tensor] = {}
        if init_type is not None:  # the official BaseNetwork.init_weights (xavier normal, gain 0.02)
            init_weights_official(self, init_type, init_gain)

    @property
    def num_mlp_params(self) -> int:
        """Parameters of one pixelwise MLP (channels of the low-res stream's output)."""
        return self.layout.num_params

    def encoding(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Positional encoding [1,C,H,W], computed once per (size, device, dtype)."""
        key = (height, width, str(device), dtype)
        pe = self._pe_cache.get(key)
        if pe is None:
            pe = cosine_encoding(height, width, self.downsampling, device=device, dtype=dtype)
            if len(self._pe_cache) >= 4:  # a few sizes at most (tile + image per device)
                self._pe_cache.clear()
            self._pe_cache[key] = pe
        return pe

    def tile_encoding(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Positional encoding of one S×S tile [C,S,S]: the full-image encoding repeats it in every tile, since
        all its periods divide S."""
        return self.encoding(self.downsampling, self.downsampling, device, dtype)[0]

    def use_fast_path(self) -> bool:
        """True when this call takes the inference path: eval mode, autograd off, not traced or compiled. A model
        in train mode always runs the training path (a GAN's D step runs G without gradients, still training)."""
        return (self.fast_inference and not self.training and not torch.is_grad_enabled()
                and not torch.jit.is_tracing()
                and not torch.jit.is_scripting() and not torch.onnx.is_in_onnx_export()
                and not torch.compiler.is_compiling())

    def lowres_params(self, x: torch.Tensor, fast: bool = False) -> torch.Tensor:
        """Low-res stream: input [B,C,H,W] -> per-cell MLP parameters [B,P,H/S,W/S]."""
        if self.pre_downsample is not None:
            x = self.pre_downsample(x)
        if not (fast and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)):
            return self.lr_stream(x)
        *body, head = self.lr_stream
        least = self.winograd_min_channels
        for layer in body:
            if not isinstance(layer, ConvNormAct):
                x = layer(x)
                continue
            wide = least is not None and layer.winograd_eligible() \
                and min(layer.conv.in_channels, layer.conv.out_channels) >= least
            x = layer.forward_inference(x, winograd=wide)
        # the 1x1 head as one GEMM per image, weight [P, C] times features [C, cells] (faster than the conv)
        b, c, h, w = x.shape
        weight, bias = head.weight.view(head.out_channels, c), head.bias
        feats = x.reshape(b, c, h * w)
        rows = [torch.addmm(bias.unsqueeze(1), weight, feats[i]) if bias is not None else weight @ feats[i]
                for i in range(b)]
        out = rows[0].unsqueeze(0) if b == 1 else torch.stack(rows)
        return out.view(b, head.out_channels, h, w)

    def highres_input(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel MLP input: label channels (the lr-only instance channel dropped) + positional encoding."""
        if self.lr_instance:
            x = x[:, :-1]
        if self.positional_encoding is None:
            return x
        pe = self.encoding(x.shape[-2], x.shape[-1], x.device, x.dtype)
        return torch.cat([x, pe.expand(x.shape[0], -1, -1, -1)], dim=1)

    def forward(self, x: torch.Tensor, return_params: bool = False, reference: bool = False):
        """x: preprocessed input [B, spec.num_channels, H, W] (H, W multiples of S) -> image [B,3,H,W].

        ``return_params`` also returns the low-res parameter map; ``reference`` uses the readable
        full-resolution path (same result, far more memory). In eval mode without autograd the fast inference
        path runs.
        """
        s = self.downsampling
        if x.dim() != 4 or x.shape[1] != self.spec.num_channels:
            raise ValueError(f"expected input [B,{self.spec.num_channels},H,W], got {tuple(x.shape)}")
        if x.shape[-2] % s or x.shape[-1] % s:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of the downsampling {s}")
        fast = not reference and self.use_fast_path()
        params = self.lowres_params(x, fast=fast)
        if fast:
            hr = x[:, :-1] if self.lr_instance else x
            enc = self.tile_encoding(x.device, x.dtype) if self.positional_encoding is not None else None
            block = self.block_pixels if x.device.type == "cpu" else x.shape[-2] * x.shape[-1]
            image = pixelwise_mlp_blocks(hr, params, self.layout, s, self.output_activation, enc, block)
        else:
            mlp = pixelwise_mlp_reference if reference else pixelwise_mlp_tiled
            image = mlp(self.highres_input(x), params, self.layout, s, self.output_activation)
        return (image, params) if return_params else image
