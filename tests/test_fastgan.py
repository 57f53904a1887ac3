"""FastGAN networks and the official reader/writer: parity with every tensor of the official fixture (eval and
train mode), the logits layout, spectral-norm and BatchNorm mode semantics, the tanh rule, unseen configurations
through both official formats, the byte-exact all_N.pth writer, and one-line errors for bad files."""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

import asap.pretrained
from asap.errors import AsapError
from asap.models.fastgan import FastGANDiscriminator, FastGANGenerator, crop_quadrant
from asap.pretrained.fastgan import load_training_state, normalize_keys, to_official
from tests.conftest import fixture_dir

NOISE_KEYS = ("feat_8.2", "feat_8.6", "feat_32.2", "feat_32.6", "feat_128.2", "feat_128.6")


@pytest.fixture(scope="module")
def fg():
    d = fixture_dir("fastgan")
    inputs = torch.load(d / "inputs.pt", weights_only=True)
    expected = torch.load(d / "expected.pt", weights_only=True)
    meta = json.loads((d / "meta.json").read_text())
    tol = meta["suggested_tolerance"]["all"]
    return d, inputs, expected, meta, dict(atol=tol["atol"], rtol=tol["rtol"])


def _noise(maps):
    return [maps[k].float() for k in NOISE_KEYS]


def _close(got, want, tol, what):
    assert got.shape == want.shape, what
    torch.testing.assert_close(got, want, **tol, msg=lambda m: f"{what}: {m}")


@torch.no_grad()
def test_generator_eval_reproduces_the_official_outputs_from_both_formats(fg):
    d, inp, exp, meta, tol = fg
    for name in ("checkpoint.pt", "checkpoint_g_d.pt"):  # all_N.pth (g_ema list) and N.pth (EMA in g)
        G = asap.pretrained.load(d / name, family="fastgan")
        assert isinstance(G, FastGANGenerator) and not G.training
        assert (G.im_size, G.nz, G.nc, G.num_noise) == (256, 32, 3, 6)
        assert G.channels == [meta["channel_tables"]["generator_widths"][str(r)] for r in G.resolutions]
        img, small = G(inp["z"].float(), noise=_noise(inp["noise"]), return_small=True)
        _close(img, exp["g_ema_eval/img_big"], tol, f"{name} img_big")
        _close(small, exp["g_ema_eval/img_128"], tol, f"{name} img_128")
        assert torch.equal(G(inp["z"].float(), noise=_noise(inp["noise"])), img)  # return_small=False: the image
    raw = asap.pretrained.load(d / "checkpoint.pt", family="fastgan", which="g")
    _, small = raw(inp["z"].float(), noise=_noise(inp["noise"]), return_small=True)
    _close(small, exp["g_raw_eval/img_128"], tol, "raw img_128")
    assert not torch.allclose(small, exp["g_ema_eval/img_128"], atol=1e-3)  # raw and EMA weights differ


@torch.no_grad()
def test_generator_train_mode_uses_batch_statistics_and_one_power_iteration(fg):
    d, inp, exp, meta, tol = fg
    G = asap.pretrained.load(d / "checkpoint.pt", family="fastgan").train()
    img, small = G(inp["z_train_mode"].float(), noise=_noise(inp["noise_train_mode"]), return_small=True)
    _close(img, exp["g_ema_train_mode_first_forward/img_big"], tol, "train-mode img_big")
    _close(small, exp["g_ema_train_mode_first_forward/img_128"], tol, "train-mode img_128")
    # the same call in eval mode is a different function (running statistics, stored u and v)
    G.eval()
    assert not torch.allclose(G(inp["z_train_mode"].float(), noise=_noise(inp["noise_train_mode"])), img, atol=1e-3)


@torch.no_grad()
def test_discriminator_eval_reproduces_logits_and_the_three_reconstructions(fg):
    d, inp, exp, meta, tol = fg
    D = asap.pretrained.load(d / "checkpoint.pt", family="fastgan", part="discriminator")
    assert isinstance(D, FastGANDiscriminator) and not D.training
    widths = meta["channel_tables"]["discriminator_widths"]
    assert D.channels == [widths[str(r)] for r in D.resolutions]
    assert D.decoder_channels == [meta["channel_tables"]["decoder_widths"][str(r)] for r in (16, 32, 64, 128)]
    for pair in ((exp["g_ema_eval/img_big"], exp["g_ema_eval/img_128"]),
                 [exp["g_ema_eval/img_big"], exp["g_ema_eval/img_128"]]):  # tuple or list
        _close(D(pair), exp["d_eval/fake_list_logits"], tol, "fake pair logits")
    logits, (rec_big, rec_small, rec_part) = D(inp["d_x_real"].float(), part=inp["d_part"])
    _close(logits, exp["d_eval/real_logits"], tol, "real logits")
    _close(rec_big, exp["d_eval/rec_big"], tol, "rec_big")
    _close(rec_small, exp["d_eval/rec_small"], tol, "rec_small")
    _close(rec_part, exp["d_eval/rec_part"], tol, "rec_part")
    _close(D(inp["d_x_other"].float()), exp["d_eval/fake_single_tensor_other_size_logits"], tol, "200 px input")
    # the N.pth file holds the same discriminator
    D2 = asap.pretrained.load(d / "checkpoint_g_d.pt", family="fastgan", part="discriminator")
    assert torch.equal(D2(inp["d_x_other"].float()), D(inp["d_x_other"].float()))


@torch.no_grad()
def test_logits_layout_big_branch_first_then_small_flattened_over_the_batch(fg):
    d, inp, exp, meta, tol = fg
    D = asap.pretrained.load(d / "checkpoint.pt", family="fastgan", part="discriminator")
    x = torch.randn(3, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    logits = D(x)
    assert logits.shape == (2 * 3 * 25,)
    singles = [D(x[i:i + 1]) for i in range(3)]  # eval mode: every sample is scored alone
    big = torch.cat([s[:25] for s in singles])
    small = torch.cat([s[25:] for s in singles])
    torch.testing.assert_close(logits, torch.cat([big, small]), atol=1e-5, rtol=1e-5)
    # the 25 big-branch values of a sample are its 5x5 map in row-major order, then come the small branch's
    maps = {}
    D.rf_big.register_forward_hook(lambda m, i, o: maps.__setitem__("big", o))
    D.rf_small.register_forward_hook(lambda m, i, o: maps.__setitem__("small", o))
    logits = D(x)
    assert maps["big"].shape == (3, 1, 5, 5)
    assert torch.equal(logits, torch.cat([maps["big"].reshape(-1), maps["small"].reshape(-1)]))
    assert torch.equal(logits[25:50], maps["big"][1, 0].reshape(-1))


@torch.no_grad()
def test_part_decoder_reconstructs_the_requested_quadrant_of_the_16px_map():
    torch.manual_seed(0)
    D = FastGANDiscriminator(ndf=4, im_size=256, decoder_channels=[8, 8, 8, 8]).eval()
    x = torch.randn(2, 3, 256, 256)
    feats = {}
    D.se_4_32.register_forward_hook(lambda m, i, o: feats.__setitem__("f32", o))
    for q in range(4):
        _, (_, _, rec_part) = D(x, part=q)
        torch.testing.assert_close(rec_part, D.decoder_part(crop_quadrant(feats["f32"], q)))
    assert torch.equal(crop_quadrant(torch.arange(16.).reshape(1, 1, 4, 4), 1)[0, 0], torch.tensor([[2., 3.], [6., 7.]]))
    assert torch.equal(crop_quadrant(torch.arange(16.).reshape(1, 1, 4, 4), 2)[0, 0], torch.tensor([[8., 9.], [12., 13.]]))
    with pytest.raises(ValueError, match="quadrant"):
        D(x, part=4)


def _sn_layers(model):
    return [m for m in model.modules() if hasattr(m, "weight_orig")]


@torch.no_grad()
def test_spectral_norm_eval_keeps_u_v_and_train_runs_one_power_iteration(fg):
    d, inp, exp, meta, tol = fg
    G = asap.pretrained.load(d / "checkpoint.pt", family="fastgan")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    G(inp["z"].float(), noise=_noise(inp["noise"]))
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())  # eval: nothing moves
    G.train()
    G(inp["z_train_mode"].float(), noise=_noise(inp["noise_train_mode"]))
    for name, m in G.named_modules():
        if not hasattr(m, "weight_orig"):
            continue
        w = m.weight_orig
        mat = (w.transpose(0, 1) if isinstance(m, torch.nn.ConvTranspose2d) else w).reshape(
            w.shape[1] if isinstance(m, torch.nn.ConvTranspose2d) else w.shape[0], -1)
        u0 = before[f"{name}.weight_u"]
        v = F.normalize(mat.t() @ u0, dim=0, eps=1e-12)
        u = F.normalize(mat @ v, dim=0, eps=1e-12)
        torch.testing.assert_close(m.weight_v, v, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.weight_u, u, atol=1e-5, rtol=1e-4)
    bn = G.init.init[1]
    assert not torch.equal(bn.running_mean, before["init.init.1.running_mean"])  # train mode updates statistics


@torch.no_grad()
def _settle(model, seed=0):
    """Trained-looking state without running the network: spectral-norm vectors after a few power iterations,
    moved BatchNorm statistics, non-zero noise strengths; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "weight_orig"):
            w = m.weight_orig
            mat = (w.transpose(0, 1) if isinstance(m, torch.nn.ConvTranspose2d) else w).flatten(1)
            u = F.normalize(torch.randn(mat.shape[0], generator=gen), dim=0)
            for _ in range(5):
                v = F.normalize(mat.t() @ u, dim=0)
                u = F.normalize(mat @ v, dim=0)
            m.weight_u.copy_(u)
            m.weight_v.copy_(v)
        elif isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
        elif type(m).__name__ == "NoiseInjection":
            m.weight.uniform_(0.1, 0.3, generator=gen)
    return model.eval()


def _raw_outputs(G, z, noise):
    """(image, 128 px output) and the convolutions' raw outputs before any tanh."""
    raw = {}
    hooks = [G.to_big.register_forward_hook(lambda m, i, o: raw.__setitem__("big", o)),
             G.to_128.register_forward_hook(lambda m, i, o: raw.__setitem__("small", o))]
    img, small = G(z, noise=noise, return_small=True)
    for h in hooks:
        h.remove()
    return img, small, raw


@torch.no_grad()
def test_tanh_only_at_1024_and_noise_maps_in_forward_order():
    torch.manual_seed(0)
    for size in (256, 512, 1024):
        G = FastGANGenerator(nz=8, im_size=size, channels=[16, 8, 8, 4, 4, 4, 2, 2, 2][:size.bit_length() - 2])
        _settle(G)
        assert G.num_noise == (6 if size == 256 else 8)
        assert [s[2] for s in G.noise_shapes()] == [8, 8, 32, 32, 128, 128] + ([512, 512] if size > 256 else [])
        z = torch.randn(2, 8)
        noise = [torch.randn(s) for s in G.noise_shapes()]  # [1, 1, r, r]: broadcast over the batch
        img, small, raw = _raw_outputs(G, z, noise)
        assert img.shape == (2, 3, size, size) and small.shape == (2, 3, 128, 128)
        if size == 1024:
            torch.testing.assert_close(img, torch.tanh(raw["big"]))
            torch.testing.assert_close(small, torch.tanh(raw["small"]))
        else:
            assert torch.equal(img, raw["big"]) and torch.equal(small, raw["small"])
        if size != 256:
            continue
        # per-sample maps equal the broadcast ones; noise=None draws fresh maps once the strengths are non-zero
        assert torch.equal(G(z, noise=[n.expand(2, -1, -1, -1) for n in noise]), G(z, noise=noise))
        for m in G.modules():
            if type(m).__name__ == "NoiseInjection":
                m.weight.fill_(0.5)
        assert not torch.equal(G(z), G(z))
        with pytest.raises(ValueError, match="noise needs"):
            G(z, noise=noise[:-1])


def test_official_sizes_match_the_paper_code():
    counts = {s: sum(p.numel() for p in FastGANGenerator(64, 256, 3, s).parameters()) for s in (256, 512, 1024)}
    assert round(counts[256] / 1e6, 2) == 29.13 and round(counts[1024] / 1e6, 2) == 29.18
    assert round(sum(p.numel() for p in FastGANDiscriminator(64, 3, 256).parameters()) / 1e6, 2) == 11.53
    with pytest.raises(ValueError, match="256, 512 or 1024"):
        FastGANGenerator(im_size=128)


def test_to_official_is_byte_identical_to_the_official_all_N_file(fg, tmp_path):
    d, inp, exp, meta, tol = fg
    state = load_training_state(d / "checkpoint.pt")
    out = to_official(tmp_path / "all_0.pth", state["generator"], state["discriminator"], state["g_ema"],
                      state["opt_g"], state["opt_d"])
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    assert digest == meta["files"]["checkpoint.pt"]["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all_0.pth"]  # no temporary left behind


def _random_pair(size, seed):
    """A trained-looking random configuration: odd widths, nz, nc, decoders; non-zero noise, moved statistics."""
    torch.manual_seed(seed)
    G = FastGANGenerator(nz=24, nc=1 if size == 512 else 3, im_size=size,
                         channels=[40, 24, 12, 10, 6, 6, 4] + ([4] if size > 256 else []) + ([2] if size > 512 else []))
    D = FastGANDiscriminator(nc=G.nc, im_size=size, channels=[16, 12, 10, 8, 6, 4, 2] + ([2] if size > 512 else []),
                             decoder_channels=[6, 4, 4, 2])
    _settle(G, seed)
    _settle(D, seed + 1)
    G_ema = FastGANGenerator(nz=24, nc=G.nc, im_size=size, channels=G.channels)
    G_ema.load_state_dict(G.state_dict())
    with torch.no_grad():
        for p in G_ema.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return G.eval(), G_ema.eval(), D.eval()


@pytest.mark.parametrize("size", [512, 1024])
def test_unseen_configurations_load_from_both_official_formats(tmp_path, size):
    G, G_ema, D = _random_pair(size, seed=size)
    path = to_official(tmp_path / "all_7.pth", G, D, G_ema)
    # N.pth: EMA parameters + the raw generator's buffers (what the official trainer writes beside all_N.pth)
    n_pth = tmp_path / "7.pth"
    torch.save({"g": torch.load(path, weights_only=True)["g"] | {
        "module." + k: v for k, v in G_ema.state_dict().items() if k in dict(G_ema.named_parameters())},
        "d": torch.load(path, weights_only=True)["d"]}, n_pth)
    z = torch.randn(1, 24)
    noise = [torch.randn(s) for s in G.noise_shapes()]
    x = torch.rand(1, G.nc, size, size) * 2 - 1
    with torch.no_grad():
        want_g = G_ema(z, noise, return_small=True)
        want_l, want_r = D(x, part=3)
        assert torch.isfinite(want_g[0]).all() and want_g[0].std() > 0
        for f in (path, n_pth):
            ema = asap.pretrained.load(f, family="fastgan")
            assert (ema.im_size, ema.nz, ema.nc, ema.channels) == (size, 24, G.nc, G.channels)
            assert all(torch.equal(a, b) for a, b in zip(ema(z, noise, return_small=True), want_g))
            D2 = asap.pretrained.load(f, part="discriminator")  # family detected from the keys
            assert (D2.channels, D2.decoder_channels) == (D.channels, D.decoder_channels)
            l1, r1 = D2(x, part=3)
            assert torch.equal(l1, want_l) and all(torch.equal(a, b) for a, b in zip(r1, want_r))
        raw = asap.pretrained.load(path, family="fastgan", which="g")
        assert torch.equal(raw(z, noise), G(z, noise))


def test_keys_without_module_prefix_and_in_the_parametrization_layout_load(fg, tmp_path):
    d, inp, exp, meta, tol = fg
    obj = torch.load(d / "checkpoint_g_d.pt", weights_only=True)
    sd = normalize_keys(obj["g"])
    new = OrderedDict()
    for k, v in sd.items():  # torch.nn.utils.parametrizations.spectral_norm's names
        for old, repl in (("weight_orig", "parametrizations.weight.original"), ("weight_u", "parametrizations.weight.0._u"),
                          ("weight_v", "parametrizations.weight.0._v")):
            if k.endswith("." + old):
                k = k[: -len(old)] + repl
        new[k] = v
    torch.save({"g": new, "d": normalize_keys(obj["d"])}, tmp_path / "0.pth")
    G = asap.pretrained.load(tmp_path / "0.pth", family="fastgan")
    with torch.no_grad():
        _close(G(inp["z"].float(), noise=_noise(inp["noise"])), exp["g_ema_eval/img_big"], tol, "renamed keys")


def test_bad_files_and_options_are_one_line_errors(fg, tmp_path):
    d, inp, exp, meta, tol = fg

    def err(path, **kw):
        with pytest.raises(AsapError) as e:
            asap.pretrained.load(path, **kw)
        assert "\n" not in str(e.value)
        return str(e.value)

    assert "N.pth file holds only the EMA generator" in err(d / "checkpoint_g_d.pt", family="fastgan", which="g")
    assert "which must be" in err(d / "checkpoint.pt", family="fastgan", which="d_ema")
    assert "part must be" in err(d / "checkpoint.pt", family="fastgan", part="encoder")
    assert "unexpected option" in err(d / "checkpoint.pt", family="fastgan", ngf=64)
    obj = torch.load(d / "checkpoint.pt", weights_only=True)
    torch.save({**obj, "g_ema": obj["g_ema"][:-1]}, tmp_path / "short.pth")
    assert "g_ema holds 43 tensors" in err(tmp_path / "short.pth", family="fastgan")
    g = dict(obj["g"])
    g.pop("module.feat_16.2.running_var")
    torch.save({"g": g, "d": obj["d"]}, tmp_path / "missing.pth")
    assert "missing key 'feat_16.2.running_var'" in err(tmp_path / "missing.pth", family="fastgan")
    d_only = {"d": obj["d"]}
    torch.save(d_only, tmp_path / "d_only.pth")
    assert "no generator" in err(tmp_path / "d_only.pth", family="fastgan")
    (tmp_path / "trunc.pth").write_bytes((d / "checkpoint.pt").read_bytes()[:5000])
    assert "corrupt or truncated" in err(tmp_path / "trunc.pth", family="fastgan")
    torch.save({"g": {"style.1.weight": torch.zeros(1)}}, tmp_path / "foreign.pth")
    assert "not an official fastgan checkpoint" in err(tmp_path / "foreign.pth", family="fastgan")
