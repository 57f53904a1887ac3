"""StyleGAN2 building blocks shared by StyleGAN2, MobileStyleGAN and Anycost GAN.

Equalised-learning-rate layers (weights stored N(0,1), scaled at run time by 1/sqrt(fan_in)), FIR filtering
(upfirdn2d in plain PyTorch), modulated convolution with demodulation, noise injection, biased leaky ReLU with
gain sqrt(2), ToRGB skips and the residual/minibatch-stddev pieces of the discriminator. Math follows the
StyleGAN2 paper and rosinality's checkpoints (parameter shapes and buffer contents are those of that format).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.nn.winograd import conv3x3_winograd, winograd_filter
from asap.utils.cache import derived, tensor_key
from asap.utils.layout import stored_nhwc

SQRT2 = math.sqrt(2.0)
WINOGRAD_MIN_CHANNELS = 256  # batch-1 CPU inference: wide low-resolution 3x3 convs run as Winograd F(2x2,3x3)
PAIRED_MAX_CHANNELS = 8  # batch-1 CPU inference: (upsampling) 3x3 convs with at most this many outputs pair columns


# -- FIR filtering ----------------------------------------------------------------------------------------------
def make_kernel(taps: Sequence[float]) -> torch.Tensor:
    """2-D FIR kernel from 1-D taps (outer product), normalised to sum 1."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int] = (0, 0), gain: torch.Tensor | None = None,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """Upsample by zero insertion, pad (p0 before, p1 after, on both axes; negative crops), convolve with
    ``kernel`` (true convolution) and keep every ``down``-th sample. Output side: (H*up + p0 + p1 - kh)//down + 1.
    ``gain`` [C] and ``bias`` [C] give gain * filtered + bias per channel, folded into the depthwise conv."""
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(x.dtype).reshape(1, 1, kh, kw).expand(c, 1, kh, kw)
    if gain is not None:
        weight = weight * gain.to(x.dtype).reshape(c, 1, 1, 1)
    if bias is not None:
        bias = bias.to(x.dtype)
    if p0 == p1 >= 0:  # symmetric padding: the conv pads (same sums, no padded copy of the input)
        return F.conv2d(x, weight, bias, stride=down, padding=p0, groups=c)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        hh, ww = x.shape[2], x.shape[3]
        x = x[:, :, max(-p0, 0): hh - max(-p1, 0), max(-p0, 0): ww - max(-p1, 0)]
    return F.conv2d(x, weight, bias, stride=down, groups=c)


class Blur(nn.Module):
    """FIR low-pass filter with padding; ``upsample_factor`` scales the kernel to keep the gain of zero insertion."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        kernel = make_kernel(taps)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor ** 2
        self.register_buffer("kernel", kernel)
        self.pad = tuple(pad)

    def forward(self, x: torch.Tensor, gain: torch.Tensor | None = None,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """Filtered ``x``; optional per-channel ``gain`` and ``bias`` are applied in the same pass."""
        return upfirdn2d(x, self.kernel, pad=self.pad, gain=gain, bias=bias)


class Upsample(nn.Module):
    """2x FIR upsampling (the ToRGB skip path)."""

    def __init__(self, taps: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer("kernel", make_kernel(taps) * factor ** 2)
        p = len(taps) - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)
        self.fast = True  # the bilinear form below where it applies (off: the FIR as defined, e.g. to count MACs)

    def _is_bilinear(self) -> bool:
        """Whether the (loadable) kernel is StyleGAN2's [1,3,3,1] at factor 2; cached until the buffer changes."""
        k = self.kernel
        return derived(self, "_bilinear", tensor_key(k), lambda: (
            self.factor == 2 and self.pad == (2, 1) and k.shape == (4, 4)
            and torch.equal(k, (make_kernel((1, 3, 3, 1)) * 4).to(k))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast and self._is_bilinear() and not (torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()):
            return upsample_1331(x)
        if not torch.is_grad_enabled():
            out = upsample_transposed(x, self.kernel, self.factor, self.pad)
            if out is not None:
                return out
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


def upsample_1331(x: torch.Tensor) -> torch.Tensor:
    """``upfirdn2d(x, 4 * make_kernel([1, 3, 3, 1]), up=2, pad=(2, 1))``, computed as bilinear 2x upsampling.

    Per axis that filter gives out[2m] = x[m-1]/4 + 3x[m]/4 and out[2m+1] = 3x[m]/4 + x[m+1]/4: the
    ``align_corners=False`` bilinear weights. Only the borders differ: bilinear repeats the edge sample where the
    filter sees a zero, so the first and last rows and columns are scaled by 3/4. One pass instead of a
    zero-filled map and a 16-tap conv: 2-4x faster on the 3-channel skip images, same values up to rounding."""
    if not torch.is_grad_enabled():
        return _upsample_1331_lerp(x)
    y = F.interpolate(x.contiguous(), scale_factor=2, mode="bilinear", align_corners=False)
    for edge in (y[:, :, 0], y[:, :, -1], y[..., 0], y[..., -1]):  # corners: (3/4)^2
        edge.mul_(0.75)
    return y


def _upsample_1331_lerp(x: torch.Tensor) -> torch.Tensor:
    """``upsample_1331`` without autograd: per axis two ``lerp`` passes write the even and the odd outputs into
    strided views (one pass each over the output, 2.4x faster than ``F.interpolate`` on a 3-channel 512 px map)."""
    x = x.contiguous()
    b, c, h, w = x.shape
    t = x.new_empty(b, c, h, 2 * w)
    _interleave_1331(x, t[..., 0::2], t[..., 1::2], -1)
    y = x.new_empty(b, c, 2 * h, 2 * w)
    _interleave_1331(t, y[:, :, 0::2], y[:, :, 1::2], 2)
    return y


def _interleave_1331(x: torch.Tensor, even: torch.Tensor, odd: torch.Tensor, dim: int) -> None:
    """even[m] = x[m-1]/4 + 3x[m]/4 and odd[m] = 3x[m]/4 + x[m+1]/4 along ``dim``, with zeros beyond the ends."""
    n = x.shape[dim]
    torch.lerp(x.narrow(dim, 1, n - 1), x.narrow(dim, 0, n - 1), 0.25, out=even.narrow(dim, 1, n - 1))
    torch.lerp(x.narrow(dim, 0, n - 1), x.narrow(dim, 1, n - 1), 0.25, out=odd.narrow(dim, 0, n - 1))
    torch.mul(x.narrow(dim, 0, 1), 0.75, out=even.narrow(dim, 0, 1))
    torch.mul(x.narrow(dim, n - 1, 1), 0.75, out=odd.narrow(dim, n - 1, 1))


class FastInference:
    """Mixin for StyleGAN2-type generators: ``fast_inference`` (the name the benchmark toggles to count the
    architecture's MACs) switches the exact shortcuts on (default) or off: the bilinear form of the skip
    upsamplers, and at batch-1 CPU inference the Winograd form of wide low-resolution convs and the column-paired
    form of thin convs and upsampling convs."""

    @property
    def fast_inference(self) -> bool:
        return all(m.fast for m in self.modules()  # type: ignore[attr-defined]
                   if isinstance(m, (Upsample, ModulatedConv2d)))

    @fast_inference.setter
    def fast_inference(self, on: bool) -> None:
        for m in self.modules():  # type: ignore[attr-defined]
            if isinstance(m, (Upsample, ModulatedConv2d)):
                m.fast = bool(on)


def upsample_transposed(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor | None:
    """``upfirdn2d(x, kernel, up, pad=pad)`` as one stride-``up`` transposed conv with every channel as a batch item
    (no zero-filled copy; the same sums in another order), or None where the padding has no such form. Used at
    inference: the skip images have 3 channels, on which grouped convs are slow."""
    p0, p1 = pad
    kh, kw = kernel.shape
    if kh != kw or not 0 <= kh - 1 - p0 or not 0 <= p1 - p0 + up - 1 < up:
        return None
    b, c, h, w = x.shape
    weight = kernel.to(x.dtype).reshape(1, 1, kh, kw)
    out = F.conv_transpose2d(x.reshape(b * c, 1, h, w), weight, stride=up, padding=kh - 1 - p0,
                             output_padding=p1 - p0 + up - 1)
    return out.reshape(b, c, out.shape[2], out.shape[3])


def conv3x3_paired_columns(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=1)`` for a channels-last x of even width, computed two columns at a time:
    a stride-(1, 2) conv with a 3x4 kernel and 2·O output channels, (column parity, channel), whose channels-last
    output is, byte for byte, the channels-last [O, H, W] map (a view, no copy).

    For thin layers (Anycost x0.25 at 1024 px: 8 -> 8 channels): oneDNN's AVX-512 kernels pad the output channels to
    16, so half the work of an 8-channel conv is padding; paired, all 16 lanes carry results. Measured on 2 cores,
    8 -> 8 channels at 1024 px: 10.2 vs 12.8 ms; the sums are the direct conv's (equal in tests)."""
    b, c, h, w = x.shape
    o = weight.shape[0]
    pair = weight.new_zeros(2, o, c, 3, 4)
    pair[0, ..., :3] = weight  # even output column 2j reads input columns 2j-1 .. 2j+1
    pair[1, ..., 1:] = weight  # odd column 2j+1 reads 2j .. 2j+2
    pair = pair.reshape(2 * o, c, 3, 4).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x.contiguous(memory_format=torch.channels_last), pair, None if bias is None else bias.repeat(2),
                 stride=(1, 2), padding=1)
    return y.permute(0, 2, 3, 1).reshape(b, h, w, o).permute(0, 3, 1, 2)


def separable_taps(kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(vertical taps r, horizontal taps c) with ``kernel == outer(r, c)`` for a separable 2-D FIR kernel (to
    float32 rounding), else None."""
    r, c = kernel.sum(1), kernel.sum(0) / kernel.sum()
    return (r, c) if torch.allclose(torch.outer(r, c), kernel, rtol=1e-6, atol=0) else None


def upconv3x3_paired_columns(x: torch.Tensor, weight: torch.Tensor, taps_h: torch.Tensor, taps_w: torch.Tensor,
                             bias: torch.Tensor | None = None) -> torch.Tensor:
    """StyleGAN2's upsampling conv for a channels-last x [1, C, H, W] and a kernel [O, C, 3, 3]:
    ``conv_transpose2d(x, weight^T, stride=2)``, then the 4x4 blur ``outer(taps_h, taps_w)`` with padding 1 (a true
    convolution, as upfirdn2d) and the bias; output [1, O, 2H, 2W], computed two output columns at a time.

    Along W the blur is folded into the kernel: 3 taps convolved with 4 give 6 at the output rate, and an output
    column of parity b reads taps b, b+2, b+4 from input columns j+1, j, j-1. So one stride-(2, 1) transposed conv
    with a 3x3 kernel and 2·O outputs, ordered (column parity, channel), writes the channels-last [O, 2H+1, 2W] map
    byte for byte; a 4-tap depthwise conv along H then blurs its rows and adds the bias. For thin layers (Anycost
    x0.25 at 1024 px: 16 -> 8 channels), where oneDNN pads 8 outputs to 16 lanes, the layer took 13.2 instead of
    14.7 ms in context on 2 cores. The same sums in another order."""
    o, c = weight.shape[:2]
    k6 = F.conv1d(weight.reshape(o * c * 3, 1, 3), taps_w.flip(0).to(weight).reshape(1, 1, 4), padding=3)
    k6 = k6.reshape(o, c, 3, 6)
    kernel = torch.stack([k6[..., 0::2], k6[..., 1::2]])  # [parity, O, C, 3, 3]
    kernel = kernel.reshape(2 * o, c, 3, 3).transpose(0, 1).contiguous(memory_format=torch.channels_last)
    y = F.conv_transpose2d(x.contiguous(memory_format=torch.channels_last), kernel, stride=(2, 1), padding=(0, 1))
    vertical = taps_h.flip(0).to(y).reshape(1, 1, 4, 1).expand(2 * o, 1, 4, 1)
    y = F.conv2d(y, vertical, None if bias is None else bias.repeat(2), padding=(1, 0), groups=2 * o)
    b, _, h, w = y.shape
    return y.permute(0, 2, 3, 1).reshape(b, h, 2 * w, o).permute(0, 3, 1, 2)


def add_pixel_map_(out: torch.Tensor, m: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``out += scale * m`` in place, m [B or 1, 1, H, W] broadcast over the channels (noise injection).

    On a channels-last CPU map with fewer than 16 channels (Anycost x0.25 at 1024 px: 8) the broadcast add runs
    as a scalar loop, 8 channels per pixel; this does it as one GEMM instead: k = 16/C neighbouring pixels form a
    row of 16 values, out[rows, 16] += m[rows, k] @ kron(I_k, scale * 1_C). 8 channels at 1024 px: 0.7 vs 2.6 ms;
    each element gets the same scale * m product added."""
    b, c, h, w = out.shape
    k = 16 // c if c < 16 and 16 % c == 0 else 0
    if k and w % k == 0 and b == 1 and out.device.type == "cpu" and out.dtype == m.dtype == torch.float32 \
            and stored_nhwc(out) and m.shape == (1, 1, h, w):
        rows = out.permute(0, 2, 3, 1).view(h * w // k, k * c)
        spread = torch.kron(torch.eye(k, dtype=out.dtype, device=out.device),
                            scale.to(out.dtype).reshape(1, 1).expand(1, c))
        rows.addmm_(m.reshape(h * w // k, k), spread)
        return out
    return out.add_(m * scale)


# -- equalised layers -----------------------------------------------------------------------------------------
def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None, slope: float = 0.2,
                     gain: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias) * gain, bias broadcast over the channel axis (dim 1)."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, slope) * gain


class FusedLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU(0.2), gain sqrt(2)."""

    def __init__(self, channels: int, bias: bool = True) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        if bias is not None and x.shape[1] != bias.shape[0]:  # a sub-generator uses the first channels only
            bias = bias[:x.shape[1]]
        return fused_leaky_relu(x, bias)


class PixelNorm(nn.Module):
    """x / sqrt(mean(x^2 over features) + 1e-8): puts every z on the sphere before the mapping MLP."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate and a learning-rate multiplier (0.01 in the mapping network)."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


# -- synthesis blocks -----------------------------------------------------------------------------------------
class ModulatedConv2d(nn.Module):
    """Style-modulated convolution: the kernel is scaled per sample along Cin by an affine map of w, then
    (optionally) demodulated to unit norm per output filter; runs as one grouped conv over the batch.
    ``upsample`` = transposed conv (stride 2) followed by a 4x4 blur, as in StyleGAN2."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size ** 2)
        self.padding = kernel_size // 2
        self.fast = True  # Winograd where it pays (see _winograd_pays); off: direct convs as defined
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

    def modulated_weight(self, style: torch.Tensor, in_ch: int | None = None,
                         out_ch: int | None = None) -> torch.Tensor:
        """Per-sample kernels [B, Cout, Cin, k, k] for styles w [B, style_dim]. ``in_ch``/``out_ch`` keep only the
        first channels (Anycost sub-generators): styles are computed for every input channel and then sliced, and
        the scale keeps the full fan-in, as in the official code."""
        s = self.modulation(style)
        weight = self.weight
        if (in_ch is not None and in_ch != self.in_ch) or (out_ch is not None and out_ch != self.out_ch):
            in_ch, out_ch = in_ch or self.in_ch, out_ch or self.out_ch
            if in_ch > self.in_ch or out_ch > self.out_ch:
                raise ValueError(f"sub-channels {out_ch}x{in_ch} exceed the layer's {self.out_ch}x{self.in_ch}")
            weight, s = weight[:, :out_ch, :in_ch], s[:, :in_ch]
        weight = self.scale * weight * s[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
        return weight

    def _kernel_cache(self, o: int, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(kernel [o, c, k, k] channels-last, sum over the taps of its squares [o, c]) for the first o x c channels,
        cached until the weight changes (an optimiser step, EMA or load bumps its version)."""
        key = (o, c, tensor_key(self.weight))
        cache = self.__dict__.get("_kcache")
        if cache is None or cache[0] != key:
            w = self.weight.detach()[0, :o, :c]
            k = w.transpose(0, 1) if self.upsample else w  # conv_transpose2d takes [c, o, k, k]
            k = k.contiguous(memory_format=torch.channels_last)  # as oneDNN wants it for channels-last maps
            sq = w.pow(2).sum([2, 3])
            cache = [key, k, sq, None]
            self.__dict__["_kcache"] = cache
        return cache[1], cache[2]

    def _winograd_cache(self, o: int, c: int) -> torch.Tensor:
        """The cached kernel's Winograd F(2x2,3x3) transform [16, o, c], made on first use."""
        self._kernel_cache(o, c)
        cache = self.__dict__["_kcache"]
        if cache[3] is None:
            cache[3] = winograd_filter(cache[1])
        return cache[3]

    def _blur_taps(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(vertical, horizontal) taps of the upsampling blur where ``upconv3x3_paired_columns`` can compute this
        layer (3x3 kernel, separable 4x4 blur padded by 1: StyleGAN2's), else None; cached until the buffer
        changes."""
        k = self.blur.kernel
        ok = self.kernel_size == 3 and k.shape == (4, 4) and self.blur.pad == (1, 1)
        return derived(self, "_taps", tensor_key(k), lambda: separable_taps(k) if ok else None)

    def _winograd_pays(self, x: torch.Tensor, o: int) -> bool:
        """CPU, 3x3, no upsampling, both widths >= WINOGRAD_MIN_CHANNELS and at least 8x8 pixels: there the GEMMs
        dominate the transforms (measured on 2 AVX2 cores: 512 ch at 8-16 px and 256 at 32 px 1.2-1.4x faster,
        128 ch at 64 px and 512 at 4 px slower)."""
        return (self.fast and x.device.type == "cpu" and self.kernel_size == 3 and not self.upsample
                and min(x.shape[1], o) >= WINOGRAD_MIN_CHANNELS and x.shape[2] >= 8 and x.shape[3] >= 8)

    def _forward_input_modulated(self, x: torch.Tensor, style: torch.Tensor, o: int, out_gain: float = 1.0,
                                 bias: torch.Tensor | None = None) -> torch.Tensor:
        """Batch-1 inference where the kernel outweighs the maps (wide low-resolution layers): scale the input
        channels by the style and the output channels by the demodulation, convolve with the stored kernel.
        conv(x, scale * w * s) * d == conv(x * s, w) * (scale * d), with d from the cached per-(out, in) tap
        sums: the same function without building the modulated kernel every call."""
        c = x.shape[1]
        s = self.modulation(style)[0, :c]
        kernel, sq = self._kernel_cache(o, c)
        x = (x * s.reshape(1, -1, 1, 1)).contiguous(memory_format=torch.channels_last)
        gain = torch.full((o,), self.scale * out_gain, dtype=x.dtype, device=x.device)
        if self.demodulate:
            gain = gain * torch.rsqrt(self.scale ** 2 * (sq @ (s * s)) + 1e-8)
        if self.upsample:  # the blur is linear and per channel: it applies the gain and adds the bias
            return self.blur(F.conv_transpose2d(x, kernel, stride=2), gain, bias)
        if self._winograd_pays(x, o):
            out = conv3x3_winograd(x, self._winograd_cache(o, c))
        else:
            out = F.conv2d(x, kernel, padding=self.padding)
        out.mul_(gain.reshape(1, -1, 1, 1))
        return out if bias is None else out.add_(bias.reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, out_ch: int | None = None, out_gain: float = 1.0,
                bias: torch.Tensor | None = None) -> torch.Tensor:
        """``out_gain * conv + bias`` (bias [Cout] or None). ``out_ch``: use only the first output channels
        (default all); the input width follows ``x``. At batch-1 inference the gain and bias are folded into
        the conv (or the upsampling blur), saving two passes over the output."""
        b, c, h, w = x.shape
        if b == 1 and not torch.is_grad_enabled():
            o = self.out_ch if out_ch is None else out_ch
            if not 0 < o <= self.out_ch or c > self.in_ch:
                raise ValueError(f"sub-channels {o}x{c} exceed the layer's {self.out_ch}x{self.in_ch}")
            # element passes: about 4 over the kernel to modulate it, vs one over the input and one over the output
            if c * h * w + o * h * w * (4 if self.upsample else 1) < 4 * o * c * self.kernel_size ** 2:
                return self._forward_input_modulated(x, style, o, out_gain, bias)
        weight = self.modulated_weight(style, c, out_ch)
        o = weight.shape[1]
        k = self.kernel_size
        if b == 1 and not torch.is_grad_enabled():
            # inference, one sample: a plain conv on channels-last maps (the grouped form below would drop the
            # layout); few-channel high-resolution convs, their blur and the 1x1 ToRGB run 2-30x faster that way
            x = x.contiguous(memory_format=torch.channels_last)
            if self.upsample:
                if self.fast and x.device.type == "cpu" and o <= PAIRED_MAX_CHANNELS:
                    taps = self._blur_taps()
                    if taps is not None:
                        kernel = weight[0] if out_gain == 1.0 else weight[0] * out_gain
                        return upconv3x3_paired_columns(x, kernel, *taps, bias)
                out = F.conv_transpose2d(x, weight[0].transpose(0, 1), stride=2)
                gain = None if out_gain == 1.0 else out.new_full((o,), out_gain)
                return self.blur(out, gain, bias)
            kernel = weight[0] if out_gain == 1.0 else weight[0] * out_gain
            if self.fast and x.device.type == "cpu" and k == 3 and o <= PAIRED_MAX_CHANNELS and w % 2 == 0:
                return conv3x3_paired_columns(x, kernel, bias)
            return F.conv2d(x, kernel, bias, padding=self.padding)
        x = x.reshape(1, b * c, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * c, o, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=b)
            out = self.blur(out.reshape(b, o, out.shape[2], out.shape[3]))
        else:
            out = F.conv2d(x, weight.reshape(b * o, c, k, k), padding=self.padding, groups=b)
            out = out.reshape(b, o, out.shape[2], out.shape[3])
        if out_gain != 1.0:
            out = out * out_gain
        return out if bias is None else out + bias.reshape(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return (f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}")


NOISE_MODES = ("const", "random", "none")


class NoiseInjection(nn.Module):
    """x + strength * noise with a learned scalar strength; ``resolution`` adds a stored constant noise map
    (used with ``noise_mode='const'``), otherwise fresh N(0,1) noise is drawn per sample."""

    def __init__(self, resolution: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        if resolution is not None:
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        else:
            self.noise_const = None

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, noise_mode: str = "random") -> torch.Tensor:
        if noise is None:
            if noise_mode == "none":
                return x
            if noise_mode == "const" and self.noise_const is not None:
                noise = self.noise_const
            else:
                noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class StyledConv(nn.Module):
    """Modulated conv -> noise injection -> bias + leaky ReLU (gain sqrt(2))."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, style_dim: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), demodulate: bool = True,
                 resolution: int | None = None) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection(resolution)
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None,
                noise_mode: str = "random", out_ch: int | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            return self.activate(self.noise(self.conv(x, style, out_ch), noise, noise_mode))
        # inference: leaky ReLU is positively homogeneous, so sqrt(2) * lrelu(conv + noise + bias) ==
        # lrelu(sqrt(2) conv + sqrt(2) noise + sqrt(2) bias); the conv applies the gain and the bias, the rest
        # runs in place on its fresh output (same values up to rounding, two passes fewer)
        bias = self.activate.bias
        if bias is not None:
            bias = bias[:self.conv.out_ch if out_ch is None else out_ch] * SQRT2
        out = self.conv(x, style, out_ch, out_gain=SQRT2, bias=bias)
        nz = self.noise
        if noise is None and noise_mode != "none":
            noise = nz.noise_const if noise_mode == "const" and nz.noise_const is not None else \
                out.new_empty(out.shape[0], 1, out.shape[2], out.shape[3]).normal_()
        if noise is not None:
            add_pixel_map_(out, noise, nz.weight * SQRT2)
        return F.leaky_relu_(out, 0.2)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB without demodulation, plus bias; adds the 2x FIR-upsampled previous skip image."""

    def __init__(self, in_ch: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1),
                 out_ch: int = 3) -> None:
        super().__init__()
        self.upsample = Upsample(blur_kernel) if upsample else None
        self.conv = ModulatedConv2d(in_ch, out_ch, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if torch.is_grad_enabled():
            out = self.conv(x, style) + self.bias
            if skip is not None:
                out = out + (self.upsample(skip) if self.upsample is not None else skip)
            return out
        out = self.conv(x, style, bias=self.bias.reshape(-1))  # inference: the conv adds the bias
        if skip is None:
            return out
        if self.upsample is None:
            return out.add_(skip)
        # into the fresh upsampled skip (NCHW): the image keeps that layout, so no copy at the end
        return self.upsample(skip).add_(out)


class ConstantInput(nn.Module):
    """The learned 4x4 constant that starts the synthesis network."""

    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int, channels: int | None = None) -> torch.Tensor:
        """The constant repeated over the batch; ``channels`` keeps only the first ones (sub-generators)."""
        x = self.input if channels is None else self.input[:, :channels]
        return x.repeat(batch, 1, 1, 1)


# -- discriminator blocks -------------------------------------------------------------------------------------
class ConvLayer(nn.Module):
    """[blur + stride-2] equalised conv [-> bias + leaky ReLU]; the parts present are ``blur``, ``conv``, ``act``."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True) -> None:
        super().__init__()
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2, p // 2))
            stride, padding = 2, 0
        else:
            self.blur = None
            stride, padding = 1, kernel_size // 2
        self.conv = EqualConv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding,
                                bias=bias and not activate)
        self.act = FusedLeakyReLU(out_ch, bias=bias) if activate else None

    def parts(self) -> list[str]:
        """Names of the sub-layers present, in order (how sequential formats index them)."""
        return [n for n in ("blur", "conv", "act") if getattr(self, n) is not None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.blur is not None:
            x = self.blur(x)
        x = self.conv(x)
        return self.act(x) if self.act is not None else x


class ResBlock(nn.Module):
    """Residual down-block: 3x3 conv, blurred stride-2 3x3 conv, plus a blurred 1x1 skip; sum / sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, blur_kernel: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, blur_kernel=blur_kernel, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


def minibatch_stddev(x: torch.Tensor, group_size: int = 4, num_features: int = 1) -> torch.Tensor:
    """Append the std over groups of samples (averaged over channels and pixels) as ``num_features`` maps."""
    b, c, h, w = x.shape
    g = min(b, group_size)
    if b % g:
        raise ValueError(f"minibatch stddev: batch {b} is not divisible by the group size {g}")
    y = x.reshape(g, -1, num_features, c // num_features, h, w)
    y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
    y = y.mean([2, 3, 4], keepdim=True).squeeze(2)
    y = y.repeat(g, 1, h, w)
    return torch.cat([x, y], 1)
