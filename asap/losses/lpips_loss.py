"""LPIPS as a training loss against constant targets, from the ``lpips`` package's own network and linear heads.

The same value as ``lpips.LPIPS(x, y)`` in eval mode (v0.1: scaling layer, backbone, unit-normalised features, squared
difference weighted by the linear heads, spatial mean), computed for training:
- the targets' features are computed once without a graph and can be shared: FastGAN compares two decoders to the
  same 128 px real image, so its three LPIPS terms need two target passes, not three;
- each layer's distance is one autograd node with a hand-written backward. The library's chain (pow, sum, sqrt,
  add, div for both inputs, sub, pow, a 1-output 1x1 convolution, mean, and the backward of each) makes about
  twenty full passes over the largest activation ([3B, 64, 128, 128] in FastGAN); this makes about a dozen, and
  the 1-channel convolution, slow in oneDNN, becomes a reduction over channels.

Gradient of the per-pixel distance d = sum_c w_c (r f_c - m_c)^2, with r = 1 / (|f| + eps) and m the normalised
target: dd/df = 2 r [w * t - (r / |f|) (sum_c w_c t_c f_c) f], t = r f - m. At |f| = 0 (every channel of a pixel
zero after a ReLU) the second term is 0; the library's autograd gives NaN there.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from asap.nn.winograd import TILES, conv3x3_winograd, winograd_filter
from asap.utils.cache import derived, tensor_key
from asap.utils.layout import stored_nhwc

EPS = 1e-10  # lpips.normalize_tensor's


def _unit(f: torch.Tensor) -> torch.Tensor:
    return f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + EPS)


class _ChannelsLast(torch.autograd.Function):
    """x in channels-last layout; its gradient goes back in x's own layout, so the network that made x (FastGAN's
    decoders) runs its backward in the layout it was built for."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.channels_last = stored_nhwc(x)
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad.contiguous(memory_format=torch.channels_last if ctx.channels_last else torch.contiguous_format)


def _take(m: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``m.index_select(0, index)`` in m's memory layout; for channels-last m through its contiguous NHWC view
    (index_select on the permuted tensor is a plain row gather, ~6x faster than on the strided one)."""
    if stored_nhwc(m):
        return m.permute(0, 2, 3, 1).index_select(0, index).permute(0, 3, 1, 2)
    return m.index_select(0, index)


class _UnitDistance(torch.autograd.Function):
    """Per-sample spatial mean of sum_c w_c (f_c / (|f| + eps) - m_c)^2; m constant."""

    @staticmethod
    def forward(ctx, f: torch.Tensor, m: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        s = torch.linalg.vector_norm(f, dim=1, keepdim=True)
        r = 1.0 / (s + EPS)
        t = f * r
        t.sub_(m).square_()
        d = torch.einsum("bchw,c->b", t, w) / (f.shape[2] * f.shape[3])
        ctx.save_for_backward(f, m, w, s, r)
        return d

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        f, m, w, s, r = ctx.saved_tensors
        wt = f * r
        wt.sub_(m).mul_(w.view(1, -1, 1, 1))
        qf = torch.linalg.vecdot(wt, f, dim=1).unsqueeze(1)
        coef = torch.where(s > 0, qf * r / s.clamp_min(torch.finfo(s.dtype).tiny), torch.zeros_like(s))
        g = torch.addcmul(wt, f, coef, value=-1)
        g.mul_(r * (2.0 / (f.shape[2] * f.shape[3])) * grad.view(-1, 1, 1, 1))
        return g, None, None


class _FrozenWinograd(torch.autograd.Function):
    """3x3 stride-1 conv with a frozen kernel as Winograd (F(2x2, 3x3) or F(4x4, 3x3) by the filters' shape),
    forward and input gradient (the gradient of a padding-1 3x3 conv is the same conv with the kernel flipped and
    in/out swapped)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, u: torch.Tensor, u_back: torch.Tensor,  # type: ignore[override]
                bias: torch.Tensor | None) -> torch.Tensor:
        ctx.u_back = u_back
        y = conv3x3_winograd(x, u, bias)
        # odd sizes come back as a crop (a view), which the in-place ReLU after it may not modify
        return y if y._base is None else y.clone(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return conv3x3_winograd(grad, ctx.u_back), None, None, None


class FrozenConv3x3(nn.Module):
    """A frozen 3x3, stride-1, padding-1 ``nn.Conv2d`` run as Winograd F(tile x tile, 3x3) (``tile`` 4: 4x fewer
    multiplies, 2: 2.25x; pays off for wide layers on CPU); gradients flow to the input only. Filters are
    transformed once per weight version."""

    def __init__(self, conv: nn.Conv2d, tile: int = 4) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.stride != (1, 1) or conv.padding != (1, 1) or conv.groups != 1 \
                or conv.dilation != (1, 1):
            raise ValueError("FrozenConv3x3 takes a 3x3 stride-1 padding-1 convolution")
        if tile not in TILES:
            raise ValueError(f"Winograd output tile must be one of {TILES}, got {tile}")
        self.conv = conv
        self.tile = int(tile)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight.detach()
        forward, backward = derived(self, "_filters", (tensor_key(w), self.tile), lambda: (
            winograd_filter(w, self.tile), winograd_filter(w.flip(2, 3).transpose(0, 1), self.tile)))
        bias = None if self.conv.bias is None else self.conv.bias.detach()
        return _FrozenWinograd.apply(x, forward, backward, bias)

    def extra_repr(self) -> str:
        return f"tile={self.tile}"


def use_winograd(net: nn.Module, min_channels: int, tile: int = 4) -> int:
    """Swap every frozen 3x3 stride-1 conv of ``net`` with at least ``min_channels`` inputs for FrozenConv3x3
    (in place, F(tile x tile, 3x3)); returns how many were swapped."""
    swapped = 0
    for name, child in list(net.named_children()):
        if isinstance(child, nn.Conv2d) and child.kernel_size == (3, 3) and child.stride == (1, 1) \
                and child.padding == (1, 1) and child.groups == 1 and child.in_channels >= min_channels \
                and not child.weight.requires_grad:
            setattr(net, name, FrozenConv3x3(child, tile))
            swapped += 1
        else:
            swapped += use_winograd(child, min_channels, tile)
    return swapped


class LPIPSLoss(nn.Module):
    """Wraps an ``lpips.LPIPS`` (v0.1, linear heads): ``targets(y)`` once, then ``distance(x, targets, index)``.

    The LPIPS module's weights are used as they are (frozen); only the input ``x`` gets gradients. The backbone runs
    on channels-last maps where ``channels_last`` says so (default None: on CPU, where oneDNN's NHWC convolutions
    make FastGAN's three LPIPS passes ~12% faster, forward and input gradient; same values up to rounding)."""

    def __init__(self, model: nn.Module, channels_last: bool | None = None) -> None:
        super().__init__()
        self.channels_last = channels_last
        if not getattr(model, "lpips", False) or str(getattr(model, "version", "")) != "0.1":
            raise ValueError("LPIPSLoss needs an lpips.LPIPS v0.1 model with linear heads (lpips=True)")
        self.model = model

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.model.scaling_layer(x)
        if self.channels_last if self.channels_last is not None else x.device.type == "cpu":
            x = _ChannelsLast.apply(x)
        return list(self.model.net.forward(x))

    def _weights(self) -> list[torch.Tensor]:
        return [lin.model[-1].weight.reshape(-1) for lin in self.model.lins]

    @torch.no_grad()
    def targets(self, y: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised features of the constant images ``y``, one tensor per layer."""
        return [_unit(f) for f in self._features(y)]

    def distance(self, x: torch.Tensor, targets: Sequence[torch.Tensor],
                 index: torch.Tensor | None = None) -> torch.Tensor:
        """LPIPS(x[i], target[index[i]]) per sample, [B] (index None: target i for x[i])."""
        total = x.new_zeros(x.shape[0])
        for f, m, w in zip(self._features(x), targets, self._weights()):
            if index is not None:
                m = _take(m, index)
            total = total + _UnitDistance.apply(f, m.to(f.dtype), w.to(f.dtype))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS(x, y) per sample, [B]; y is treated as a constant."""
        return self.distance(x, self.targets(y))
