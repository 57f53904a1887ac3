"""MobileStyleGAN: parity of the student, teacher, discriminator, converter files and distillation terms with every
entry of the official fixture; shape inference on an unseen configuration; student API; one-line errors."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

import asap.pretrained
from asap.errors import AsapError
from asap.losses.distillation import wavelet_distillation_terms
from asap.models.mobilestylegan import MobileStyleGANGenerator
from asap.models.stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator, SynthesisNetwork
from asap.nn.stylegan import upfirdn2d
from asap.nn.wavelets import dwt, idwt
from asap.pretrained.mobilestylegan import to_official
from tests.conftest import fixture_dir

TOL = dict(atol=1e-4, rtol=1e-4)  # the fixture README's tolerance (meta.json suggested_tolerance)


@pytest.fixture(scope="module")
def msg():
    d = fixture_dir("mobilestylegan")
    inputs = torch.load(d / "inputs.pt", weights_only=True)
    expected = torch.load(d / "expected.pt", weights_only=True)
    meta = json.loads((d / "meta.json").read_text())
    return d, inputs, expected, meta


def _noise_list(teacher_noise):
    """The fixture's teacher-style noise ((1,1,4,4), then (2,1,1,r,r) per resolution) in StyleGAN2 order."""
    return [teacher_noise[0]] + [m for pair in teacher_noise[1:] for m in (pair[0], pair[1])]


@pytest.mark.parametrize("fast", [True, False], ids=["inference_path", "reference_path"])
def test_student_reproduces_every_reference_output(msg, fast):
    d, inp, exp, meta = msg
    S = asap.pretrained.load(d / "checkpoint.pt", family="mobilestylegan")
    S.synthesis.fast_inference = fast  # eval + no_grad takes the folded channels-last path unless disabled
    assert isinstance(S, MobileStyleGANGenerator) and not S.training
    assert S.channels == meta["constructor"]["student(MobileSynthesisNetwork)"]["channels"]
    assert (S.size, S.style_dim, len(S.mapping.layers), S.num_ws) == (64, 64, 3, meta["derived"]["wsize(student)"])
    torch.testing.assert_close(S.w_avg, inp["style_mean"][0, 0], rtol=0, atol=0)
    noise = _noise_list(inp["noise"])[:S.synthesis.num_noise]
    with torch.no_grad():
        w = S.mapping(inp["z"])
        torch.testing.assert_close(w, exp["w"], **TOL)
        img, freqs = S.synthesis(w, noise=noise, return_freq=True)
        torch.testing.assert_close(img, exp["img"], **TOL)
        assert len(freqs) == len(exp["freq"]) == 4
        for ours, ref, ref_img in zip(freqs, exp["freq"], exp["freq_img"], strict=True):
            torch.testing.assert_close(ours, ref, **TOL)
            torch.testing.assert_close(idwt(ours), ref_img, **TOL)
        torch.testing.assert_close(img, idwt(freqs[-1]), rtol=0, atol=0)
        torch.testing.assert_close(S(inp["z"], noise=noise), exp["img"], **TOL)
        # truncation works for any batch size (the reference only for batch 1)
        ws = S.broadcast(S.truncate(w, inp["truncation"]))
        torch.testing.assert_close(ws, exp["style_truncated"], **TOL)
        torch.testing.assert_close(S.synthesis(ws, noise=noise), exp["img_truncated"], **TOL)
        img, ws = S(inp["z"], truncation_psi=inp["truncation"], noise=noise, return_latents=True)
        torch.testing.assert_close(img, exp["img_truncated"], **TOL)
        wplus = S.mapping(inp["z_wplus"]).view(3, S.num_ws, S.w_dim)
        torch.testing.assert_close(wplus, exp["style_wplus"], **TOL)
        torch.testing.assert_close(S.synthesis(wplus, noise=noise), exp["img_wplus"], **TOL)


def test_teacher_discriminator_and_distillation_terms(msg):
    d, inp, exp, _ = msg
    path = d / "checkpoint.pt"
    T = asap.pretrained.load(path, part="teacher")
    assert isinstance(T, StyleGAN2Generator) and T.channels == [64, 64, 48, 32, 16]
    torch.testing.assert_close(T.w_avg, inp["style_mean"][0, 0], rtol=0, atol=0)
    noise = _noise_list(inp["noise"])
    with torch.no_grad():
        img, sums = T.synthesis(T.mapping(inp["z"]), noise=noise, return_rgbs=True)
        torch.testing.assert_close(img, exp["teacher_img"], **TOL)
        torch.testing.assert_close(T(inp["z"], noise=noise), exp["teacher_img"], **TOL)
        # each ToRGB's own output = running sum minus the upsampled previous sum
        kernel = T.synthesis.blocks[0].torgb.upsample.kernel
        own = [sums[0]] + [s - upfirdn2d(p, kernel, up=2, pad=(2, 1)) for p, s in zip(sums, sums[1:])]
        for ours, ref in zip(own, exp["teacher_rgb"], strict=True):
            torch.testing.assert_close(ours, ref, **TOL)
        torch.testing.assert_close(dwt(exp["teacher_img"]), exp["teacher_img_dwt"], **TOL)
        torch.testing.assert_close(dwt(img), exp["teacher_img_dwt"], **TOL)
        D = asap.pretrained.load(path, part="discriminator")
        assert isinstance(D, StyleGAN2Discriminator)
        torch.testing.assert_close(D(exp["teacher_img"]), exp["d_logits_teacher_img"], **TOL)
        # the multi-scale L1 / MSE terms of the official DistillerLoss, from our student and teacher outputs
        S = asap.pretrained.load(path)
        _, freqs = S.synthesis(S.mapping(inp["z"]), noise=noise[:S.synthesis.num_noise], return_freq=True)
        l1, l2 = wavelet_distillation_terms(freqs, img)
        torch.testing.assert_close(l1, exp["kd_l1"], rtol=1e-4, atol=0)
        torch.testing.assert_close(l2, exp["kd_l2"], rtol=1e-4, atol=0)


def test_converter_files_load_as_what_they_hold(msg):
    d, inp, exp, _ = msg
    M = asap.pretrained.load(d / "teacher_mapping_network.ckpt")
    Syn = asap.pretrained.load(d / "teacher_synthesis_network.ckpt", family="mobilestylegan")
    assert isinstance(M, MappingNetwork) and isinstance(Syn, SynthesisNetwork)
    with torch.no_grad():
        torch.testing.assert_close(M(inp["z"]), exp["w"], **TOL)
        torch.testing.assert_close(Syn(M(inp["z"]), noise=_noise_list(inp["noise"])), exp["teacher_img"], **TOL)
    # the teacher's const noise is the seeded policy, shared with the student's const mode
    T = asap.pretrained.load(d / "checkpoint.pt", part="teacher")
    S = asap.pretrained.load(d / "checkpoint.pt")
    consts = [c.noise.noise_const for c in T.synthesis.styled_convs()]
    for a, b in zip(S.synthesis.const_noise(), consts):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(consts, [c.noise.noise_const for c in Syn.styled_convs()]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_unseen_configuration_round_trips_through_the_official_layout(tmp_path):
    torch.manual_seed(3)
    S = MobileStyleGANGenerator(size=32, style_dim=24, n_mlp=2, channels=[40, 32, 12]).eval()
    for p in S.parameters():
        p.data.add_(0.1 * torch.randn_like(p))
    S.mean_w(64)
    T = StyleGAN2Generator(size=32, style_dim=24, n_mlp=2, channels=[40, 32, 12, 8])
    T.mapping.load_state_dict(S.mapping.state_dict())
    D = StyleGAN2Discriminator(size=32, channels=[40, 32, 12, 8])
    path = tmp_path / "distiller.ckpt"
    torch.save(to_official(S, T, D), path)
    S2 = asap.pretrained.load(path)
    T2 = asap.pretrained.load(path, part="teacher")
    D2 = asap.pretrained.load(path, part="discriminator")
    assert S2.channels == [40, 32, 12] and S2.num_ws == 8 and T2.channels == [40, 32, 12, 8]
    z = torch.randn(2, 24)
    noise = [torch.randn(s) for s in T.synthesis.noise_shapes()]
    with torch.no_grad():
        torch.testing.assert_close(S2(z, noise=noise[:5], truncation_psi=0.7), S(z, noise=noise[:5], truncation_psi=0.7))
        torch.testing.assert_close(T2(z, noise=noise), T(z, noise=noise))
        img = T(z, noise=noise)
        torch.testing.assert_close(D2(img), D(img))


def test_student_api_shapes_noise_and_layout():
    torch.manual_seed(0)
    S = MobileStyleGANGenerator(size=32, style_dim=16, n_mlp=1, channels=[16, 16, 8]).eval()
    for name, p in S.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.5)
    assert S.num_ws == 8 and S.synthesis.num_noise == 5
    assert [s[-1] for s in S.synthesis.noise_shapes()] == [4, 8, 8, 16, 16]
    z = torch.randn(3, 16)
    with torch.no_grad():
        w = S.mapping(z)
        a, b = S.synthesis(w), S.synthesis(w)
        assert not torch.equal(a, b)  # None draws fresh noise
        torch.testing.assert_close(S.synthesis(w, noise_mode="const"), S.synthesis(w, noise_mode="const"))
        img, freqs = S.synthesis(w, return_freq=True, noise_mode="none")
        assert img.shape == (3, 3, 32, 32) and [f.shape[-1] for f in freqs] == [4, 8, 16]
        assert all(f.shape[1] == 12 for f in freqs)
        # a W+ repeating w equals the 2-D call; changing only the last (unused) slot changes nothing
        ws = S.broadcast(w).clone()
        torch.testing.assert_close(S.synthesis(ws, noise_mode="none"), img)
        ws[:, -1] += 5
        torch.testing.assert_close(S.synthesis(ws, noise_mode="none"), img)
        ws[:, 2] += 1  # block 0: upsample + conv1
        assert not torch.allclose(S.synthesis(ws, noise_mode="none"), img)
        # truncation for a batch of 3, towards w_avg
        S.w_avg.copy_(torch.zeros(16))
        torch.testing.assert_close(S.truncate(w, 0.5), 0.5 * w)
    with pytest.raises(ValueError, match="noise must list 5 maps"):
        S.synthesis(w, noise=[None] * 3)
    with pytest.raises(ValueError, match=r"ws must be \[B, 16\] or \[B, 8, 16\]"):
        S.synthesis(torch.zeros(1, 7, 16))
    with pytest.raises(ValueError, match="divisible by 4"):
        MobileStyleGANGenerator(size=16, style_dim=8, n_mlp=1, channels=[10, 8])


def test_inference_path_equals_reference_path():
    torch.manual_seed(0)
    for size, channels in ((32, [16, 16, 8]), (8, [8])):
        S = MobileStyleGANGenerator(size=size, style_dim=16, n_mlp=1, channels=channels).eval()
        for p in S.parameters():
            p.data.add_(0.2 * torch.randn_like(p))
        ws = torch.randn(3, S.num_ws, 16)
        noise = [torch.randn(s) for s in S.synthesis.noise_shapes()]
        per_sample = [torch.randn(3, *s[1:]) for s in S.synthesis.noise_shapes()]
        with torch.no_grad():
            for nz, mode in ((noise, "random"), (per_sample, "random"), (None, "const"), (None, "none")):
                fast = S.synthesis(ws, noise=nz, noise_mode=mode)
                S.synthesis.fast_inference = False
                ref = S.synthesis(ws, noise=nz, noise_mode=mode)
                S.synthesis.fast_inference = True
                torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
            # weights changed in place (an optimiser step, load_state_dict): the folded constants follow
            S.synthesis.conv1.conv.weight.mul_(2)
            S.synthesis.fast_inference = False
            ref = S.synthesis(ws, noise=noise)
            S.synthesis.fast_inference = True
            torch.testing.assert_close(S.synthesis(ws, noise=noise), ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
        img = S.synthesis(ws, noise=noise)  # with autograd: the reference path
        assert img.requires_grad


def test_inference_path_in_strips_equals_reference_path(monkeypatch):
    """Blocks larger than STRIP_BYTES run in row strips with recomputed halos; force strips of 2 and 4 rows (and a
    last strip shorter than the rest) on a small net and compare with the reference path, every noise mode."""
    import asap.nn.mobile_fast as mf

    torch.manual_seed(1)
    S = MobileStyleGANGenerator(size=64, style_dim=16, n_mlp=1, channels=[16, 16, 16, 8]).eval()
    for p in S.parameters():
        p.data.add_(0.2 * torch.randn_like(p))
    ws = torch.randn(2, S.num_ws, 16)
    noise = [torch.randn(s) for s in S.synthesis.noise_shapes()]
    with torch.no_grad():
        S.synthesis.fast_inference = False
        refs = {mode: S.synthesis(ws, noise=nz, noise_mode=mode) for nz, mode in ((noise, "random"), (None, "const"),
                                                                                   (None, "none"))}
        S.synthesis.fast_inference = True
        for rows in (2, 4, 6):
            monkeypatch.setattr(mf, "STRIP_BYTES", 1)
            monkeypatch.setattr(mf, "MIN_STRIP_ROWS", rows)
            assert S.synthesis._fast.strip_rows(32, 16) == rows
            for nz, mode in ((noise, "random"), (None, "const"), (None, "none")):
                ref = refs[mode]
                torch.testing.assert_close(S.synthesis(ws, noise=nz, noise_mode=mode), ref, rtol=1e-5,
                                           atol=1e-5 * ref.abs().max().item())
    monkeypatch.setattr(mf, "STRIP_BYTES", 2 << 20)
    monkeypatch.setattr(mf, "MIN_STRIP_ROWS", 8)
    assert S.synthesis._fast.strip_rows(32, 16) == 32            # 64 KiB fits: one strip
    assert S.synthesis._fast.strip_rows(512, 64) == 16           # 64 MiB: strips of 2 MiB


def test_default_1024_parameter_counts():
    S = MobileStyleGANGenerator(size=1024)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    heads = count(S.synthesis.to_img1) + sum(count(b.to_img) for b in S.synthesis.layers[:-1])
    assert S.channels == [512, 512, 512, 512, 512, 256, 128, 64] and S.num_ws == 23
    assert count(S.synthesis) == 8_852_079 and count(S.synthesis) - heads == 7_306_395


def test_bad_files(msg, tmp_path):
    d, *_ = msg
    truncated = tmp_path / "cut.ckpt"
    truncated.write_bytes((d / "checkpoint.pt").read_bytes()[:100_000])
    with pytest.raises(AsapError, match="corrupt or truncated"):
        asap.pretrained.load(truncated)
    obj = torch.load(d / "teacher_synthesis_network.ckpt", weights_only=True)
    del obj["ckpt"]["layers.1.conv2.conv.weight"]
    torch.save(obj, tmp_path / "broken_synthesis_network.ckpt")
    with pytest.raises(AsapError, match="missing key 'layers.1.conv2.conv.weight'") as e:
        asap.pretrained.load(tmp_path / "broken_synthesis_network.ckpt")
    assert "\n" not in str(e.value)
    with pytest.raises(AsapError, match="part must be one of student, teacher, discriminator"):
        asap.pretrained.load(d / "checkpoint.pt", part="vgg")
    with pytest.raises(AsapError, match="this is a mobilestylegan checkpoint, not stylegan2"):
        asap.pretrained.load(d / "checkpoint.pt", family="stylegan2")
    shutil.copy(d / "teacher_mapping_network.ckpt", tmp_path / "m.ckpt")
    with pytest.raises(AsapError, match="part= applies to the distiller checkpoint"):
        asap.pretrained.load(tmp_path / "m.ckpt", part="teacher")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"student.input.input": torch.zeros(1, 8, 4, 4)}}, foreign)
    with pytest.raises(AsapError, match="missing key"):
        asap.pretrained.load(foreign)
