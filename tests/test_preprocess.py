"""One-hot, instance-edge and positional-encoding tensors on hand-made inputs."""
from __future__ import annotations

import math

import pytest
import torch

from asap.data.preprocess import SemanticSpec, instance_edges, one_hot, semantic_input
from asap.errors import AsapError
from asap.nn.positional import cosine_encoding, cosine_encoding_channels


def test_one_hot_values():
    label = torch.tensor([[[[0, 2], [1, 2]]]])
    oh = one_hot(label, 3)
    assert oh.shape == (1, 3, 2, 2)
    assert torch.equal(oh[0, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert torch.equal(oh[0, 2], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(oh.sum(1), torch.ones(1, 2, 2))


def test_instance_edges_mark_both_sides_of_a_boundary():
    inst = torch.tensor([[[[1, 1, 2, 2],
                           [1, 1, 2, 2],
                           [3, 3, 3, 3]]]])
    e = instance_edges(inst)[0, 0]
    expected = torch.tensor([[0, 1, 1, 0],
                             [1, 1, 1, 1],
                             [1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(e, expected)


def test_semantic_input_layout_and_dontcare():
    spec = SemanticSpec(label_nc=2, contain_dontcare_label=True, instance_edge=True)
    label = torch.tensor([[[[0, 1, 2]]]])  # id 2 = dontcare
    inst = torch.tensor([[[[5, 5, 6]]]])
    x = semantic_input(label, inst, spec)
    assert x.shape == (1, 4, 1, 3)
    assert torch.equal(x[0, :, 0], torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 1]], dtype=torch.float32))
    with pytest.raises(AsapError, match="label id 3 is outside 0..2"):
        semantic_input(torch.tensor([[[[3]]]]), inst[..., :1], spec)
    with pytest.raises(AsapError, match="needs an instance map"):
        semantic_input(label, None, spec)


def test_cosine_encoding_values():
    pe = cosine_encoding(4, 8, 4)
    assert pe.shape == (1, cosine_encoding_channels(4), 4, 8) == (1, 8, 4, 8)
    x = torch.arange(8.0)
    assert torch.allclose(pe[0, 0, 2], torch.cos(2 * math.pi * (x % 4) / 4), atol=1e-6)
    assert torch.allclose(pe[0, 1, 3], torch.sin(2 * math.pi * (x % 4) / 4), atol=1e-6)
    y = torch.arange(4.0)
    assert torch.allclose(pe[0, 2, :, 5], torch.cos(2 * math.pi * (y % 4) / 4), atol=1e-6)
    # second period (2): cos(pi * (x mod 2)) = +1, -1, +1, ...
    assert torch.allclose(pe[0, 4, 0], torch.tensor([1.0, -1, 1, -1, 1, -1, 1, -1]), atol=1e-6)
    assert torch.allclose(pe[0, 7, :, 0], torch.zeros(4), atol=1e-6)
    with pytest.raises(ValueError, match="power of two"):
        cosine_encoding(4, 4, 6)
