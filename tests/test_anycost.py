"""Anycost GAN networks and reader: every entry of the official fixture (full and sub-generators, early exits, RGB
skips, noise/w+/truncation/mixing variants, non-EMA G, conditioned multi-resolution D, channel sorting), bit-exact
export, detection rules, the sub-generator API and round trips of unseen configurations."""
from __future__ import annotations

import json

import pytest
import torch

import asap.pretrained
from asap.errors import AsapError
from asap.models.anycost import AnycostDiscriminator, AnycostGenerator, encode_arch
from asap.models.stylegan2 import StyleGAN2Generator
from asap.pretrained.anycost import to_official
from tests.conftest import fixture_dir


@pytest.fixture(scope="module")
def fx():
    d = fixture_dir("anycost")
    inputs = torch.load(d / "inputs.pt", weights_only=True)
    expected = torch.load(d / "expected.pt", weights_only=True)
    meta = json.loads((d / "meta.json").read_text())
    tol = meta["suggested_tolerance"]
    return d, inputs, expected, meta, tol


def _selection(cfg: dict) -> dict:
    kw = {"resolution": cfg["target_res"]}
    if cfg["kind"] == "uniform":
        kw["ratio"] = cfg["ratio"]
    elif cfg["kind"] == "flexible":
        kw["channels"] = cfg["channels"]
    return kw


def _generator_outputs(G: AnycostGenerator, inp: dict, cfg: dict) -> dict[str, torch.Tensor]:
    """Our outputs for every generator entry kind of the fixture, under the config ``cfg``."""
    name, z, noise = cfg["name"], inp["z"][:, 0], inp["noise"]
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad(), G.sub_generator(**_selection(cfg)):
        assert G.sub_channels == cfg["channels_resolved"]
        img, rgbs = G.synthesis(G.broadcast(G.mapping(z)), noise=noise, return_rgbs=True)
        out[f"img/{name}"] = img
        torch.testing.assert_close(G(z, noise=noise), img, rtol=0, atol=0)  # the three entry points agree
        out[f"rgbs/{name}"] = rgbs
        out[f"img_buffer_noise/{name}"] = G(z)                     # stored noise buffers (noise_mode='const')
        out[f"img_wplus/{name}"] = G.synthesis(inp["wplus"], noise=noise)
        out[f"img_truncated/{name}"] = G(z, truncation_psi=inp["truncation"], noise=noise)
        img, ws = G(z, z2=inp["z2"][:, 0], inject_index=inp["inject_index"], noise=noise, return_latents=True)
        out[f"img_mixed/{name}"], out[f"styles_mixed/{name}"] = img, ws
    return out


def test_every_generator_entry_of_the_official_fixture(fx):
    d, inp, exp, meta, tol = fx
    G = asap.pretrained.load(d / "checkpoint.pt", family="anycost", which="g_ema")
    G_raw = asap.pretrained.load(d / "checkpoint.pt", family="anycost", which="g")
    assert isinstance(G, AnycostGenerator) and isinstance(G, StyleGAN2Generator) and not G.training
    assert G.full_channels == meta["full_channel_config"] and G.num_ws == meta["derived"]["n_style"]
    assert G.channels == [meta["channels"][str(2 ** i)] for i in range(2, meta["derived"]["log_res"] + 1)]
    for r, widths in meta["uniform_ratio_configs"].items():
        assert G.ratio_channels(float(r)) == widths
    with torch.no_grad():
        torch.testing.assert_close(G.mapping(inp["z"][:, 0]), exp["w"][:, 0], **tol["images"])
        ts = G.mapping(inp["trunc_z"]).mean(0)
        torch.testing.assert_close(ts, exp["truncation_style"], **tol["images"])
    G.w_avg.copy_(exp["truncation_style"])
    ours: dict = {}
    for cfg in inp["subgen_configs"]:
        ours.update(_generator_outputs(G, inp, cfg))
        with torch.no_grad(), G_raw.sub_generator(**_selection(cfg)):
            ours[f"img_nonema_g/{cfg['name']}"] = G_raw(inp["z"][:, 0], noise=inp["noise"])
    checked = 0
    for key, ref in exp.items():
        if key in ("w", "truncation_style") or key.startswith(("d_logits/", "img_sorted/", "sorted_")):
            continue
        assert key in ours, f"fixture entry {key} not produced"
        if isinstance(ref, list):
            assert len(ours[key]) == len(ref), key
            for a, b in zip(ours[key], ref):
                torch.testing.assert_close(a, b, **tol["images"], msg=key)
        else:
            torch.testing.assert_close(ours[key], ref, **tol["images"], msg=key)
        checked += 1
    assert checked >= 18


def test_conditioned_multires_discriminator_logits(fx):
    d, inp, exp, meta, tol = fx
    D = asap.pretrained.load(d / "checkpoint.pt", family="anycost", part="discriminator")
    assert isinstance(D, AnycostDiscriminator)
    assert D.resolutions == meta["constructor"]["discriminator"]["input_resolutions"]
    assert D.arch_len == meta["constructor"]["discriminator"]["g_arch_len"]
    keys = [k for k in exp if k.startswith("d_logits/")]
    assert len(keys) == len(D.resolutions) * len(inp["g_arch"])
    for key in keys:
        _, res, arch = key.split("/")
        name = arch[len("arch_"):]
        g_arch = encode_arch([r["value"] if isinstance(r, dict) else r for r in inp["g_arch_ratios"][name]])
        torch.testing.assert_close(g_arch, inp["g_arch"][name], rtol=0, atol=0)
        with torch.no_grad():
            logits = D(inp[f"d_x_{res[3:]}"].float(), g_arch)
        assert logits.shape == exp[key].shape
        torch.testing.assert_close(logits, exp[key], **tol["d_logits"], msg=key)
    with torch.no_grad():  # no g_arch = the full generator's
        torch.testing.assert_close(D(inp["d_x_128"].float()), exp["d_logits/res128/arch_1.0"], **tol["d_logits"])
    with pytest.raises(ValueError, match="side"):
        D(torch.zeros(2, 3, 8, 8))


def test_channel_sorting_matches_the_official_order(fx):
    d, inp, exp, meta, tol = fx
    G = asap.pretrained.load(d / "checkpoint.pt", family="anycost")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    G.sort_channels(z=inp["sort_z"])
    sd = to_official(generator=G)["g_ema"]
    ref = exp["sorted_g_ema_state_dict"]
    for k, v in ref.items():
        torch.testing.assert_close(sd[k], v, **tol["sorted_state_dict"], msg=k)
    assert any(not torch.equal(before[k], v) for k, v in G.state_dict().items())
    for cfg in inp["subgen_configs"]:
        key = f"img_sorted/{cfg['name']}"
        if key in exp:
            with torch.no_grad(), G.sub_generator(**_selection(cfg)):
                torch.testing.assert_close(G(inp["z"][:, 0], noise=inp["noise"]), exp[key], **tol["images"])


def test_export_is_bit_exact_and_detection_prefers_anycost_for_trainer_files(fx, tmp_path):
    d, inp, exp, meta, tol = fx
    path = d / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    G = asap.pretrained.load(path)  # detected as anycost (multi-res d, fid keys)
    assert isinstance(G, AnycostGenerator)
    out = to_official(generator=G, discriminator=asap.pretrained.load(path, part="discriminator"),
                      g=asap.pretrained.load(path, which="g"))
    assert set(out) == {"g_ema", "d", "g"}
    for name in ("g_ema", "g", "d"):
        assert set(out[name]) == set(ckpt[name]), name
        for k, v in ckpt[name].items():
            assert torch.equal(out[name][k], v), (name, k)
    # a model-zoo file ({"g_ema": ...}) is also a rosinality file: read as asked
    zoo = tmp_path / "anycost-zoo.pt"
    torch.save({"g_ema": ckpt["g_ema"]}, zoo)
    assert type(asap.pretrained.load(zoo)) is StyleGAN2Generator
    G2 = asap.pretrained.load(zoo, family="anycost")
    assert isinstance(G2, AnycostGenerator)
    with torch.no_grad(), G2.sub_generator(ratio=0.5, resolution=128):
        torch.testing.assert_close(G2(inp["z"][:, 0], noise=inp["noise"]), exp["img/uniform_0.5_at_128"],
                                   **tol["images"])
    assert type(asap.pretrained.load(path, family="stylegan2")) is StyleGAN2Generator  # plain G of a trainer file
    with pytest.raises(AsapError, match="no discriminator"):
        asap.pretrained.load(zoo, family="anycost", part="discriminator")
    with pytest.raises(AsapError, match="unknown Anycost generator option"):
        asap.pretrained.load(zoo, family="anycost", channel_multiplier=2)


def _tiny(size=32, cm=0.5, cap=16, style=16, n_mlp=2, seed=0) -> AnycostGenerator:
    torch.manual_seed(seed)
    G = AnycostGenerator(size, style, n_mlp, channel_multiplier=cm, channel_max=cap).eval()
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return G


def test_sub_generator_api_and_early_exits():
    G = _tiny(size=64, cm=0.0625, cap=32)
    assert G.channels == [32, 32, 32, 32, 16] and G.channel_max == 32
    assert G.ratio_channels(0.25) == [32, 32, 32, 32, 16, 16, 8, 8, 4, 4]  # cap after the ratio
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        full, rgbs = G.synthesis(G.mapping(z), return_rgbs=True)
        assert [r.shape[-1] for r in rgbs] == [4, 8, 16, 32, 64]
        for res, ref in zip((4, 8, 16, 32, 64), rgbs):
            with G.sub_generator(resolution=res):
                img, sub_rgbs = G.synthesis(G.mapping(z), return_rgbs=True)
                assert img.shape[-1] == res and len(sub_rgbs) == len(sub_rgbs) and torch.equal(img, ref)
                assert [r.shape[-1] for r in sub_rgbs][-1] == res
        G.set_sub_generator(ratio=0.5)
        with G.sub_generator(channels=[8] * G.num_ws, resolution=16):
            assert G.sub_channels == [8] * G.num_ws and G.sub_resolution == 16
            assert G(z).shape == (2, 3, 16, 16)
        assert G.sub_channels == G.ratio_channels(0.5) and G.sub_resolution == 64  # restored on exit
        half = G(z)
        assert not torch.allclose(half, full)
        G.reset_sub_generator()
        assert G.sub_channels == G.full_channels
        torch.testing.assert_close(G(z), full, rtol=0, atol=0)
        with G.sub_generator(ratio=1.0):
            torch.testing.assert_close(G(z), full, rtol=0, atol=0)
        # width slicing = a network whose layers hold the first k channels (full fan-in scale kept)
        with G.sub_generator(channels=[32, 32, 32, 32, 32, 32, 32, 32, 16, 8]):
            sliced = G(z)
        assert torch.isfinite(sliced).all() and not torch.allclose(sliced, full)
    for bad, msg in (({"ratio": 0.3}, "ratio"), ({"ratio": 0.5, "channels": [8] * 10}, "not both"),
                     ({"channels": [8] * 3}, "10 widths"), ({"channels": [64] * 10}, "outside"),
                     ({"resolution": 128}, "resolution"), ({"resolution": 12}, "resolution")):
        with pytest.raises(ValueError, match=msg):
            G.set_sub_generator(**bad)


def test_sort_channels_keeps_the_full_output_and_reorders_sub_outputs():
    G = _tiny()
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        full, half = G(z), G.set_sub_generator(ratio=0.25)(z)
        G.reset_sub_generator()
        G.sort_channels(n=512, seed=1)
        torch.testing.assert_close(G(z), full, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(G.set_sub_generator(ratio=0.25)(z), half)


@pytest.mark.parametrize("size,cm,cap,n_res,modulate", [(32, 0.5, 16, 3, True), (64, 0.25, 24, 2, False)])
def test_unseen_configuration_round_trips_through_the_official_layout(tmp_path, size, cm, cap, n_res, modulate):
    G = _tiny(size, cm, cap, seed=size)
    D = AnycostDiscriminator(size, channel_multiplier=cm, channel_max=cap, n_res=n_res, modulate=modulate,
                             num_ws=G.num_ws)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    path = tmp_path / "ckpt.pt"
    torch.save({**to_official(generator=G, discriminator=D, g=G), "epoch": 3, "fid": 1.0, "best_fid": 1.0}, path)
    G2 = asap.pretrained.load(path)
    D2 = asap.pretrained.load(path, part="discriminator")
    assert G2.channels == G.channels and D2.resolutions == D.resolutions and D2.modulate == modulate
    z = torch.randn(4, G.z_dim)
    arch = encode_arch([0.5] * G.num_ws)
    with torch.no_grad():
        for kw in ({}, {"ratio": 0.25, "resolution": size // 2}):
            with G.sub_generator(**kw), G2.sub_generator(**kw):
                torch.testing.assert_close(G2(z, noise_mode="const"), G(z, noise_mode="const"), rtol=0, atol=0)
        for r in D.resolutions:
            x = torch.randn(4, 3, r, r)
            torch.testing.assert_close(D2(x, arch), D(x, arch), rtol=0, atol=0)


def test_encode_arch():
    v = encode_arch([0.25, 1.0, 0.5])
    assert v.tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="g_arch ratios"):
        encode_arch([0.3])


def test_benchmark_rows_per_sub_generator_in_both_mac_conventions(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    pytest.importorskip("torchprofile", reason="torchprofile (the papers' MAC count) is not installed")
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "models=[anycost]", "res=[128x128]",
                        "runs=1", "warmup=0", "memory=false", f"out={out}"],
                       capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {row["model"]: row for row in json.loads(out.read_text())}
    assert list(rows) == ["anycost", "anycost@0.75", "anycost@0.5", "anycost@0.25"]
    # config-f widths up to 128 px: the reference's measured counts (docs §3.1, the 1024 net exiting at 128)
    assert abs(rows["anycost"]["macs"] / 1e9 - 30.7) < 0.06
    assert abs(rows["anycost"]["macs_torchprofile"] / 1e9 - 55.8) < 0.06
    macs = [rows[n]["macs"] for n in rows]
    assert macs == sorted(macs, reverse=True) and macs[-1] < macs[0] / 7  # thinner is cheaper
    assert all(rows[n]["macs_torchprofile"] > rows[n]["macs"] for n in rows)
    assert "128x128: anycost@0.25 is" in r.stdout and "faster than anycost" in r.stdout
