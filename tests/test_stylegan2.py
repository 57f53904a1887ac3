"""StyleGAN2 networks and the rosinality reader: parity with the official outputs, shape inference on unseen
configurations, FIR/upfirdn semantics, parameter counts, and one-line errors for bad files."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import asap.pretrained
from asap.errors import AsapError
from asap.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, channel_table
from asap.nn.stylegan import make_kernel, upfirdn2d, upsample_transposed
from asap.pretrained.stylegan2 import to_rosinality
from tests.conftest import fixture_dir

TOL = dict(atol=1e-4, rtol=1e-4)  # the fixture README's stated tolerance (= meta.json["suggested_tolerance"])


@pytest.fixture(scope="module")
def sg2():
    d = fixture_dir("stylegan2")
    inputs = torch.load(d / "inputs.pt", weights_only=True)
    expected = torch.load(d / "expected.pt", weights_only=True)
    meta = json.loads((d / "meta.json").read_text())
    return d, inputs, expected, meta


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_official_checkpoint_reproduces_every_reference_output(sg2):
    d, inp, exp, meta = sg2
    G = asap.pretrained.load(d / "checkpoint.pt", family="stylegan2")
    assert isinstance(G, StyleGAN2Generator) and not G.training
    assert G.channels == [meta["channels"][str(r)] for r in (4, 8, 16, 32)]
    assert (G.size, G.style_dim, len(G.mapping.layers)) == (32, 64, 3) and G.num_ws == 8
    assert not G.has_w_avg()  # train.py files carry no latent_avg
    noise = inp["noise"]
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(inp["z"]), exp["w"], **TOL)
        img, rgbs = G.synthesis(G.broadcast(G.mapping(inp["z"])), noise=noise, return_rgbs=True)
        torch.testing.assert_close(img, exp["img"], **TOL)
        torch.testing.assert_close(G(inp["z"], noise=noise), exp["img"], **TOL)
        for ours, ref in zip(rgbs, exp["rgb_skips"], strict=True):
            torch.testing.assert_close(ours, ref, **TOL)
        torch.testing.assert_close(G(inp["z"]), exp["img_buffer_noise"], **TOL)  # stored noise buffers
        G.w_avg.copy_(inp["truncation_latent"][0])
        img, ws = G(inp["z"], truncation_psi=inp["truncation"], noise=noise, return_latents=True)
        torch.testing.assert_close(img, exp["img_truncated"], **TOL)
        torch.testing.assert_close(ws, exp["latent_truncated"], **TOL)
        img, ws = G(inp["z"], z2=inp["z2"], inject_index=inp["inject_index"], noise=noise, return_latents=True)
        torch.testing.assert_close(img, exp["img_mixed"], **TOL)
        torch.testing.assert_close(ws, exp["latent_mixed"], **TOL)
        torch.testing.assert_close(G.synthesis(inp["wplus"], noise=noise), exp["img_wplus"], **TOL)


def test_official_discriminator_and_non_ema_generator(sg2):
    d, inp, exp, _ = sg2
    D = asap.pretrained.load(d / "checkpoint.pt", part="discriminator")
    assert isinstance(D, StyleGAN2Discriminator) and D.channels == [64, 64, 48, 32]
    g = asap.pretrained.load(d / "checkpoint.pt", which="g")
    with torch.no_grad():
        torch.testing.assert_close(D(exp["img"]), exp["d_logits"], **TOL)
        torch.testing.assert_close(g(inp["z"], noise=inp["noise"]), exp["g_img"], **TOL)
        assert _max_err(g(inp["z"], noise=inp["noise"]), exp["img"]) > 1e-3  # really the other network


def test_converted_legacy_file_loads_with_latent_avg(sg2):
    d, inp, exp, _ = sg2
    G = asap.pretrained.load(d / "checkpoint_converted_layout_legacy.pt")
    assert G.has_w_avg()
    torch.testing.assert_close(G.w_avg, inp["truncation_latent"][0])
    with torch.no_grad():
        img = G(inp["z"], truncation_psi=inp["truncation"], noise=inp["noise"])
    torch.testing.assert_close(img, exp["img_truncated"], **TOL)
    with pytest.raises(AsapError, match="no discriminator"):
        asap.pretrained.load(d / "checkpoint_converted_layout_legacy.pt", part="discriminator")


def test_train_checkpoint_needs_the_namespace_allowlist(sg2):
    import pickle
    d = sg2[0]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(d / "checkpoint.pt", weights_only=True)  # plain weights_only refuses argparse.Namespace
    assert asap.pretrained.load(d / "checkpoint.pt") is not None  # ours allow-lists exactly that class


@pytest.mark.parametrize("size,channels,style_dim,n_mlp", [(16, [24, 20, 12], 40, 2), (64, [32, 32, 16, 16, 8], 24, 5)])
def test_unseen_configuration_round_trips_through_the_rosinality_layout(tmp_path, size, channels, style_dim, n_mlp):
    torch.manual_seed(size)
    G = StyleGAN2Generator(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)
    g = StyleGAN2Generator(size=size, style_dim=style_dim, n_mlp=n_mlp, channels=channels)
    D = StyleGAN2Discriminator(size=size, channels=channels)
    for net in (G, g, D):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    G.mean_w(256)
    obj = to_rosinality(G, D, g)
    assert "style.1.weight" in obj["g_ema"] and "convs.0.0.weight" in obj["d"] and "noises.noise_0" in obj["g_ema"]
    path = tmp_path / "rosinality.pt"
    torch.save(obj, path)
    G2 = asap.pretrained.load(path)
    D2 = asap.pretrained.load(path, part="discriminator")
    g2 = asap.pretrained.load(path, which="g")
    assert G2.channels == channels and G2.style_dim == style_dim and len(G2.mapping.layers) == n_mlp
    z = torch.randn(4, style_dim)
    with torch.no_grad():
        assert torch.equal(G2(z, truncation_psi=0.5), G.eval()(z, truncation_psi=0.5))
        assert torch.equal(g2(z), g.eval()(z))
        img = G(z)
        assert torch.equal(D2(img), D.eval()(img))


def test_upfirdn2d_matches_the_definition():
    x = torch.arange(2 * 3 * 5 * 4, dtype=torch.float32).reshape(2, 3, 5, 4)
    k = make_kernel([1, 3, 3, 1])
    assert k.shape == (4, 4) and abs(float(k.sum()) - 1) < 1e-7
    y = upfirdn2d(x, k * 4, up=2, pad=(2, 1))
    assert y.shape == (2, 3, 10, 8)  # (H*up + p0 + p1 - kh) // down + 1
    # direct definition: zero insertion, padding, true convolution
    up = torch.zeros(2, 3, 10, 8)
    up[:, :, ::2, ::2] = x
    padded = torch.nn.functional.pad(up, [2, 1, 2, 1])
    ref = torch.zeros_like(y)
    kk = (k * 4).flip([0, 1])
    for i in range(10):
        for j in range(8):
            ref[:, :, i, j] = (padded[:, :, i:i + 4, j:j + 4] * kk).sum((-1, -2))
    torch.testing.assert_close(y, ref)
    # a constant image stays constant away from the borders after upsampling (the kernel keeps the gain)
    const = upfirdn2d(torch.ones(1, 1, 6, 6), k * 4, up=2, pad=(2, 1))
    torch.testing.assert_close(const[..., 2:-2, 2:-2], torch.ones_like(const[..., 2:-2, 2:-2]))
    down = upfirdn2d(torch.ones(1, 1, 8, 8), k, down=2, pad=(1, 1))
    assert down.shape == (1, 1, 4, 4)


def test_inference_upsampling_as_transposed_conv_matches_upfirdn2d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64)
    for taps, up, pad in (([1, 3, 3, 1], 2, (2, 1)), ([1, 3, 3, 1], 2, (1, 1)), ([1, 2, 1], 2, (1, 1)),
                          ([1, 3, 3, 1], 4, (3, 2)), ([1, 1], 2, (1, 1))):
        k = make_kernel(taps).double() * up ** 2
        out = upsample_transposed(x, k, up, pad)
        torch.testing.assert_close(out, upfirdn2d(x, k, up=up, pad=pad), rtol=0, atol=1e-12)
    k = torch.randn(4, 4, dtype=torch.float64)                                # not flip-symmetric
    torch.testing.assert_close(upsample_transposed(x, k, 2, (2, 1)), upfirdn2d(x, k, up=2, pad=(2, 1)), rtol=0,
                               atol=1e-12)
    assert upsample_transposed(x, make_kernel([1, 3, 3, 1]), 2, (5, 0)) is None  # no transposed-conv form


@pytest.mark.parametrize("size,channels", [(32, None), (64, [64, 32, 16, 8, 4])])
def test_inference_path_equals_training_path(size, channels):
    """One sample without autograd runs plain channels-last convs and a transposed-conv skip upsampler; the output
    (NCHW) equals the grouped-conv path within float32 rounding."""
    torch.manual_seed(0)
    G = StyleGAN2Generator(size=size, style_dim=32, n_mlp=2, channels=channels).eval()
    for m in G.modules():
        if hasattr(m, "weight") and m.weight is not None and m.weight.numel() == 1:
            m.weight.data.fill_(0.3)  # noise strengths
    ws = G.broadcast(G.mapping(torch.randn(1, 32)))
    ref = G.synthesis(ws, noise_mode="const")  # autograd on: the training path
    with torch.no_grad():
        img, rgbs = G.synthesis(ws, noise_mode="const", return_rgbs=True)
    assert img.is_contiguous() and all(r.is_contiguous() for r in rgbs) and img is rgbs[-1]
    torch.testing.assert_close(img, ref.detach(), rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


@pytest.mark.parametrize("upsample", [False, True])
@pytest.mark.parametrize("demodulate", [True, False])
def test_input_modulated_inference_equals_the_modulated_kernel(upsample, demodulate):
    """Wide low-resolution layers at batch 1 without autograd scale the maps instead of the kernel (with a cached
    kernel and cached tap sums): the same function, also for sliced sub-channels and after the weight changes."""
    from asap.nn.stylegan import ModulatedConv2d

    torch.manual_seed(0)
    m = ModulatedConv2d(64, 48, 3, 16, demodulate=demodulate, upsample=upsample).double()
    style = torch.randn(1, 16, dtype=torch.float64)
    for c, o in ((64, 48), (40, 30)):
        x = torch.randn(1, c, 4, 4, dtype=torch.float64)
        want = m(x, style, o).detach()  # autograd on: the modulated-kernel path
        with torch.no_grad():
            got = m(x, style, o)  # 4x4 maps, 64 channels: the input-modulated path
            assert "_kcache" in m.__dict__
        assert got.shape == want.shape == (1, o, 8 if upsample else 4, 8 if upsample else 4)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        m.weight.mul_(-0.5)  # an in-place update (optimiser step, EMA, load) must not reuse the cached kernel
        got = m(x, style, o)
    torch.testing.assert_close(got, m(x, style, o).detach(), rtol=1e-12, atol=1e-12)
    with torch.no_grad(), pytest.raises(ValueError, match="exceed"):
        m(x, style, 49)


def test_skip_upsampler_bilinear_form_equals_the_fir_filter():
    """StyleGAN2's [1,3,3,1] x2 upsampler equals bilinear upsampling with 3/4 on the border rows and columns: the
    same values (float64, odd sizes, size 1) and gradients; another loaded kernel, fast=False or tracing use the FIR."""
    from asap.nn.stylegan import Upsample, upsample_1331

    torch.manual_seed(0)
    up = Upsample((1, 3, 3, 1)).double()
    for shape in ((2, 3, 7, 5), (1, 3, 1, 4), (1, 2, 8, 8)):
        x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
        ref = upfirdn2d(x, up.kernel, up=2, pad=up.pad)
        torch.testing.assert_close(upsample_1331(x), ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(up(x), ref, rtol=0, atol=1e-12)
        with torch.no_grad():  # inference: the strided lerp form
            y = upsample_1331(x)
            assert y.shape == ref.shape and y.is_contiguous()
            torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(upsample_1331(x.contiguous(memory_format=torch.channels_last)), ref,
                                       rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(upsample_1331, (torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True),))
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        up.kernel.copy_(torch.rand(4, 4, dtype=torch.float64))  # a checkpoint with another filter: not bilinear
    assert not up._is_bilinear()
    torch.testing.assert_close(up(x), upfirdn2d(x, up.kernel, up=2, pad=up.pad), rtol=0, atol=1e-12)


def test_fused_inference_chain_equals_the_training_chain():
    """At batch-1 inference the styled conv folds sqrt(2) and the bias into its conv (or its upsampling blur) and
    adds the noise scaled by sqrt(2): the same activations as the autograd path, for both conv forms."""
    from asap.nn.stylegan import StyledConv, ToRGB

    torch.manual_seed(0)
    for c, o, side in ((8, 6, 16), (64, 48, 4)):  # maps outweigh the kernel / the kernel outweighs the maps
        for upsample in (False, True):
            layer = StyledConv(c, o, 3, 16, upsample=upsample, resolution=side * (2 if upsample else 1)).double()
            with torch.no_grad():
                layer.noise.weight.fill_(0.7)
                layer.activate.bias.normal_()
            x, style = torch.randn(1, c, side, side, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
            for noise_mode, out_ch in (("const", None), ("none", o - 2)):
                want = layer(x, style, noise_mode=noise_mode, out_ch=out_ch).detach()
                with torch.no_grad():
                    got = layer(x, style, noise_mode=noise_mode, out_ch=out_ch)
                assert got.shape == want.shape
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    rgb = ToRGB(8, 16).double()
    with torch.no_grad():
        rgb.bias.normal_()
    x, style = torch.randn(1, 8, 8, 8, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    skip = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    want = rgb(x, style, skip).detach()
    with torch.no_grad():
        torch.testing.assert_close(rgb(x, style, skip), want, rtol=1e-12, atol=1e-12)


def test_wide_low_resolution_convs_run_as_winograd_with_the_same_values():
    """Batch-1 CPU inference runs 3x3 convs with >= WINOGRAD_MIN_CHANNELS inputs and outputs as Winograd on the
    cached kernel: equal to the direct conv in float64, also after a weight change; fast_inference=False (how the
    benchmark counts the architecture's MACs) gives the direct conv, so the two MAC counts differ."""
    from asap.metrics.profile import count_macs
    from asap.nn.stylegan import WINOGRAD_MIN_CHANNELS, ModulatedConv2d

    torch.manual_seed(0)
    c = WINOGRAD_MIN_CHANNELS
    m = ModulatedConv2d(c, c, 3, 16).double()
    x, style = torch.randn(1, c, 8, 8, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    want = m(x, style).detach()  # autograd on: the direct grouped conv
    with torch.no_grad():
        assert m._winograd_pays(x, c) and not m._winograd_pays(x[:, :, :4, :4], c) and not m._winograd_pays(x, c - 1)
        torch.testing.assert_close(m(x, style), want, rtol=1e-10, atol=1e-10)
        assert m.__dict__["_kcache"][3] is not None  # the transformed kernel is cached
        m.weight.mul_(-0.5)  # an optimiser step, EMA or load: the cached transform must not be reused
        got = m(x, style)
    torch.testing.assert_close(got, m(x, style).detach(), rtol=1e-10, atol=1e-10)
    G = StyleGAN2Generator(size=16, style_dim=16, n_mlp=1, channels=[c, c, c]).eval()
    with torch.no_grad():
        ws = G.broadcast(G.mapping(torch.randn(1, 16)))
        fast = G.synthesis(ws, noise_mode="const")
        fast_macs = count_macs(lambda: G.synthesis(ws, noise_mode="const"))
        G.fast_inference = False
        assert not G.fast_inference
        direct = G.synthesis(ws, noise_mode="const")
        direct_macs = count_macs(lambda: G.synthesis(ws, noise_mode="const"))
        G.fast_inference = True
    torch.testing.assert_close(fast, direct, rtol=1e-4, atol=1e-5 * float(direct.abs().max()))
    assert fast_macs < direct_macs


@pytest.mark.parametrize("c,o,h,w", [(8, 8, 12, 16), (16, 3, 5, 6), (3, 1, 1, 2)])
def test_thin_convs_paired_by_columns_equal_the_direct_conv(c, o, h, w):
    """The column-paired 3x3 conv (thin layers on CPU) gives the direct conv's values, as a channels-last view of
    its output."""
    from asap.nn.stylegan import conv3x3_paired_columns

    torch.manual_seed(0)
    x = torch.randn(1, c, h, w, dtype=torch.float64)
    weight, bias = torch.randn(o, c, 3, 3, dtype=torch.float64), torch.randn(o, dtype=torch.float64)
    for b in (bias, None):
        want = torch.nn.functional.conv2d(x, weight, b, padding=1)
        got = conv3x3_paired_columns(x, weight, b)
        assert got.shape == want.shape and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    got32 = conv3x3_paired_columns(x.float(), weight.float(), bias.float())
    torch.testing.assert_close(got32, torch.nn.functional.conv2d(x.float(), weight.float(), bias.float(), padding=1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("upsample,paired", [(False, "conv3x3_paired_columns"), (True, "upconv3x3_paired_columns")])
def test_modulated_conv_pairs_columns_of_thin_layers_at_batch_1_inference(monkeypatch, upsample, paired):
    """ModulatedConv2d takes the column-paired conv (or upsampling conv) at batch-1 CPU inference for
    <= PAIRED_MAX_CHANNELS outputs, with the grouped path's values; fast_inference=False, wider layers, odd widths
    (plain conv) and a loaded blur that is not separable (upsampling conv) do not."""
    import asap.nn.stylegan as sg

    torch.manual_seed(0)
    c, o, h, w = 8, sg.PAIRED_MAX_CHANNELS, 12, 16  # maps outweigh the kernel: the modulated-kernel path
    x, style = torch.randn(1, c, h, w, dtype=torch.float64), torch.randn(1, 16, dtype=torch.float64)
    m = sg.ModulatedConv2d(c, o, 3, 16, upsample=upsample).double()
    want = m(x, style).detach()  # autograd on: the grouped (transposed) conv
    calls, real = [], getattr(sg, paired)
    monkeypatch.setattr(sg, paired, lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        torch.testing.assert_close(m(x, style), want, rtol=1e-12, atol=1e-12)
        assert len(calls) == 1
        m.fast = False
        torch.testing.assert_close(m(x, style), want, rtol=1e-12, atol=1e-12)
        m.fast = True
        sg.ModulatedConv2d(c, o + 1, 3, 16, upsample=upsample).double()(x, style)  # wider than PAIRED_MAX_CHANNELS
        if upsample:
            m.blur.kernel.copy_(torch.rand(4, 4, dtype=torch.float64))  # a checkpoint with a non-separable filter
        else:
            m(x[..., :w - 1], style)  # odd width
    assert len(calls) == 1
    if upsample:
        want = m(x, style).detach()
        with torch.no_grad():
            torch.testing.assert_close(m(x, style), want, rtol=1e-12, atol=1e-12)
        assert len(calls) == 1


@pytest.mark.parametrize("c,o,h,w", [(16, 8, 6, 10), (5, 3, 7, 5), (3, 1, 1, 1)])
def test_thin_upsampling_convs_paired_by_columns_equal_transposed_conv_and_blur(c, o, h, w):
    """upconv3x3_paired_columns (thin upsampling layers on CPU) gives the stride-2 transposed conv followed by the
    padded 4x4 blur and the bias, as a channels-last view; an asymmetric separable blur checks the tap order."""
    from asap.nn.stylegan import separable_taps, upconv3x3_paired_columns

    torch.manual_seed(0)
    x = torch.randn(1, c, h, w, dtype=torch.float64)
    weight, bias = torch.randn(o, c, 3, 3, dtype=torch.float64), torch.randn(o, dtype=torch.float64)
    blurs = [make_kernel((1, 3, 3, 1)).double() * 4,
             torch.outer(torch.tensor([1.0, 2, 3, 4]), torch.tensor([4.0, 1, 2, 0.5])).double()]
    assert separable_taps(torch.rand(4, 4, dtype=torch.float64)) is None
    for kernel in blurs:
        taps = separable_taps(kernel)
        for b in (bias, None):
            want = upfirdn2d(torch.nn.functional.conv_transpose2d(x, weight.transpose(0, 1), stride=2), kernel,
                             pad=(1, 1), bias=b)
            got = upconv3x3_paired_columns(x, weight, *taps, b)
            assert got.shape == want.shape == (1, o, 2 * h, 2 * w)
            assert got.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want32 = upfirdn2d(torch.nn.functional.conv_transpose2d(x.float(), weight.float().transpose(0, 1), stride=2),
                       blurs[0].float(), pad=(1, 1), bias=bias.float())
    got32 = upconv3x3_paired_columns(x.float(), weight.float(), *separable_taps(blurs[0].float()), bias.float())
    torch.testing.assert_close(got32, want32, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c,w", [(8, 16), (4, 12), (2, 8), (1, 32), (8, 15), (16, 8), (3, 6)])
def test_pixel_map_add_spreads_over_thin_channels_like_the_broadcast(c, w):
    """add_pixel_map_ (noise injection at inference): the GEMM form for channels-last maps with < 16 channels
    gives the broadcast add's values; other shapes, layouts and dtypes take the broadcast add itself."""
    from asap.nn.stylegan import add_pixel_map_

    torch.manual_seed(0)
    for fmt, dtype in ((torch.channels_last, torch.float32), (torch.contiguous_format, torch.float32),
                       (torch.channels_last, torch.float64)):
        out = torch.randn(1, c, 5, w, dtype=dtype).contiguous(memory_format=fmt)
        m, scale = torch.randn(1, 1, 5, w, dtype=dtype), torch.tensor([0.7], dtype=dtype)
        want = out + m * scale
        got = add_pixel_map_(out, m, scale)
        assert got is out and got.is_contiguous(memory_format=fmt)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_config_f_parameter_counts():
    G = StyleGAN2Generator(1024)
    assert sum(p.numel() for p in G.synthesis.parameters()) == 28_268_812  # the MobileStyleGAN paper's 28.27M
    assert sum(p.numel() for p in G.mapping.parameters()) == 2_101_248
    assert sum(p.numel() for p in StyleGAN2Discriminator(1024).parameters()) == 29_012_513
    assert channel_table(256, 1) == [512, 512, 512, 512, 256, 128, 64]
    with pytest.raises(ValueError, match="power of two"):
        channel_table(100)
    with pytest.raises(ValueError, match="needs 3 widths"):
        channel_table(16, channels=[8, 8])


def test_generator_api_shapes_noise_modes_and_truncation():
    torch.manual_seed(0)
    G = StyleGAN2Generator(16, style_dim=16, n_mlp=2, channels=[16, 16, 8]).eval()
    assert G.num_ws == 6 and G.synthesis.num_noise == 5
    assert [s[-1] for s in G.synthesis.noise_shapes()] == [4, 8, 8, 16, 16]
    z = torch.randn(3, 16)
    with torch.no_grad():
        a, b = G(z), G(z)
        assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)  # const noise is deterministic
        assert torch.equal(G(z, noise_mode="random"), G(z, noise_mode="none"))  # noise strengths start at 0
        for conv in G.synthesis.styled_convs():
            conv.noise.weight.fill_(0.5)
        assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
        assert not torch.equal(G(z, noise_mode="none"), G(z))
        w_avg = G.mean_w(512).clone()
        assert torch.isfinite(w_avg).all()
        same = G(z, truncation_psi=0.0)
        torch.testing.assert_close(same[0], same[2])  # every sample collapses onto w_avg
        torch.testing.assert_close(G.truncate(G.mapping(z), 0.5), w_avg + 0.5 * (G.mapping(z) - w_avg))
    with pytest.raises(ValueError, match=r"ws must be \[B, 6, 16\]"):
        G.synthesis(torch.zeros(2, 5, 16))
    with pytest.raises(ValueError, match="noise must list 5"):
        G.synthesis(torch.zeros(2, 6, 16), noise=[None])
    with pytest.raises(ValueError, match="inject_index"):
        G.broadcast(z[:, :16], z[:, :16], 6)


def test_bad_files_give_one_line_errors(tmp_path, sg2):
    d = sg2[0]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((d / "checkpoint.pt").read_bytes()[:5000])
    with pytest.raises(AsapError, match="corrupt or truncated") as e:
        asap.pretrained.load(truncated)
    assert "\n" not in str(e.value)
    foreign = fixture_dir("asapnet") / "latest_net_G.pth"
    with pytest.raises(AsapError, match="asapnet checkpoint, not stylegan2"):
        asap.pretrained.load(foreign, family="stylegan2")
    other = tmp_path / "other.pt"
    torch.save({"g_ema": {"weight": torch.zeros(2)}}, other)
    with pytest.raises(AsapError, match="not an asap checkpoint and not an official checkpoint"):
        asap.pretrained.load(other)
    with pytest.raises(AsapError, match="shape mismatch for 'convs.2.conv.weight'"):
        asap.pretrained.load(d / "checkpoint.pt", channels=[64, 64, 64, 32])
    with pytest.raises(AsapError, match="unknown StyleGAN2 generator option"):
        asap.pretrained.load(d / "checkpoint.pt", label_nc=3)
    with pytest.raises(AsapError, match="which must be"):
        asap.pretrained.load(d / "checkpoint.pt", which="nope")
    missing = tmp_path / "missing.pt"
    with pytest.raises(AsapError, match="no such file"):
        asap.pretrained.load(missing)
    partial = tmp_path / "partial.pt"
    sd = dict(torch.load(d / "checkpoint_converted_layout_legacy.pt", weights_only=True)["g_ema"])
    sd.pop("convs.3.conv.weight")
    torch.save({"g_ema": sd}, partial)
    with pytest.raises(AsapError, match="missing key 'convs.3.conv.weight'"):
        asap.pretrained.load(partial)
    shutil.rmtree(tmp_path)


def test_benchmark_reports_config_f_synthesis_params_and_macs(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "models=[stylegan2]",
                        "res=[512x1024,1024x1024]", "runs=1", "warmup=0", "memory=false", f"out={out}"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "skipped at 512x1024" in r.stdout
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["res"] == "1024x1024"
    assert rows[0]["params"] == 28_268_812
    assert abs(rows[0]["macs"] / 1e9 - 75.38) < 0.05  # FlopCounterMode, 1 MAC = 2 FLOPs
