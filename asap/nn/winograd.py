"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolution (Lavin & Gray, "Fast Algorithms for Convolutional Neural
Networks", 2016).

A 3x3, stride-1 convolution computed on overlapping input tiles: after the input transform B^T d B and the
(precomputed) filter transform G g G^T, each tile position is one GEMM over channels, and A^T m A maps the products
back to an output tile.
- F(2x2, 3x3): 4x4 tiles, 16 instead of 36 multiplies per 2x2 output (2.25x fewer MACs). The transforms only add,
  subtract and halve, so float32 results match direct convolution to rounding (~1e-7 relative). It pays off on CPU
  for wide layers at small spatial size (ASAPNet's 1024-channel low-res stream), where the GEMMs dominate. Below
  ONEDNN_MIN_TILES tiles the transforms run as two GEMMs by kron(B^T, B^T) and kron(A^T, A^T), as for F(4x4);
  above, as slab additions.
- F(4x4, 3x3): 6x6 tiles, 36 instead of 144 multiplies per 4x4 output (4x fewer). Its interpolation points are
  0, 1, -1, 2, -1/2 and infinity: the data and output transforms then have dyadic (exact) entries, and the float32
  error is 1-5e-6 of the output's scale (2-3x oneDNN's direct convolution on VGG-sized layers, up to 10x on thin
  ones; the textbook points 0, +-1, +-2 gave 2.6x more): ample for a loss network, not bit-level parity. With
  batched maps (FastGAN's LPIPS at batch 16-24, 128-512 channels) it is 1.1-1.4x faster than F(2x2, 3x3) on 2 CPU
  cores, and faster than the direct conv from 128 channels on.
Elsewhere the direct convolution is faster.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

ONEDNN_MIN_TILES = 1024  # measured on 2 cores: faster from 1536 tiles on, slower at 384 (and 256 with 1024 channels)
TILES = (2, 4)  # output tile sides: F(2x2, 3x3) and F(4x4, 3x3)

# F(4x4, 3x3) at the points (0, 1, -1, 2, -1/2, inf): A^T [4, 6], G [6, 3], B^T [6, 6]; A^T [G g] * [B^T d] gives
# the 3-tap correlation of d (exactness is checked in float64 by the tests)
_AT4 = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -0.5, 0), (0, 1, 1, 4, 0.25, 0), (0, 1, -1, 8, -0.125, 1))
_G4 = ((1, 0, 0), (-1 / 3, -1 / 3, -1 / 3), (1 / 3, -1 / 3, 1 / 3), (1 / 15, 2 / 15, 4 / 15),
       (-16 / 15, 8 / 15, -4 / 15), (0, 0, 1))
_BT4 = ((1, 1.5, -2, -1.5, 1, 0), (0, -1, -2.5, -0.5, 1, 0), (0, 1, 0.5, -2.5, 1, 0), (0, -0.5, -1, 0.5, 1, 0),
        (0, 2, -1, -2, 1, 0), (0, 1, 1.5, -2, -1.5, 1))
# F(2x2, 3x3): B^T [4, 4] and A^T [2, 4] (G is applied by winograd_filter)
_BT2 = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
_AT2 = ((1, 1, 1, 0), (0, 1, -1, -1))


def _g_rows(g0: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor) -> list[torch.Tensor]:
    """One axis of G g G^T: G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]] (halving is exact)."""
    return [g0, (g0 + g1 + g2) * 0.5, (g0 - g1 + g2) * 0.5, g2]


def winograd_filter(weight: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """[O, I, 3, 3] filter -> transformed filter U = G g G^T, in the weight's dtype: [16, O, I] for F(2x2, 3x3)
    (``tile=2``) or [36, O, I] for F(4x4, 3x3) (``tile=4``), one [O, I] matrix per tile position (the layout of a
    1x1 convolution's weight). ``conv3x3_winograd`` tells the two apart by that first size.

    F(2x2) works on [O, I] slabs of the filter (one transpose, then additions), so transforming a 1024x1024 filter
    takes tens of milliseconds; F(4x4) is one float64 contraction, rounded once. Done once per weight by the
    callers' caches."""
    if weight.dim() != 4 or weight.shape[-2:] != (3, 3):
        raise ValueError(f"Winograd needs a [O,I,3,3] filter, got {tuple(weight.shape)}")
    if tile not in TILES:
        raise ValueError(f"Winograd output tile must be one of {TILES}, got {tile}")
    if tile == 4:
        g = torch.tensor(_G4, dtype=torch.float64, device=weight.device)
        u = torch.einsum("ak,oikl,bl->aboi", g, weight.detach().double(), g)
        return u.reshape(36, weight.shape[0], weight.shape[1]).to(weight.dtype).contiguous()
    g = weight.detach().permute(2, 3, 0, 1).contiguous()  # [3, 3, O, I]
    rows = [_g_rows(g[0, j], g[1, j], g[2, j]) for j in range(3)]  # rows[j][a]: transformed along the first axis
    u = weight.new_empty(16, weight.shape[0], weight.shape[1])
    for a in range(4):
        for b, v in enumerate(_g_rows(rows[0][a], rows[1][a], rows[2][a])):
            u[4 * a + b] = v
    return u


def _tile_products(v: torch.Tensor, u: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
    """The GEMMs v[k] @ u[k]^T ([n, c] x [c, o] -> [n, o]), one per tile position (16 or 36). On CPU in float32
    with many tiles each runs as a 1x1 convolution of a channels-last [1, c, n, 1] view: oneDNN's kernels beat the
    BLAS batched matmul there by 10-35% (a whole F(2x2,3x3) conv at batch 24, 256 channels, 32 px: 92 vs 142 ms on
    2 AVX-512 cores). Below ONEDNN_MIN_TILES tiles oneDNN's per-call reorder of the filter costs more than it saves:
    one batched matmul."""
    n, c = v.shape[1:]
    o = u.shape[1]
    if v.device.type != "cpu" or v.dtype != torch.float32 or n < ONEDNN_MIN_TILES \
            or not torch.backends.mkldnn.is_available():
        return torch.bmm(v, u.transpose(1, 2))
    return [F.conv2d(v[k].view(1, n, 1, c).permute(0, 3, 1, 2), u[k].view(o, c, 1, 1)).permute(0, 2, 3, 1)
            .reshape(n, o) for k in range(v.shape[0])]


@functools.lru_cache(maxsize=None)
def _kron(rows: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """kron(M, M) for a transform matrix M given as rows: the 2-D transform of a flattened tile as one matrix, made
    once per dtype and device (read-only: callers only multiply by it; a normal tensor even when first made under
    inference mode, so autograd may use it later)."""
    with torch.inference_mode(False):
        m = torch.tensor(rows, dtype=torch.float64)
        return torch.kron(m, m).to(device=device, dtype=dtype)


def _conv3x3_winograd_kron(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None, m: int) -> torch.Tensor:
    """F(m x m, 3x3) with m = 4, or m = 2 on few tiles: gather the (m+2)x(m+2) tiles (stride m) of the padded NHWC
    map as [(m+2)^2, tiles * C], transform them with one GEMM by kron(B^T, B^T), the channel GEMMs, one GEMM by
    kron(A^T, A^T) back to m x m tiles, and one copy into the channels-last output. A handful of large ops instead of
    dozens of small ones: for F(2x2) on few tiles (StyleGAN2's 512-wide 8 and 16 px layers) 0.3-0.5 ms of 3-6 ms
    per conv."""
    b, c, h, w = x.shape
    o, r = u.shape[1], m + 2
    bt, at = (_BT4, _AT4) if m == 4 else (_BT2, _AT2)
    th, tw = (h + m - 1) // m, (w + m - 1) // m
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + m * tw - w, 1, 1 + m * th - h)).contiguous()
    sb, sh, sw, _ = xp.stride()
    n = b * th * tw
    d = xp.as_strided((r, r, b, th, tw, c), (sh, sw, sb, m * sh, m * sw, 1)).reshape(r * r, n * c)
    v = torch.mm(_kron(bt, x.dtype, x.device), d).view(r * r, n, c)
    prods = _tile_products(v, u)
    prods = torch.stack(prods) if isinstance(prods, list) else prods
    y = torch.mm(_kron(at, x.dtype, x.device), prods.view(r * r, n * o)).view(m, m, b, th, tw, o)
    out = torch.empty(b, o, m * th, m * tw, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    out.permute(0, 2, 3, 1).view(b, th, m, tw, m, o).copy_(y.permute(2, 3, 0, 4, 1, 5))
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out if (m * th, m * tw) == (h, w) else out[..., :h, :w]


def conv3x3_winograd(x: torch.Tensor, u: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Same result as ``F.conv2d(x, w, bias, padding=1)`` for u = winograd_filter(w, tile); x [B, I, H, W]; the
    tile follows from u ([16, O, I]: F(2x2, 3x3), [36, O, I]: F(4x4, 3x3)).

    Works channels-last throughout (every transform term is a [B, tiles_y, tiles_x, C] slab with contiguous
    channels) and returns a channels-last tensor, so a chain of these convs never transposes in between."""
    b, c, h, w = x.shape
    if u.dim() != 3 or u.shape[0] not in (16, 36) or u.shape[2] != c:
        raise ValueError(f"transformed filter {tuple(u.shape)} does not take {c} input channels")
    if u.shape[0] == 36:
        return _conv3x3_winograd_kron(x, u, bias, 4)
    o = u.shape[1]
    th, tw = (h + 1) // 2, (w + 1) // 2
    if b * th * tw < ONEDNN_MIN_TILES:  # few tiles: per-op overhead dominates the slab form below
        return _conv3x3_winograd_kron(x, u, bias, 2)
    # zero padding 1 (the conv's), plus one more row/column on odd sizes so whole 2x2 output tiles cover it
    xp = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1 + 2 * tw - w, 1, 1 + 2 * th - h))  # [b, h+2, w+2, c]

    def d(i: int, j: int) -> torch.Tensor:  # input tile element (i, j) of every tile: [b, th, tw, c]
        return xp[:, i:i + 2 * th:2, j:j + 2 * tw:2]

    # V = B^T d B, B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]; rows first, then columns
    rows = [[d(0, j) - d(2, j) for j in range(4)], [d(1, j) + d(2, j) for j in range(4)],
            [d(2, j) - d(1, j) for j in range(4)], [d(1, j) - d(3, j) for j in range(4)]]
    v = x.new_empty(16, b, th, tw, c)
    for i, r in enumerate(rows):
        torch.sub(r[0], r[2], out=v[4 * i])
        torch.add(r[1], r[2], out=v[4 * i + 1])
        torch.sub(r[2], r[1], out=v[4 * i + 2])
        torch.sub(r[1], r[3], out=v[4 * i + 3])
    prods = _tile_products(v.view(16, b * th * tw, c), u)
    m = [[prods[4 * i + j].view(b, th, tw, o) for j in range(4)] for i in range(4)]
    # Y = A^T m A, A^T = [[1,1,1,0],[0,1,-1,-1]]
    s = [[m[0][j] + m[1][j] + m[2][j] for j in range(4)], [m[1][j] - m[2][j] - m[3][j] for j in range(4)]]
    out = torch.empty(b, o, 2 * th, 2 * tw, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
    y = out.permute(0, 2, 3, 1)  # [b, H, W, o] view of the channels-last output
    for i in range(2):
        y[:, i::2, 0::2] = s[i][0] + s[i][1] + s[i][2]
        y[:, i::2, 1::2] = s[i][1] - s[i][2] - s[i][3]
    if bias is not None:
        y += bias
    return out if (2 * th, 2 * tw) == (h, w) else out[..., :h, :w]
