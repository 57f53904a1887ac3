"""Inference path of the MobileStyleGAN student (eval mode, no autograd): the same floats, fewer memory passes.

The depthwise and pointwise convs are memory-bound at high resolution, so this path (1) folds what does not depend
on the pixels into weights: the style modulation into the depthwise kernels, the style_inv demodulation into the
pointwise weights, the biases into the GEMM, the inverse Haar of the last head into its 1x1 weights; (2) keeps
features channels-last and runs every 1x1 conv as one GEMM (``addmm``) writing into a reused workspace, with noise,
leaky ReLU and the style scale of the IDWT upsampler applied in place; (3) orders the channels that feed an IDWT
upsampler band-major (a permutation folded into the previous pointwise weights), so the upsampler is two strided
multiply-adds into the output; (4) runs each large block (upsample, both convs and, last, the head) in horizontal
strips of about STRIP_BYTES so that its intermediates stay in cache (peak memory falls from ~140 MB to ~20 MB at
1024 px); (5) skips the auxiliary wavelet heads. One sample at a time (batch items are independent).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from asap.nn.mobile import MobileStyledConv
from asap.utils.cache import tensor_key

# blocks whose input has fewer values run on one thread (up to 32 px at 512 channels)
SINGLE_THREAD_NUMEL = 1 << 18
# blocks whose widest map exceeds STRIP_BYTES run in strips of about that size (cache-sized; measured on a
# 32 MiB-L3 EPYC, 2 threads), never thinner than MIN_STRIP_ROWS rows (per-op overhead)
STRIP_BYTES = 2 << 20
MIN_STRIP_ROWS = 8

# 12 wavelet channels (L_rgb, then H0,H1,H2 per colour) -> 3 colours x 2x2 sub-pixels, as one matrix [12, 12]
_SIGNS = {(0, 0): (1, 1, 1, 1), (0, 1): (1, 1, -1, -1), (1, 0): (1, -1, 1, -1), (1, 1): (1, -1, -1, 1)}


def haar_head_matrix(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[12, 12]: wavelet channel -> output (colour c, row phase a, column phase b) at index 4c + 2a + b."""
    m = torch.zeros(12, 12, dtype=dtype)
    for c in range(3):
        for (a, b), s in _SIGNS.items():
            o = 4 * c + 2 * a + b
            m[c, o] = 0.5 * s[0]
            for k in range(3):
                m[3 + 3 * c + k, o] = 0.5 * s[k + 1]
    return m


def band_major(c_out: int) -> torch.Tensor:
    """Permutation of an IDWT upsampler's input channels (low C', then 3 highs per channel) into band-major
    order [L(C'), H0(C'), H1(C'), H2(C')]: new index -> old index."""
    cp = c_out // 4
    return torch.tensor(list(range(cp)) + [cp + 3 * c + b for b in range(3) for c in range(cp)])


class FastMobileSynthesis:
    """Folded constants of a MobileSynthesisNetwork, rebuilt when any parameter or buffer changes."""

    def __init__(self, net) -> None:
        self.net = net
        self.key = None
        self.workspace: dict[tuple, torch.Tensor] = {}

    def _state_key(self) -> tuple:
        return tuple(tensor_key(t) for t in
                     list(self.net.parameters()) + list(self.net.buffers()))

    @torch.no_grad()
    def refresh(self) -> None:
        key = self._state_key()
        if key == self.key:
            return
        net = self.net
        layers = list(net.layers)
        self.convs = []
        for i, block in enumerate(layers):
            perm = band_major(layers[i + 1].up.in_ch) if i + 1 < len(layers) else None
            for conv in (block.conv1, block.conv2):
                last = conv is block.conv2
                self.convs.append(self._fold_dw(conv, perm if last else None))
        c = net.conv1.conv
        perm0 = band_major(layers[0].up.in_ch) if layers else None
        w = c.weight * c.demodulation()[:, None, None, None]
        bias = net.conv1.bias.reshape(-1)
        if perm0 is not None:
            w, bias = w[perm0], bias[perm0]
        self.conv1 = (w.contiguous(), bias.contiguous())
        self.up_perm = [band_major(b.up.in_ch) for b in layers]
        head = self.head = layers[-1].to_img if layers else net.to_img1
        self.head_style = 3 * len(layers) if layers else 1                # its W+ slot
        hm = haar_head_matrix(head.conv.weight.dtype).to(head.conv.weight.device)
        self.head_w = head.conv.weight.reshape(12, -1)          # [12, C]
        self.head_mix = hm                                       # [12, 12]
        self.head_bias = head.bias.reshape(12) @ hm              # [12] (after the inverse Haar)
        self.workspace.clear()
        self.key = key

    @staticmethod
    def _fold_dw(conv: MobileStyledConv, perm: torch.Tensor | None):
        mc = conv.conv
        pw = mc.weight_permute.reshape(mc.out_ch, mc.in_ch) * mc.demodulation()[:, None]
        bias = conv.bias.reshape(-1)
        if perm is not None:
            pw, bias = pw[perm], bias[perm]
        return mc, pw.t().contiguous(), bias.contiguous(), conv.noise

    def _buffer(self, role: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        key = (role, shape, like.dtype, like.device)
        buf = self.workspace.get(key)
        if buf is None:
            buf = self.workspace[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _noise_map(self, module, noise: torch.Tensor | None, b: int, mode: str, h: int, w: int,
                   like: torch.Tensor) -> torch.Tensor | None:
        """The scaled noise this layer adds, [h, w, 1], or None when it adds nothing."""
        strength = float(module.weight)
        if strength == 0 or (noise is None and mode == "none") or not (noise is None or torch.is_tensor(noise)):
            return None
        if noise is None:
            n = torch.randn(h, w, 1, dtype=like.dtype, device=like.device)
        else:
            n = noise[b if noise.shape[0] > 1 else 0].reshape(h, w, 1).to(like.dtype)
        return n * strength

    def _sign(self, like: torch.Tensor) -> torch.Tensor:
        key = ("sign", like.dtype, like.device)
        if key not in self.workspace:
            self.workspace[key] = torch.tensor([1.0, -1.0], dtype=like.dtype, device=like.device)
        return self.workspace[key]

    def _idwt_rows(self, bands_hwc: torch.Tensor, out_rows: torch.Tensor, i: int) -> None:
        """Inverse Haar of band-major rows [h, w, 4C'] into ``out_rows`` (contiguous [2h, 2w, C'])."""
        h, w, c4 = bands_hwc.shape
        cp = c4 // 4
        sign = self._sign(bands_hwc)
        tmp = self._buffer(f"idwt{i}", (2, 2, h, w, cp), bands_hwc)  # [pair (L+-H0 | H1+-H2), sign, H, W, C']
        pairs = bands_hwc.reshape(h, w, 2, 2, cp).permute(2, 3, 0, 1, 4)  # [pair, member, H, W, C']
        torch.addcmul(pairs[:, 0:1], pairs[:, 1:2], sign.view(1, 2, 1, 1, 1), out=tmp)
        out = out_rows.view(h, 2, w, 2, cp)                               # rows a = first sign, columns b = second
        low, high = (tmp[k].permute(1, 0, 2, 3)[:, :, :, None] for k in (0, 1))
        torch.addcmul(low, high, sign.view(1, 1, 1, 2, 1), out=out)

    def strip_rows(self, side: int, width: int) -> int:
        """Output rows per strip for a block of side ``side`` whose widest map has ``width`` channels: the whole
        map while it fits in STRIP_BYTES, else an even count whose strips fit (at least MIN_STRIP_ROWS)."""
        row_bytes = side * width * 4
        if side * row_bytes <= STRIP_BYTES:
            return side
        rows = max(MIN_STRIP_ROWS, STRIP_BYTES // row_bytes)
        return min(side, rows - rows % 2)

    def _block(self, hwc: torch.Tensor, style: torch.Tensor, i: int, noise: Sequence[torch.Tensor | None], b: int,
               mode: str, image: torch.Tensor | None) -> torch.Tensor | None:
        """Block i on band-major [h, w, 4C'] (scaled in place by the upsampler's style) -> [2h, 2w, C] features,
        or, with ``image`` ([3, 2S, 2S] of the last block), the picture through the folded head.

        The upsample -> conv1 -> conv2 (-> head) chain runs in horizontal strips of ``strip_rows`` rows so that
        every intermediate stays in cache: each strip recomputes a halo of ``p`` rows of conv1 and ``2p`` rows of
        the upsampler (p = kernel // 2) inside the picture, with zero rows beyond it (the convs' padding)."""
        net = self.net
        j = 3 * i + 1
        up = net.layers[i].up
        hwc.mul_((up.modulation(style[j][None])[0] * 0.5)[self.up_perm[i]])
        h, w, c4 = hwc.shape
        cp, side, wide = c4 // 4, 2 * h, 2 * w
        (mc1, pw1, b1, nm1), (mc2, pw2, b2, nm2) = self.convs[2 * i], self.convs[2 * i + 1]
        c1, c2 = pw1.shape[1], pw2.shape[1]
        p = mc1.padding
        dw1 = mc1.weight_dw * (mc1.modulation(style[j][None])[0] * mc1.scale)[:, None, None, None]
        dw2 = mc2.weight_dw * (mc2.modulation(style[j + 1][None])[0] * mc2.scale)[:, None, None, None]
        n1 = self._noise_map(nm1, noise[2 * i + 1], b, mode, side, wide, hwc)
        n2 = self._noise_map(nm2, noise[2 * i + 2], b, mode, side, wide, hwc)
        rows = self.strip_rows(side, max(cp, c1, c2))
        out = None if image is not None else self._buffer(f"out{i}", (side, wide, c2), hwc)
        if image is not None:
            head = self._head(style)
            image = image.view(3, side, 2, wide, 2)
        for r0 in range(0, side, rows):
            r1 = min(r0 + rows, side)
            n = r1 - r0
            # conv1 rows [q0, q1): the strip and its halo of p rows, clipped to the picture (zeros beyond)
            q0, q1 = max(r0 - p, 0), min(r1 + p, side)
            # upsampled rows [q0 - p, q1 + p), zeros outside the picture
            u = self._buffer(f"u{i}", (rows + 4 * p, wide, cp), hwc)[: q1 - q0 + 2 * p]
            a0, a1 = max(q0 - p, 0), min(q1 + p, side)
            lo, hi = a0 - (q0 - p), a1 - (q0 - p)
            u[:lo].zero_()
            u[hi:].zero_()
            self._idwt_rows(hwc[a0 // 2: a1 // 2], u[lo:hi], i)
            # conv1: depthwise (style folded), GEMM (demodulation, bias folded), noise, leaky ReLU
            y = F.conv2d(u.view(1, -1, wide, cp).permute(0, 3, 1, 2), dw1, padding=(0, p), groups=cp)
            t = self._buffer(f"t{i}", ((rows + 2 * p) * wide, c1), hwc)[: (n + 2 * p) * wide].view(n + 2 * p, wide, c1)
            lo, hi = q0 - (r0 - p), q1 - (r0 - p)                        # rows of t inside the picture
            inside = t[lo:hi]
            torch.addmm(b1, y.permute(0, 2, 3, 1).reshape(-1, cp), pw1, out=inside.view(-1, c1))
            if n1 is not None:
                inside.add_(n1[q0:q1])
            F.leaky_relu_(inside, 0.2)
            t[:lo].zero_()
            t[hi:].zero_()
            # conv2 on rows [r0, r1)
            y = F.conv2d(t.view(1, n + 2 * p, wide, c1).permute(0, 3, 1, 2), dw2, padding=(0, p), groups=c1)
            dst = out[r0:r1] if out is not None else self._buffer(f"s{i}", (rows, wide, c2), hwc)[:n]
            torch.addmm(b2, y.permute(0, 2, 3, 1).reshape(-1, c1), pw2, out=dst.view(n * wide, c2))
            if n2 is not None:
                dst.add_(n2[r0:r1])
            F.leaky_relu_(dst, 0.2)
            if image is not None:
                self._head_rows(dst, head, image[:, r0:r1])
        return out

    def _head(self, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last wavelet head's styled 1x1 weights times the inverse Haar, transposed [12, C], and its bias
        [12, 1]; output row 4c + 2a + b is colour c at sub-pixel (a, b)."""
        conv = self.head.conv
        s = conv.modulation(style[self.head_style][None])[0] * conv.scale
        return (self.head_mix.t() @ (self.head_w * s[None, :])).contiguous(), self.head_bias[:, None]

    @staticmethod
    def _head_rows(x_hwc: torch.Tensor, head: tuple[torch.Tensor, torch.Tensor], image_rows: torch.Tensor) -> None:
        """Features [n, W, C] -> picture rows ``image_rows`` [3, n, 2, W, 2]. The GEMM is computed transposed
        ([12, n*W]) so that the sub-pixel interleave copies runs of W values instead of pairs."""
        n, w, c = x_hwc.shape
        sub = torch.addmm(head[1], head[0], x_hwc.reshape(n * w, c).t())   # [(colour, a, b), (row, column)]
        image_rows.copy_(sub.view(3, 2, 2, n, w).permute(0, 3, 1, 4, 2))

    @torch.no_grad()
    def __call__(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None], mode: str) -> torch.Tensor:
        self.refresh()
        net = self.net
        threads = torch.get_num_threads()
        images = ws.new_empty(ws.shape[0], 3, self.net.size, self.net.size)
        for b in range(ws.shape[0]):
            style = ws[b]
            c = net.conv1.conv
            w0, b0 = self.conv1
            s = c.modulation(style[0][None])[0] * c.scale
            torch.set_num_threads(1)  # 4x4
            try:
                x = F.conv2d(net.input.input * s[None, :, None, None], w0, b0, padding=c.padding)
            finally:
                torch.set_num_threads(threads)
            hwc = x[0].permute(1, 2, 0).contiguous()
            n0 = self._noise_map(net.conv1.noise, noise[0], b, mode, *hwc.shape[:2], hwc)
            if n0 is not None:
                hwc.add_(n0)
            F.leaky_relu_(hwc, 0.2)
            if not len(net.layers):
                h, w, _ = hwc.shape
                self._head_rows(hwc, self._head(style), images[b].view(3, h, 2, w, 2))
                continue
            for i in range(len(net.layers)):
                # small maps: one thread (fork/join and barrier waits would cost more than the work)
                torch.set_num_threads(1 if hwc.numel() < SINGLE_THREAD_NUMEL else threads)
                try:
                    last = i == len(net.layers) - 1
                    hwc = self._block(hwc, style, i, noise, b, mode, images[b] if last else None)
                finally:
                    torch.set_num_threads(threads)
        return images
