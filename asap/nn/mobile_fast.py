"""Inference path of the MobileStyleGAN student (eval mode, no autograd): the same floats, fewer memory passes.

The depthwise and pointwise convs are memory-bound at high resolution, so this path (1) folds what does not depend
on the pixels into weights: the style modulation into the depthwise kernels, the style_inv demodulation into the
pointwise weights, the biases into the GEMM, the inverse Haar of the last head into its 1x1 weights; (2) keeps
features channels-last and runs every 1x1 conv as one GEMM (``addmm``) writing into a reused workspace, with noise,
leaky ReLU and the style scale of the IDWT upsampler applied in place; (3) orders the channels that feed an IDWT
upsampler band-major (a permutation folded into the previous pointwise weights), so the upsampler is eight strided
adds into the output; (4) skips the auxiliary wavelet heads. One sample at a time (batch items are independent).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from asap.nn.mobile import MobileStyledConv

# blocks whose input has fewer values run on one thread (up to 32 px at 512 channels)
SINGLE_THREAD_NUMEL = 1 << 18

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
        return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in
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
        head = layers[-1].to_img if layers else net.to_img1
        hm = haar_head_matrix(head.conv.weight.dtype).to(head.conv.weight.device)
        self.head_w = head.conv.weight.reshape(12, -1)          # [12, C]
        self.head_mix = hm                                       # [12, 12]
        self.head_bias = head.bias.reshape(12) @ hm              # [12]
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

    def _noise(self, x_hwc: torch.Tensor, module, noise: torch.Tensor | None, b: int, mode: str) -> None:
        strength = float(module.weight)
        if strength == 0 or (noise is None and mode == "none") or not (noise is None or torch.is_tensor(noise)):
            return
        h, w = x_hwc.shape[:2]
        if noise is None:
            n = torch.randn(h, w, 1, dtype=x_hwc.dtype, device=x_hwc.device)
        else:
            n = noise[b if noise.shape[0] > 1 else 0].reshape(h, w, 1).to(x_hwc.dtype)
        x_hwc.add_(n, alpha=strength)

    def _styled(self, x_nchw: torch.Tensor, style: torch.Tensor, idx: int, role: str,
                noise: torch.Tensor | None, b: int, mode: str) -> torch.Tensor:
        """Depthwise (style folded) -> GEMM (demodulation, bias folded) -> noise -> leaky ReLU; returns [H, W, C]."""
        mc, pw_t, bias, noise_mod = self.convs[idx]
        s = mc.modulation(style[None])[0] * mc.scale
        dw = mc.weight_dw * s[:, None, None, None]
        y = F.conv2d(x_nchw, dw, padding=mc.padding, groups=mc.in_ch)      # channels-last in and out
        h, w = y.shape[2:]
        y2 = y.permute(0, 2, 3, 1).reshape(h * w, mc.in_ch)                # a view (channels-last memory)
        out = self._buffer(role, (h * w, pw_t.shape[1]), y)
        torch.addmm(bias, y2, pw_t, out=out)
        hwc = out.view(h, w, -1)
        self._noise(hwc, noise_mod, noise, b, mode)
        F.leaky_relu_(hwc, 0.2)
        return hwc

    def _sign(self, like: torch.Tensor) -> torch.Tensor:
        key = ("sign", like.dtype, like.device)
        if key not in self.workspace:
            self.workspace[key] = torch.tensor([1.0, -1.0], dtype=like.dtype, device=like.device)
        return self.workspace[key]

    def _upsample(self, hwc: torch.Tensor, style: torch.Tensor, i: int) -> torch.Tensor:
        """Style scale (in place) and inverse Haar of band-major channels [H, W, 4C'] -> [1, C', 2H, 2W] (NHWC)."""
        up = self.net.layers[i].up
        m = (up.modulation(style[None])[0] * 0.5)[self.up_perm[i]]
        hwc.mul_(m)
        h, w, c4 = hwc.shape
        cp = c4 // 4
        bands = hwc.view(h, w, 4, cp)
        sign = self._sign(hwc)
        tmp = self._buffer(f"up{i}", (2, 2, h, w, cp), hwc)     # [pair (L+-H0 | H1+-H2), sign, H, W, C']
        pairs = bands.view(h, w, 2, 2, cp).permute(2, 3, 0, 1, 4)  # [pair, member, H, W, C']
        torch.addcmul(pairs[:, 0:1], pairs[:, 1:2], sign.view(1, 2, 1, 1, 1), out=tmp)
        out = self._buffer(f"upout{i}", (h, 2, w, 2, cp), hwc)   # rows a = first sign, columns b = second
        torch.addcmul(tmp[0].permute(1, 0, 2, 3)[:, :, :, None], tmp[1].permute(1, 0, 2, 3)[:, :, :, None],
                      sign.view(1, 1, 1, 2, 1), out=out)
        return out.view(1, 2 * h, 2 * w, cp).permute(0, 3, 1, 2)             # NCHW view, channels-last memory

    @torch.no_grad()
    def __call__(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None], mode: str) -> torch.Tensor:
        self.refresh()
        net = self.net
        threads = torch.get_num_threads()
        images = None
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
            self._noise(hwc, net.conv1.noise, noise[0], b, mode)
            F.leaky_relu_(hwc, 0.2)
            for i, _ in enumerate(net.layers):
                j = 3 * i + 1
                # small maps: one thread (fork/join and barrier waits would cost more than the work)
                torch.set_num_threads(1 if hwc.numel() < SINGLE_THREAD_NUMEL else threads)
                try:
                    x = self._upsample(hwc, style[j], i)
                    hwc = self._styled(x, style[j], 2 * i, "a", noise[2 * i + 1], b, mode)
                    x = hwc.view(1, *hwc.shape).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
                    hwc = self._styled(x, style[j + 1], 2 * i + 1, "b", noise[2 * i + 2], b, mode)
                finally:
                    torch.set_num_threads(threads)
            head = net.layers[-1].to_img if len(net.layers) else net.to_img1
            s = head.conv.modulation(style[3 * len(net.layers) if len(net.layers) else 1][None])[0] * head.conv.scale
            w_mix = (self.head_w * s[None, :]).t() @ self.head_mix            # [C, 12]: conv then inverse Haar
            h, w, _ = hwc.shape
            sub = torch.addmm(self.head_bias, hwc.reshape(h * w, -1), w_mix)  # [HW, 12] = (colour, a, b)
            if images is None:
                images = sub.new_empty(ws.shape[0], 3, 2 * h, 2 * w)
            images[b].view(3, h, 2, w, 2).copy_(sub.view(h, w, 3, 2, 2).permute(2, 0, 3, 1, 4))
        return images
