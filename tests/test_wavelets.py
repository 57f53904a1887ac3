"""Haar DWT/IDWT: band layout and values on hand-made tensors, exact round trips, bad shapes."""
from __future__ import annotations

import pytest
import torch

from asap.nn.wavelets import dwt, idwt, idwt_by_adds


def test_band_layout_on_one_block():
    # one 2x2 block per channel: a b / c d
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    y = dwt(x).flatten().tolist()
    a, b, c, d = 1.0, 2.0, 3.0, 4.0
    assert y == [(a + b + c + d) / 2, (a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2]


def test_channel_order_low_bands_first_then_three_highs_per_channel():
    # channel k is a constant block with a top-bottom edge of height k+1
    x = torch.zeros(1, 3, 2, 2)
    for k in range(3):
        x[0, k, 0, :] = k + 1.0
    y = dwt(x)[0, :, 0, 0]
    torch.testing.assert_close(y[:3], torch.tensor([1.0, 2.0, 3.0]))          # low: (2*(k+1))/2
    for k in range(3):                                                            # channel 3 + 3k + band
        torch.testing.assert_close(y[3 + 3 * k: 6 + 3 * k], torch.tensor([k + 1.0, 0.0, 0.0]))


def test_inverse_of_a_single_coefficient():
    for band, pattern in enumerate(([1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1])):
        y = torch.zeros(1, 4, 1, 1)
        y[0, band] = 2.0
        torch.testing.assert_close(idwt(y).flatten(), torch.tensor(pattern, dtype=torch.float32))


def test_round_trips_and_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, 6, generator=g, dtype=torch.float64)
    torch.testing.assert_close(idwt(dwt(x)), x, rtol=0, atol=1e-12)
    y = torch.randn(2, 12, 4, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(dwt(idwt(y)), y, rtol=0, atol=1e-12)
    torch.testing.assert_close(dwt(x).pow(2).sum(), x.pow(2).sum())  # orthonormal
    torch.testing.assert_close(idwt_by_adds(y), idwt(y), rtol=0, atol=1e-12)
    assert dwt(x).shape == (2, 20, 4, 3) and idwt(y).shape == (2, 3, 8, 6)


def test_gradients_flow():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    idwt(dwt(x)).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones_like(x))


def test_bad_shapes():
    with pytest.raises(ValueError, match="even height and width"):
        dwt(torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match="divisible by 4"):
        idwt(torch.zeros(1, 6, 2, 2))
    with pytest.raises(ValueError, match="4-D"):
        dwt(torch.zeros(4, 4))
