"""SPADE generator: parity with the official NVlabs/SPADE checkpoint fixture, the reader's options and errors,
preprocessing, and the generator's shapes for every num_upsampling_layers / VAE setting."""
from __future__ import annotations

import json

import pytest
import torch

import asap.pretrained as pretrained
from asap.data.preprocess import semantic_input
from asap.errors import AsapError
from asap.models.spade import SPADEGenerator, latent_grid_size
from asap.nn.spade import SPADE, SPADEResBlock, parse_spade_norm
from asap.pretrained import spade as reader
from asap.pretrained.native import build
from tests.conftest import fixture_dir


@pytest.fixture(scope="module")
def fx():
    d = fixture_dir("spade")
    meta = json.loads((d / "meta.json").read_text())
    inputs = torch.load(d / "inputs.pt", weights_only=True)
    expected = torch.load(d / "expected.pt", weights_only=True)
    return {"dir": d, "ckpt": d / "latest_net_G.pth", "options": meta["options"], "meta": meta,
            "inputs": inputs, "expected": expected}


@pytest.fixture(scope="module")
def loaded(fx):
    model = pretrained.load(fx["ckpt"], family="spade", **fx["options"])
    with torch.no_grad():
        out = model(fx["inputs"]["preprocessed"].float())
    return model, out


# ---- official checkpoint parity ------------------------------------------------------------------------------
def test_official_checkpoint_parity(fx, loaded):
    model, out = loaded
    expected = fx["expected"]["image"]
    assert isinstance(model, SPADEGenerator) and not model.training
    assert out.shape == expected.shape == (fx["meta"]["batch"], 3, fx["meta"]["height"], fx["meta"]["width"])
    assert model.image_size == (fx["meta"]["height"], fx["meta"]["width"])
    err = (out - expected).abs().max().item()
    assert err <= fx["meta"]["tolerance"]["image"], f"max abs error {err}"
    assert out.abs().max() <= 1.0 and out.std() > 0.01  # a real tanh image, not a constant


def test_every_official_key_and_running_stat_loaded(fx, loaded):
    model, _ = loaded
    state = torch.load(fx["ckpt"], weights_only=True)
    ours = model.state_dict()
    assert set(ours) == set(state) == set(fx["meta"]["state_dict"])
    for k, v in state.items():
        assert torch.equal(ours[k], v), k
    rv = ours["head_0.norm_0.param_free_norm.running_var"]
    assert not torch.allclose(rv, torch.ones_like(rv))  # calibrated statistics, not the defaults


def test_eval_uses_running_statistics(fx, loaded):
    model, out = loaded
    with torch.no_grad():
        single = model(fx["inputs"]["preprocessed"][1:].float())
    assert torch.allclose(single, out[1:], atol=1e-5)  # no dependence on the rest of the batch


def test_auto_detection_and_preset(fx, loaded):
    model, _ = loaded
    obj = torch.load(fx["ckpt"], weights_only=True)
    assert reader.detect(obj)
    assert pretrained.detect_family(obj) == "spade"
    auto = pretrained.load(fx["ckpt"], **fx["options"])
    assert isinstance(auto, SPADEGenerator) and auto.asap_config == model.asap_config
    assert all(torch.equal(a, b) for a, b in zip(auto.state_dict().values(), model.state_dict().values()))
    # the fixture was made with --dataset_mode cityscapes --crop_size 256 --ngf 8: the preset gives the rest
    by_preset = pretrained.load(fx["ckpt"], preset="cityscapes", crop_size=256, ngf=8)
    assert by_preset.asap_config == model.asap_config
    assert model.asap_config["num_upsampling_layers"] == "more" and model.asap_config["aspect_ratio"] == 2.0


def test_native_rebuild_from_recorded_config(loaded, fx):
    model, out = loaded
    again = build(model.asap_config).eval()
    again.load_state_dict(model.state_dict())
    with torch.no_grad():
        y = again(fx["inputs"]["preprocessed"][:1].float())
    assert torch.allclose(y, out[:1], atol=1e-6)


def test_preprocessing_matches_official(fx):
    spec = reader.semantic_spec(**fx["options"])
    assert spec.num_channels == fx["options"]["semantic_nc"] == 36
    x = semantic_input(fx["inputs"]["label"], fx["inputs"]["instance"], spec)
    assert x.dtype == torch.float32
    assert torch.equal(x, fx["inputs"]["preprocessed"].float())


# ---- reader errors ---------------------------------------------------------------------------------------------
def _one_line_error(fn) -> str:
    with pytest.raises(AsapError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("change, key, theirs, ours", [
    ({"ngf": 16}, "fc.weight", "(128, 36, 3, 3)", "(256, 36, 3, 3)"),
    ({"label_nc": 34}, "fc.weight", "(128, 36, 3, 3)", "(128, 35, 3, 3)"),
])
def test_wrong_options_name_key_and_both_shapes(fx, change, key, theirs, ours):
    opts = dict(fx["options"], semantic_nc=None, **change)
    msg = _one_line_error(lambda: pretrained.load(fx["ckpt"], family="spade", **opts))
    assert key in msg and theirs in msg and ours in msg and str(fx["ckpt"]) in msg


def test_wrong_architecture_options(fx):
    most = dict(fx["options"], num_upsampling_layers="most", crop_size=512)
    assert "up_4." in _one_line_error(lambda: pretrained.load(fx["ckpt"], family="spade", **most))
    vae = dict(fx["options"], use_vae=True, crop_size=256, z_dim=4)
    msg = _one_line_error(lambda: pretrained.load(fx["ckpt"], family="spade", **vae))
    assert "fc.weight" in msg and "(128, 36, 3, 3)" in msg and "(1024, 4)" in msg
    inst = dict(fx["options"], norm_G="spectralspadeinstance3x3")
    assert "running_mean" in _one_line_error(lambda: pretrained.load(fx["ckpt"], family="spade", **inst))


def test_bad_option_values(fx):
    assert "semantic_nc" in _one_line_error(
        lambda: pretrained.load(fx["ckpt"], family="spade", **dict(fx["options"], semantic_nc=35)))
    assert "lr_depth" in _one_line_error(
        lambda: pretrained.load(fx["ckpt"], family="spade", **dict(fx["options"], lr_depth=3)))
    assert "num_upsampling_layers" in _one_line_error(
        lambda: pretrained.load(fx["ckpt"], family="spade", **dict(fx["options"], num_upsampling_layers="lots")))
    assert "norm_G" in _one_line_error(
        lambda: pretrained.load(fx["ckpt"], family="spade", **dict(fx["options"], norm_G="spectralinstance")))
    assert "preset" in _one_line_error(lambda: reader.resolve_options(preset="mars"))
    assert "aspect_ratio" in _one_line_error(lambda: reader.resolve_options(aspect_ratio="wide"))


def test_file_of_another_family(tmp_path, fx):
    asap_like = tmp_path / "asapnet_net_G.pth"
    torch.save({"lowres_stream.model.0.0.weight": torch.zeros(64, 36, 3, 3),
                "lowres_stream.model.0.1.weight": torch.zeros(64)}, asap_like)
    msg = _one_line_error(lambda: pretrained.load(asap_like, family="spade", **fx["options"]))
    assert "asapnet" in msg and "not spade" in msg and str(asap_like) in msg
    d_like = tmp_path / "latest_net_D.pth"
    torch.save({"discriminator_0.model0.0.weight": torch.zeros(64, 39, 4, 4)}, d_like)
    msg = _one_line_error(lambda: pretrained.load(d_like, family="spade", **fx["options"]))
    assert "not an official spade checkpoint" in msg
    assert not reader.detect({"discriminator_0.model0.0.weight": torch.zeros(1)})
    assert not reader.detect({"fc.weight": torch.zeros(1), "head_0.x": torch.zeros(1)})  # no conv_img
    assert not reader.detect([("conv_img.weight", torch.zeros(1))])


def test_official_defaults_and_presets():
    kw = reader.official_options_to_kwargs()
    assert kw == {"label_nc": 182, "contain_dontcare_label": False, "instance_edge": True, "instance_dist": False,
                  "ngf": 64, "num_upsampling_layers": "normal", "crop_size": 512, "aspect_ratio": 1.0,
                  "norm_G": "spectralspadesyncbatch3x3", "use_vae": False, "z_dim": 256, "output_nc": 3}
    city = reader.official_options_to_kwargs(preset="cityscapes")
    assert (city["label_nc"], city["crop_size"], city["aspect_ratio"], city["num_upsampling_layers"]) == \
        (35, 512, 2.0, "more")
    ade = reader.semantic_spec(preset="ade20k")
    assert (ade.label_nc, ade.contain_dontcare_label, ade.instance_edge, ade.num_channels) == (150, True, False, 151)
    coco = reader.semantic_spec(preset="coco")
    assert coco.num_channels == 182 + 1 + 1
    assert reader.official_options_to_kwargs(preset="facades", no_instance="false")["instance_edge"] is True


# ---- the generator itself --------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, crop, aspect, size", [
    ("normal", 64, 1.0, (64, 64)),     # sw = 64 / 32 = 2
    ("more", 128, 2.0, (64, 128)),     # sw = 2, sh = 1
    ("most", 128, 1.0, (128, 128)),    # sw = 1, sh = 1
])
def test_generator_shapes(mode, crop, aspect, size):
    torch.manual_seed(0)
    g = SPADEGenerator(label_nc=3, instance_edge=False, ngf=2, num_upsampling_layers=mode, crop_size=crop,
                       aspect_ratio=aspect).eval()
    assert g.image_size == size
    assert hasattr(g, "up_4") == (mode == "most")
    x = torch.zeros(2, 3, *size)
    x[:, 0, : size[0] // 2] = 1
    x[:, 1, size[0] // 2:] = 1
    with torch.no_grad():
        for _ in range(3):  # training-mode passes: spectral-norm power iterations and batch-norm statistics
            g.train()(x)
        y = g.eval()(x)
    assert y.shape == (2, 3, *size)
    assert y.abs().max() < 1 and y[0].std() > 0
    assert torch.allclose(y[0], y[1])
    # the output size is fixed by crop_size/aspect_ratio: a half-size input gives the same-size image
    with torch.no_grad():
        assert g(x[..., ::2, ::2]).shape == (2, 3, *size)


def test_generator_vae_mode():
    g = SPADEGenerator(label_nc=3, instance_edge=True, ngf=2, crop_size=64, use_vae=True, z_dim=8).eval()
    assert tuple(g.fc.weight.shape) == (32 * 2 * 2, 8)
    x = torch.zeros(1, 4, 64, 64)
    x[:, 2] = 1
    z = torch.randn(1, 8)
    with torch.no_grad():
        a, b, c = g(x, z), g(x, z), g(x)
    assert a.shape == (1, 3, 64, 64) and torch.equal(a, b) and not torch.allclose(a, c)


def test_generator_rejects_wrong_channel_count():
    g = SPADEGenerator(label_nc=3, contain_dontcare_label=True, ngf=2, crop_size=64)
    assert g.semantic_nc == g.spec.num_channels == 5
    with pytest.raises(ValueError, match=r"\[B,5,H,W\]"):
        g(torch.zeros(1, 4, 64, 64))


def test_official_initialisation():
    torch.manual_seed(0)
    g = SPADEGenerator(label_nc=3, ngf=4, crop_size=64)
    w = g.head_0.conv_0.weight_orig  # spectral-normed conv: the init reaches weight_orig
    fan = w.shape[1] * 9 + w.shape[0] * 9
    expected_std = 0.02 * (2.0 / fan) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.1
    assert torch.count_nonzero(g.head_0.conv_0.bias) == 0 and torch.count_nonzero(g.fc.bias) == 0


def test_spade_norm_parsing_and_blocks():
    cfg = parse_spade_norm("spectralspadesyncbatch3x3")
    assert (cfg.spectral, cfg.param_free, cfg.kernel_size) == (True, "syncbatch", 3)
    cfg = parse_spade_norm("spadeinstance5x5")
    assert (cfg.spectral, cfg.param_free, cfg.kernel_size) == (False, "instance", 5)
    for bad in ("spectralinstance", "spadegroup3x3", "spadebatch4x4", "spadebatch3x5"):
        with pytest.raises(ValueError):
            parse_spade_norm(bad)
    # SPADE with instance norm: no statistics kept; gamma = beta = 0 makes it a plain instance norm
    norm = SPADE(4, 2, "instance", 3)
    assert not any("running" in k for k in norm.state_dict())
    for conv in (norm.mlp_gamma, norm.mlp_beta):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    x = torch.randn(2, 4, 8, 8) * 3 + 1
    y = norm(x, torch.ones(2, 2, 4, 4))
    assert torch.allclose(y, torch.nn.functional.instance_norm(x), atol=1e-5)
    # learned shortcut only when the width changes; no spectral norm without the prefix
    same = SPADEResBlock(8, 8, 2, "spadebatch3x3")
    assert not same.learned_shortcut and not hasattr(same, "conv_s") and "conv_0.weight" in same.state_dict()
    diff = SPADEResBlock(8, 4, 2, "spectralspadebatch3x3")
    keys = diff.state_dict()
    assert diff.learned_shortcut and "conv_s.weight_orig" in keys and "conv_s.bias" not in keys
    assert keys["conv_0.weight_orig"].shape == (4, 8, 3, 3)  # middle width = min(in, out)
    assert diff(torch.randn(2, 8, 4, 4), torch.rand(2, 2, 8, 8)).shape == (2, 4, 4, 4)


def test_latent_grid_size():
    assert latent_grid_size(512, 2.0, "more") == (4, 8)
    assert latent_grid_size(256, 1.0, "normal") == (8, 8)
    with pytest.raises(ValueError):
        latent_grid_size(16, 1.0, "normal")
