"""Tests of asap.nn.augment.AdaptiveAugment: transforms, determinism, gradients and the adaptive p controller."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asap.nn.augment import COLOR, GEOMETRIC, AdaptiveAugment

ALL = GEOMETRIC + COLOR


def only(*names: str, **kw) -> AdaptiveAugment:
    """An augmenter with p=1 (unless given) and every transform but `names` disabled."""
    kw.setdefault("p", 1.0)
    return AdaptiveAugment(**kw, **{k: (1.0 if k in names else 0.0) for k in ALL})


def images(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_p_zero_is_identity():
    x = images(5, 3, 16, 16)
    aug = AdaptiveAugment(p=0.0)
    y = aug(x)
    assert y is x
    assert torch.equal(y, x)


def test_xflip_only_gives_input_or_mirror():
    torch.manual_seed(1)
    x = images(64, 3, 12, 10)
    y = only("xflip")(x)
    err_id = (y - x).abs().flatten(1).amax(1)
    err_flip = (y - x.flip(3)).abs().flatten(1).amax(1)
    assert bool(((err_id < 1e-5) | (err_flip < 1e-5)).all())
    assert int((err_id < 1e-5).sum()) > 0 and int((err_flip < 1e-5).sum()) > 0


@pytest.mark.parametrize("name", ["rotate90", "xint"])
def test_pixel_exact_geometry_only_moves_pixels(name):
    """90° rotations and integer translations resample exactly on pixel centres: values are the input's."""
    torch.manual_seed(2)
    x = images(8, 1, 16, 16)
    y = only(name)(x)
    for xi, yi in zip(x, y):
        d = (yi.flatten()[:, None] - xi.flatten()[None, :]).abs().amin(1)
        assert float(d.max()) < 1e-5
    assert not torch.allclose(y, x)


def test_brightness_only_adds_per_sample_constant():
    torch.manual_seed(3)
    x = images(16, 3, 9, 7)
    d = only("brightness")(x) - x
    assert torch.allclose(d, d.mean(dim=(1, 2, 3), keepdim=True).expand_as(d), atol=1e-5)
    assert float(d.abs().amax()) > 0


def test_hue_and_saturation_keep_luma():
    torch.manual_seed(4)
    x = images(8, 3, 8, 8)
    y = only("hue", "saturation")(x)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    assert not torch.allclose(y, x, atol=1e-3)


@pytest.mark.parametrize("shape", [(3, 3, 17, 23), (2, 1, 15, 9), (1, 4, 8, 8), (2, 3, 1, 5)])
def test_shape_and_dtype_preserved(shape):
    torch.manual_seed(5)
    x = images(*shape)
    y = AdaptiveAugment(p=0.8)(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert bool(torch.isfinite(y).all())


def test_seeded_reproducibility():
    x = images(6, 3, 16, 16)
    aug = AdaptiveAugment(p=0.7)
    torch.manual_seed(123)
    a = aug(x)
    torch.manual_seed(123)
    b = aug(x)
    torch.manual_seed(124)
    c = aug(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_double_backward_r1_through_augmentation():
    torch.manual_seed(6)
    D = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Softplus(), nn.Conv2d(4, 1, 3), nn.Flatten(), nn.Linear(36, 1))
    x = images(4, 3, 8, 8).requires_grad_(True)
    aug = AdaptiveAugment(p=1.0)
    g, = torch.autograd.grad(D(aug(x)).sum(), x, create_graph=True)
    assert g.shape == x.shape and float(g.abs().sum()) > 0
    g.pow(2).sum().backward()
    # biases after the last nonlinearity cannot affect dD/dx; every other parameter must get a gradient
    grads = [p.grad for n, p in D.named_parameters() if n not in ("2.bias", "4.bias")]
    assert all(gr is not None and bool(torch.isfinite(gr).all()) for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0


@pytest.mark.parametrize("kwargs,name", [
    (dict(p=1.5), "p"), (dict(p=-0.1), "p"), (dict(hue=-1.0), "hue"), (dict(xflip=float("nan")), "xflip"),
])
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        AdaptiveAugment(**kwargs)


def test_keyed_draws_do_not_depend_on_how_the_batch_is_split():
    """With a generator, sample i's transform is row i of draws for the whole batch: two halves augmented
    separately equal the whole batch augmented at once (DDP and accumulation see the same augmentations)."""
    x = images(6, 3, 8, 8)
    aug = AdaptiveAugment(p=0.9)
    whole = aug(x, generator=torch.Generator().manual_seed(3), rows=torch.arange(6), total=6)
    first = aug(x[:3], generator=torch.Generator().manual_seed(3), rows=torch.arange(3), total=6)
    second = aug(x[3:], generator=torch.Generator().manual_seed(3), rows=torch.arange(3, 6), total=6)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-6)
    assert not torch.allclose(whole, x, atol=1e-3)
    state = torch.get_rng_state()
    aug(x, generator=torch.Generator().manual_seed(4), rows=torch.arange(6), total=6)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is not touched
