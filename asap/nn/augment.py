"""Differentiable adaptive augmentation (ADA, Karras et al. 2020, "Training GANs with Limited Data").

Everything D sees (reals and fakes) goes through the same random "bgc" pipeline, so D cannot learn the
augmentations and they do not leak into G. The probability p is tuned during training by
asap.training.ada.AdaController. Images are NCHW, zero-centred (e.g. [-1, 1]). All randomness comes from
the global torch RNG on the images' device, so seeded runs are reproducible and resumable. Gradients (also second order, for R1 through the augmentation) reach the input.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
_K = 1.0 / math.sqrt(3.0)  # components of the unit luma axis v = (1, 1, 1) / sqrt(3)
_VV = torch.full((3, 3), 1.0 / 3.0)  # v v^T
_VX = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * _K  # cross-product matrix [v]_x


def _mat3(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Batch of 2D homogeneous matrices [[a, b, c], [d, e, f], [0, 0, 1]] from (B,) tensors."""
    z, o = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, c, d, e, f, z, z, o], dim=-1).view(-1, 3, 3)


def _scale2d(sx: Tensor, sy: Tensor) -> Tensor:
    z = torch.zeros_like(sx)
    return _mat3(sx, z, z, z, sy, z)


def _translate2d(tx: Tensor, ty: Tensor) -> Tensor:
    z, o = torch.zeros_like(tx), torch.ones_like(tx)
    return _mat3(o, z, tx, z, o, ty)


def _rotate2d(t: Tensor) -> Tensor:
    z, c, s = torch.zeros_like(t), torch.cos(t), torch.sin(t)
    return _mat3(c, -s, z, s, c, z)


def _embed4(lin: Tensor, off: Tensor | None = None) -> Tensor:
    """Homogeneous 4x4 colour matrices from (B,3,3) linear parts and optional (B,3) offsets."""
    m = torch.eye(4, dtype=lin.dtype, device=lin.device).repeat(lin.shape[0], 1, 1)
    m[:, :3, :3] = lin
    if off is not None:
        m[:, :3, 3] = off
    return m


class AdaptiveAugment(nn.Module):
    """ADA "bgc" augmentation: per-sample geometric + colour transforms applied with probability p.

    Each transform is applied to each sample independently with probability p * weight (a weight of 0
    disables it). ``p`` is a buffer; :class:`asap.training.ada.AdaController` tunes it during training.
    """

    def __init__(self, p: float = 0.0, xflip: float = 1, rotate90: float = 1, xint: float = 1, scale: float = 1,
                 rotate: float = 1, aniso: float = 1, xfrac: float = 1, brightness: float = 1, contrast: float = 1,
                 lumaflip: float = 1, hue: float = 1, saturation: float = 1) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"AdaptiveAugment: p must be in [0, 1], got {p}")
        weights = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                       xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                       saturation=saturation)
        for name, w in weights.items():
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"AdaptiveAugment: weight {name} must be a finite number >= 0, got {w}")
        self.weights = {k: float(v) for k, v in weights.items()}
        self.register_buffer("p", torch.tensor(float(p)))
        self._source: tuple[torch.Generator, Tensor, int] | None = None

    @property
    def probability(self) -> float:
        """Current augmentation probability p."""
        return float(self.p)

    def extra_repr(self) -> str:
        return f"p={self.probability:.4f}"

    def _draw(self, kind: str, n: int, *shape: int, high: int = 2, device: torch.device) -> Tensor:
        """n random rows from the global RNG, or, when forward() got a generator, rows ``rows`` of a draw made for
        ``total`` samples (so a sample's augmentation does not depend on how the batch is split)."""
        source = self._source
        if source is None:
            if kind == "randint":
                return torch.randint(high, (n, *shape), device=device)
            return (torch.rand if kind == "rand" else torch.randn)((n, *shape), device=device)
        gen, rows, total = source
        if kind == "randint":
            full = torch.randint(high, (total, *shape), generator=gen)
        else:
            full = (torch.rand if kind == "rand" else torch.randn)((total, *shape), generator=gen)
        return full[rows].to(device)

    def _on(self, name: str) -> bool:
        return self.weights[name] > 0

    def _gate(self, name: str, n: int, device: torch.device, p: float) -> Tensor:
        """(n,) bool mask: which samples get transform `name` (probability p * weight, clipped to 1)."""
        prob = min(p * self.weights[name], 1.0)
        if name == "rotate":  # pre- and post-rotation share the budget so that P(any rotation) = prob
            prob = 1.0 - math.sqrt(1.0 - prob)
        return self._draw("rand", n, device=device) < prob

    def _geometric(self, n: int, h: int, w: int, dev: torch.device, p: float) -> Tensor:
        """(n,3,3) sampling matrices (output -> input) in centred pixel coordinates."""
        on = self._on
        g = torch.eye(3, device=dev).repeat(n, 1, 1)
        if on("xflip"):
            i = self._draw("randint", n, high=2, device=dev) * self._gate("xflip", n, dev, p)
            g = g @ _scale2d(1 - 2 * i.float(), torch.ones(n, device=dev))
        if on("rotate90"):
            i = self._draw("randint", n, high=4, device=dev) * self._gate("rotate90", n, dev, p)
            g = g @ _rotate2d(-math.pi / 2 * i.float())
        if on("xint"):
            t = (self._draw("rand", n, 2, device=dev) * 2 - 1) * 0.125 * self._gate("xint", n, dev, p)[:, None]
            g = g @ _translate2d(torch.round(t[:, 0] * w), torch.round(t[:, 1] * h))
        if on("scale"):
            s = torch.exp2(self._draw("randn", n, device=dev) * 0.2 * self._gate("scale", n, dev, p))
            g = g @ _scale2d(s, s)
        if on("rotate"):
            g = g @ _rotate2d((self._draw("rand", n, device=dev) * 2 - 1) * math.pi * self._gate("rotate", n, dev, p))
        if on("aniso"):
            s = torch.exp2(self._draw("randn", n, device=dev) * 0.2 * self._gate("aniso", n, dev, p))
            g = g @ _scale2d(s, 1 / s)
        if on("xfrac"):
            t = self._draw("randn", n, 2, device=dev) * 0.125 * self._gate("xfrac", n, dev, p)[:, None]
            g = g @ _translate2d(t[:, 0] * w, t[:, 1] * h)
        if on("rotate"):
            g = g @ _rotate2d((self._draw("rand", n, device=dev) * 2 - 1) * math.pi * self._gate("rotate", n, dev, p))
        return g

    def _color(self, n: int, rgb: bool, dev: torch.device, p: float) -> Tensor:
        """(n,4,4) colour matrices; for non-RGB inputs only brightness/contrast (uniform over channels)."""
        on, eye3 = self._on, torch.eye(3, device=dev)
        c = torch.eye(4, device=dev).repeat(n, 1, 1)
        if on("brightness"):
            b = self._draw("randn", n, device=dev) * 0.2 * self._gate("brightness", n, dev, p)
            c = _embed4(eye3.expand(n, 3, 3), b[:, None].expand(n, 3)) @ c
        if on("contrast"):
            s = torch.exp2(self._draw("randn", n, device=dev) * 0.5 * self._gate("contrast", n, dev, p))
            c = _embed4(eye3 * s[:, None, None]) @ c
        if not rgb:
            return c
        vv, cross = _VV.to(dev), _VX.to(dev)
        if on("lumaflip"):
            i = self._draw("randint", n, high=2, device=dev) * self._gate("lumaflip", n, dev, p)
            c = _embed4(eye3 - 2 * vv * i.float()[:, None, None]) @ c
        if on("hue"):
            t = ((self._draw("rand", n, device=dev) * 2 - 1) * math.pi * self._gate("hue", n, dev, p))[:, None, None]
            c = _embed4(torch.cos(t) * eye3 + torch.sin(t) * cross + (1 - torch.cos(t)) * vv) @ c  # Rodrigues
        if on("saturation"):
            s = torch.exp2(self._draw("randn", n, device=dev) * self._gate("saturation", n, dev, p))[:, None, None]
            c = _embed4(vv + (eye3 - vv) * s) @ c
        return c

    def forward(self, images: Tensor, generator: torch.Generator | None = None, rows: Tensor | None = None,
                total: int | None = None) -> Tensor:
        """Augment a (B,C,H,W) batch; returns the input itself when p == 0.

        By default the random draws come from the global RNG. With a CPU ``generator``, sample i of the batch takes
        row ``rows[i]`` of draws made for ``total`` samples: its transform is then a function of (generator, its
        row) alone, the same whether the batch is processed whole or split over processes or micro-batches.
        """
        if images.dim() != 4:
            raise ValueError(f"AdaptiveAugment: expected images of shape (B, C, H, W), got {tuple(images.shape)}")
        p = self.probability
        if p <= 0.0:
            return images
        if generator is not None:
            rows = torch.arange(images.shape[0]) if rows is None else rows.cpu()
            if rows.numel() != images.shape[0]:
                raise ValueError(f"AdaptiveAugment: {rows.numel()} rows for a batch of {images.shape[0]}")
            self._source = (generator, rows, int(total) if total is not None else int(rows.max()) + 1)
        try:
            return self._augment(images, p)
        finally:
            self._source = None

    def _augment(self, images: Tensor, p: float) -> Tensor:
        n, ch, h, w = images.shape
        dev, x = images.device, images
        if any(map(self._on, GEOMETRIC)):
            g = self._geometric(n, h, w, dev, p)
            s = torch.diag(torch.tensor([w / 2.0, h / 2.0, 1.0], device=dev))
            s_inv = torch.diag(torch.tensor([2.0 / w, 2.0 / h, 1.0], device=dev))
            theta = (s_inv @ g @ s)[:, :2, :].to(x.dtype)  # centred pixels -> normalised coordinates
            grid = F.affine_grid(theta, [n, ch, h, w], align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if any(map(self._on, COLOR)):
            c = self._color(n, ch == 3, dev, p).to(x.dtype)
            if ch == 3:
                x = (c[:, :3, :3] @ x.reshape(n, 3, h * w) + c[:, :3, 3:]).reshape(n, 3, h, w)
            else:
                x = x * c[:, 0, 0].view(n, 1, 1, 1) + c[:, 0, 3].view(n, 1, 1, 1)
        return x
