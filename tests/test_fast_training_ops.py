"""The exact-but-cheaper training ops: fused nearest-x2 + 3x3 conv, the LPIPS loss node, the allocator switch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from asap.losses.lpips_loss import LPIPSLoss, _UnitDistance
from asap.metrics.lpips import build_lpips
from asap.models.fastgan import FastGANDiscriminator, FastGANGenerator
from asap.nn.fastgan import UpBlockComp, up_block, upsample_conv3x3

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 1, 1), (3, 4, 5, 2)])
def test_upsample_conv3x3_equals_nearest_upsample_then_conv_in_float64(shape):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(6, shape[1], 3, 3, generator=g, dtype=torch.float64)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1)
    got = upsample_conv3x3(x, w)
    assert got.shape == ref.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    # both gradients (input and weight), numerically
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(upsample_conv3x3, (x, w))


def test_upsample_conv3x3_gradients_write_every_element():
    """The phase-map gradient is allocated empty and only its unread border is zeroed: with uninitialised memory
    filled with NaN, the input and weight gradients must still equal the plain layers' exactly-summed ones."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    up = torch.randn(2, 4, 8, 10, generator=g, dtype=torch.float64)
    ref = torch.autograd.grad(F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1), (x, w), up)
    was = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        got = torch.autograd.grad(upsample_conv3x3(x, w), (x, w), up)
    finally:
        torch.use_deterministic_algorithms(was[0])
        torch.utils.deterministic.fill_uninitialized_memory = was[1]
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("train", [False, True])
def test_fused_up_blocks_match_the_plain_layers_and_update_spectral_norm_alike(train):
    torch.manual_seed(0)
    for make in (lambda: up_block(8, 6), lambda: UpBlockComp(8, 6)):
        fused, plain = make().double().train(train), make().double().train(train)
        plain.load_state_dict(fused.state_dict())
        plain.fused = False
        x = torch.randn(3, 8, 5, 6, dtype=torch.float64)
        args = {} if isinstance(fused, UpBlockComp) is False else \
            {"noise": (torch.randn(1, 1, 10, 12, dtype=torch.float64), torch.randn(1, 1, 10, 12, dtype=torch.float64))}
        a, b = fused(x, **args), plain(x, **args)
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
        for k, v in fused.state_dict().items():  # power iteration (train) and BatchNorm running stats alike
            torch.testing.assert_close(v, plain.state_dict()[k], rtol=1e-10, atol=1e-12, msg=k)


def test_fastgan_networks_switch_every_up_block_and_keep_their_outputs():
    torch.manual_seed(0)
    # float64: an untrained FastGAN in eval mode has activations up to ~1e11, which float32 rounding would blur
    g = FastGANGenerator(ngf=8, nz=16, im_size=256).double().eval()
    d = FastGANDiscriminator(ndf=8, im_size=256).double().eval()
    z = torch.randn(2, 16, dtype=torch.float64)
    noise = [torch.randn(2, *s[1:], dtype=torch.float64) for s in g.noise_shapes()]
    x = torch.randn(2, 3, 256, 256, dtype=torch.float64)
    with torch.no_grad():
        fused = (g(z, noise=noise), *d(x, part=1)[1])
        assert g.fast_inference and d.fast_inference
        g.fast_inference = d.fast_inference = False
        assert not g.fast_inference and not d.fast_inference
        plain = (g(z, noise=noise), *d(x, part=1)[1])
    for a, b in zip(fused, plain):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("channels_last", [None, False])
def test_lpips_loss_equals_the_library_value_and_gradient_in_float64(channels_last):
    torch.manual_seed(0)
    lib = build_lpips("alex", pretrained=False).double()
    loss = LPIPSLoss(lib, channels_last=channels_last)
    x = torch.randn(3, 3, 48, 40, dtype=torch.float64, requires_grad=True)
    # default on CPU: the backbone runs channels-last; False keeps the input's layout
    assert loss._features(x)[0].is_contiguous(memory_format=torch.channels_last) == (channels_last is None)
    y = torch.randn(3, 3, 48, 40, dtype=torch.float64)
    want = lib(x, y).reshape(-1)
    (g_want,) = torch.autograd.grad((want * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum(), x)
    got = loss(x, y)
    (g_got,) = torch.autograd.grad((got * torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)).sum(), x)
    assert got.shape == (3,) and (got > 0).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-14)
    # shared targets: index picks target i for each input
    t = loss.targets(y)
    got2 = loss.distance(torch.cat([x, x[:1]]), t, torch.tensor([0, 1, 2, 2]))
    torch.testing.assert_close(got2[:3], want.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(got2[3], lib(x[:1], y[2:3]).reshape(()), rtol=1e-12, atol=1e-14)


def test_lpips_layer_distance_gradcheck_and_zero_feature_pixels_stay_finite():
    g = torch.Generator().manual_seed(1)
    f = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    m = torch.randn(2, 5, 3, 4, generator=g, dtype=torch.float64)
    w = torch.rand(5, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: _UnitDistance.apply(f, m, w), (f,))
    f0 = f.detach().clone()
    f0[:, :, 1, 2] = 0  # a pixel where every channel is zero (after a ReLU)
    f0.requires_grad_(True)
    d = _UnitDistance.apply(f0, m, w)
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(f0.grad).all()
    # there the distance is sum_c w_c m_c^2 (the normalised feature is 0)
    per_pixel = (w.view(1, -1) * m[:, :, 1, 2] ** 2).sum(1)
    rest = (w.view(1, -1, 1, 1) * (f0.detach() / (f0.detach().norm(dim=1, keepdim=True) + 1e-10) - m) ** 2).sum(1)
    torch.testing.assert_close(d, rest.mean((1, 2)), rtol=1e-12, atol=1e-14)
    assert torch.allclose(rest[:, 1, 2], per_pixel)


def test_lpips_loss_refuses_a_model_without_linear_heads():
    lib = build_lpips("alex", pretrained=False)
    lib.lpips = False
    with pytest.raises(ValueError, match="v0.1 model with linear heads"):
        LPIPSLoss(lib)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_applies_once_and_leaves_a_user_malloc_setting_alone():
    code = ("import ctypes, torch; from asap.utils.allocator import keep_freed_memory as k; a = k(); b = k();"
            "x = torch.empty(64 << 20, dtype=torch.uint8); x.fill_(1); del x;"
            "y = torch.empty(64 << 20, dtype=torch.uint8); y.fill_(2); print(a, b, int(y.sum()) == 2 * (64 << 20))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "ASAP_NO_MALLOC_TUNING"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    glibc = subprocess.run(["ldd", "--version"], capture_output=True, text=True).stdout.lower()
    expected = "True True True" if ("glibc" in glibc or "gnu libc" in glibc) else "False False True"
    assert out.stdout.split("\n")[0] == expected
    for key, value in (("ASAP_NO_MALLOC_TUNING", "1"), ("MALLOC_ARENA_MAX", "2")):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**env, key: value}, timeout=120)
        assert out.returncode == 0 and out.stdout.split("\n")[0] == "False False True", (key, out.stderr)


@pytest.mark.parametrize("tile", [2, 4])
def test_frozen_winograd_conv_equals_the_conv_forward_and_input_gradient(tile):
    from asap.losses.lpips_loss import FrozenConv3x3

    torch.manual_seed(0)
    for bias in (True, False):
        conv = torch.nn.Conv2d(6, 5, 3, padding=1, bias=bias).double().requires_grad_(False)
        fast = FrozenConv3x3(conv, tile=tile)
        assert fast.tile == tile
        for h, w in ((8, 8), (7, 5), (10, 6)):  # sizes off the tile: whole tiles, cropped
            x = torch.randn(2, 6, h, w, dtype=torch.float64, requires_grad=True)
            g = torch.randn(2, 5, h, w, dtype=torch.float64)
            want = conv(x)
            (g_want,) = torch.autograd.grad(want, x, g)
            got = fast(x)
            (g_got,) = torch.autograd.grad(got, x, g)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
            # an in-place ReLU after it (as in VGG) is allowed and differentiates alike
            (g_relu,) = torch.autograd.grad(torch.relu_(fast(x)), x, g)
            torch.testing.assert_close(g_relu, torch.autograd.grad(torch.relu(conv(x)), x, g)[0], rtol=1e-12,
                                       atol=1e-12)
        with torch.no_grad():
            conv.weight.mul_(2)  # the cached transforms follow the weight
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="3x3 stride-1 padding-1"):
        FrozenConv3x3(torch.nn.Conv2d(4, 4, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match=r"tile must be one of \(2, 4\), got 8"):
        FrozenConv3x3(torch.nn.Conv2d(4, 4, 3, padding=1), tile=8)


def test_use_winograd_swaps_only_wide_frozen_3x3_convs_and_keeps_lpips():
    import copy

    from asap.losses.lpips_loss import FrozenConv3x3, use_winograd

    torch.manual_seed(0)
    lib = build_lpips("vgg", pretrained=False).double()
    fast = copy.deepcopy(lib)
    # VGG16 3x3 convs with >= 128 inputs: conv2_2, conv3_1..3_3, conv4_1..4_3, conv5_1..5_3
    assert use_winograd(fast.net, 128) == 10
    assert sum(isinstance(m, FrozenConv3x3) for m in fast.modules()) == 10
    assert {m.tile for m in fast.modules() if isinstance(m, FrozenConv3x3)} == {4}  # F(4x4, 3x3) by default
    trained = torch.nn.Sequential(torch.nn.Conv2d(256, 256, 3, padding=1))  # requires grad: left alone
    assert use_winograd(trained, 1) == 0
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    want = LPIPSLoss(lib)(x, y)
    (g_want,) = torch.autograd.grad(want.sum(), x)
    got = LPIPSLoss(fast)(x, y)
    (g_got,) = torch.autograd.grad(got.sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_got, g_want, rtol=1e-8, atol=1e-12)


def test_lpips_with_winograd_4x4_in_float32_is_as_close_to_float64_as_the_library():
    """F(4x4, 3x3) changes only float rounding: in float32 the LPIPS value and input gradient through it are as
    close to the float64 ones as the library's own float32 computation is."""
    import copy

    from asap.losses.lpips_loss import use_winograd

    torch.manual_seed(0)
    lib = build_lpips("vgg", pretrained=False)
    fast = copy.deepcopy(lib)
    assert use_winograd(fast.net, 128, tile=4) == 10
    x = (torch.rand(2, 3, 64, 64) * 2 - 1).requires_grad_()
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    x64 = x.detach().double().requires_grad_()
    exact = LPIPSLoss(copy.deepcopy(lib).double())(x64, y.double())
    (g_exact,) = torch.autograd.grad(exact.sum(), x64)
    errors = {}
    for name, net in (("library", lib), ("winograd", fast)):
        value = LPIPSLoss(net)(x, y)
        (grad,) = torch.autograd.grad(value.sum(), x)
        assert ((value.double() - exact).abs() / exact).max() < 1e-6
        errors[name] = ((grad.double() - g_exact).norm() / g_exact.norm()).item()
    assert errors["winograd"] <= 1.5 * errors["library"] + 1e-6, errors
