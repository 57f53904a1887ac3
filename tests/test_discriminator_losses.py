"""Multi-scale discriminator structure, GAN / feature-matching / VGG perceptual losses on hand-made values,
and the perceptual loss's offline behaviour (no network: a clear one-line error, never a hang)."""
from __future__ import annotations

import math
import threading
import time
import urllib.error

import pytest
import torch
import torch.nn.functional as F

import asap.losses.perceptual as perceptual
from asap.errors import AsapError
from asap.losses.adversarial import GANLoss
from asap.losses.feature_matching import FeatureMatchingLoss, feature_matching_loss
from asap.losses.perceptual import VGG19_FILE, VGGPerceptualLoss
from asap.models.discriminator import MultiscaleDiscriminator, NLayerDiscriminator


def _conv_out(size: int, stride: int) -> int:
    return (size + 2 * 2 - 4) // stride + 1  # 4x4 kernel, padding 2


def _pool_out(size: int) -> int:
    return (size + 2 - 3) // 2 + 1


# ---- discriminator ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("num_D", [2, 3])
@pytest.mark.parametrize("n_layers", [3, 4])
def test_multiscale_structure_and_shapes(num_D, n_layers):
    torch.manual_seed(0)
    ndf, size = 4, 40
    d = MultiscaleDiscriminator(input_nc=5, ndf=ndf, n_layers_D=n_layers, num_D=num_D)
    out = d(torch.randn(2, 5, size, size))
    assert len(out) == num_D
    widths = [min(ndf * 2 ** i, 512) for i in range(n_layers)] + [1]
    strides = [2] * (n_layers - 1) + [1, 1]
    for scale in out:
        assert len(scale) == n_layers + 1  # every block's output, the logits last
        s = size
        for feat, width, stride in zip(scale, widths, strides):
            s = _conv_out(s, stride)
            assert feat.shape == (2, width, s, s)
        size = _pool_out(size)  # the next scale sees a 2x pooled input
    # without intermediate features, each scale returns only its logits (same weights, same values)
    d.eval()  # no spectral-norm power iteration between the two calls
    d.get_intermediate_features = False
    short = d(torch.ones(2, 5, 40, 40))
    d.get_intermediate_features = True
    full = d(torch.ones(2, 5, 40, 40))
    assert [len(s) for s in short] == [1] * num_D
    assert all(torch.allclose(a[0], b[-1]) for a, b in zip(short, full))


def test_discriminator_official_layout_and_norms():
    d = MultiscaleDiscriminator(input_nc=7, ndf=8, n_layers_D=4, num_D=2, ndf_max=16)
    keys = d.state_dict()
    assert keys["discriminator_0.model0.0.weight"].shape == (8, 7, 4, 4)  # first conv: plain, with bias
    assert "discriminator_0.model0.0.bias" in keys
    assert keys["discriminator_1.model1.0.0.weight_orig"].shape == (16, 8, 4, 4)  # spectral conv + instance norm
    assert "discriminator_1.model1.0.0.bias" not in keys  # bias dropped before a norm
    assert keys["discriminator_0.model3.0.0.weight_orig"].shape == (16, 16, 4, 4)  # width capped by ndf_max
    assert keys["discriminator_0.model4.0.weight"].shape == (1, 16, 4, 4)
    assert d.discriminator_0.model3[0][0].stride == (1, 1) and d.discriminator_0.model2[0][0].stride == (2, 2)
    bn = NLayerDiscriminator(3, ndf=4, n_layers_D=3, norm_D="spectralbatch").state_dict()
    assert "model1.0.1.running_mean" in bn and "model1.0.1.weight" in bn  # affine batch norm
    plain = NLayerDiscriminator(3, ndf=4, n_layers_D=3, norm_D="none").state_dict()
    assert "model1.0.weight" in plain and "model1.0.bias" in plain
    with pytest.raises(ValueError):
        NLayerDiscriminator(3, norm_D="spectralgroup")
    with pytest.raises(ValueError, match=r"\[B,7,H,W\]"):
        d(torch.zeros(1, 6, 32, 32))


def test_scale_downsampling_ignores_padding():
    x = torch.full((1, 2, 9, 9), 3.0)
    y = MultiscaleDiscriminator.downsample(x)
    assert y.shape == (1, 2, 5, 5) and torch.allclose(y, torch.full_like(y, 3.0))  # borders too
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = MultiscaleDiscriminator.downsample(x)
    assert y[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 4 + 5) / 4)  # corner: 4 real pixels averaged


def test_official_initialisation_of_discriminator():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator(input_nc=3, ndf=64, n_layers_D=3, num_D=1)
    w = d.discriminator_0.model1[0][0].weight_orig
    expected_std = 0.02 * math.sqrt(2.0 / (64 * 16 + 128 * 16))
    assert abs(w.std().item() / expected_std - 1) < 0.05
    assert torch.count_nonzero(d.discriminator_0.model0[0].bias) == 0


# ---- GAN loss --------------------------------------------------------------------------------------------------
def test_hinge_loss_values():
    loss = GANLoss("hinge")
    x = torch.tensor([2.0, -0.5])
    assert loss(x, True, for_discriminator=True).item() == pytest.approx((0 + 1.5) / 2)    # mean(relu(1 - x))
    assert loss(x, False, for_discriminator=True).item() == pytest.approx((3 + 0.5) / 2)   # mean(relu(1 + x))
    assert loss(x, True, for_discriminator=False).item() == pytest.approx(-0.75)            # -mean(x)
    # the official formulation: -mean(min(x - 1, 0))
    r = torch.randn(3, 1, 5, 5)
    assert torch.allclose(loss(r, True), -torch.minimum(r - 1, torch.zeros_like(r)).mean())
    with pytest.raises(ValueError):
        loss(x, False, for_discriminator=False)


def test_multiscale_loss_is_the_mean_over_scales():
    loss = GANLoss("hinge")
    feat = torch.full((1, 2, 3, 3), 100.0)  # intermediate features are ignored
    scales = [[feat, torch.tensor([[2.0, -0.5]])], [feat, torch.tensor([[0.0, 0.0, 0.0, -1.0]])]]
    d_real = ((0 + 1.5) / 2 + (1 + 1 + 1 + 2) / 4) / 2
    assert loss(scales, True).item() == pytest.approx(d_real)
    assert loss(scales, True, for_discriminator=False).item() == pytest.approx((-0.75 + 0.25) / 2)
    assert loss([torch.tensor([2.0, -0.5])], False).item() == pytest.approx(1.75)  # bare logit maps work too
    assert loss(scales, True).dim() == 0


def test_other_gan_modes():
    x = torch.tensor([2.0, -0.5])
    assert GANLoss("ls")(x, True).item() == pytest.approx((1 + 2.25) / 2)
    assert GANLoss("ls")(x, False).item() == pytest.approx((4 + 0.25) / 2)
    bce_real = -(math.log(1 / (1 + math.exp(-2.0))) + math.log(1 / (1 + math.exp(0.5)))) / 2
    assert GANLoss("original")(x, True).item() == pytest.approx(bce_real, rel=1e-6)
    assert GANLoss("original")(x, True, for_discriminator=False).item() == pytest.approx(bce_real, rel=1e-6)
    assert GANLoss("w")(x, True).item() == pytest.approx(-0.75)
    assert GANLoss("w")(x, False).item() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        GANLoss("wasserstein-gp")


# ---- feature matching ------------------------------------------------------------------------------------------
def test_feature_matching_values():
    a = [[torch.randn(2, 3, 4, 4), torch.randn(2, 1, 3, 3)] for _ in range(2)]
    same = [[t.clone() for t in s] for s in a]
    assert feature_matching_loss(a, same, 10.0).item() == 0.0
    ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
    fake = [[ones, zeros, torch.full((1, 1, 2, 2), 7.0)], [ones, ones]]
    real = [[zeros, torch.full((1, 1, 2, 2), 3.0), torch.zeros(1, 1, 2, 2)], [ones, -ones]]
    # scale 0: L1 1 + 3 (the logits' difference of 7 excluded); scale 1: 0 (logits excluded); / num_D=2
    assert feature_matching_loss(fake, real, 10.0).item() == pytest.approx(10.0 * 4 / 2)
    assert FeatureMatchingLoss(lambda_feat=10.0)(fake, real).item() == pytest.approx(20.0)
    assert feature_matching_loss(fake, real).item() == pytest.approx(2.0)


def test_feature_matching_gradients_reach_only_the_fake_side():
    fake = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2, requires_grad=True)]]
    real = [[torch.randn(1, 2, 3, 3, requires_grad=True), torch.randn(1, 1, 2, 2, requires_grad=True)]]
    feature_matching_loss(fake, real, 10.0).backward()
    assert fake[0][0].grad is not None and fake[0][0].grad.abs().sum() > 0
    assert real[0][0].grad is None
    assert fake[0][1].grad is None  # the final prediction takes no part


# ---- VGG perceptual loss ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def random_vgg():
    return VGGPerceptualLoss(pretrained=False)


def test_vgg_loss_random_weights(random_vgg):
    vgg = random_vgg
    assert vgg.pretrained is False and not vgg.training
    assert all(not p.requires_grad for p in vgg.parameters())
    torch.manual_seed(1)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    assert vgg(x, x.clone()).item() == 0.0
    value = vgg(x, y)
    assert value.dim() == 0 and value.item() > 0
    feats = vgg.features(x)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    manual = sum(w * F.l1_loss(a, b) for w, a, b in
                 zip((1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), feats, vgg.features(y)))
    assert value.item() == pytest.approx(manual.item(), rel=1e-5)
    assert VGGPerceptualLoss(pretrained=False)(x, y).item() == pytest.approx(value.item(), rel=1e-6)  # seeded


def test_vgg_loss_gradient_goes_to_the_fake_only(random_vgg):
    fake = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_()
    real = (torch.rand(1, 3, 16, 16) * 2 - 1).requires_grad_()
    random_vgg.train()  # stays a fixed extractor
    assert not random_vgg.training
    random_vgg(fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and real.grad is None


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network is unreachable (test)")


def test_vgg_pretrained_offline_names_file_and_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(perceptual.urllib.request, "urlopen", _no_network)
    where = tmp_path / "hub" / "checkpoints"
    with pytest.raises(AsapError) as ei:
        VGGPerceptualLoss(pretrained=True)
    msg = str(ei.value)
    assert "\n" not in msg and VGG19_FILE in msg and str(where) in msg and "pretrained=false" in msg
    assert not (where / VGG19_FILE).exists()

    def must_not_be_called(*a, **k):
        raise AssertionError("download attempted although download=False")

    monkeypatch.setattr(perceptual.urllib.request, "urlopen", must_not_be_called)
    with pytest.raises(AsapError, match="vgg19-dcbb9e9d.pth"):
        VGGPerceptualLoss(pretrained=True, download=False)


def test_vgg_download_that_stalls_gives_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    release = threading.Event()

    def hang(*a, **k):
        release.wait(30)
        raise urllib.error.URLError("released")

    monkeypatch.setattr(perceptual.urllib.request, "urlopen", hang)
    t0 = time.monotonic()
    try:
        with pytest.raises(AsapError, match=r"vgg19-dcbb9e9d\.pth.*no data for 0\.3 s"):
            VGGPerceptualLoss(pretrained=True, download_timeout=0.3)
    finally:
        release.set()
    assert time.monotonic() - t0 < 10


def test_vgg_pretrained_loads_cached_file(tmp_path, monkeypatch, random_vgg):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(perceptual.urllib.request, "urlopen", _no_network)
    where = tmp_path / "hub" / "checkpoints"
    where.mkdir(parents=True)
    torch.manual_seed(3)
    state = {f"features.{k}": torch.randn_like(v) for k, v in perceptual.vgg19_features().state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(4096)  # the real file has the classifier too; it is not used
    torch.save(state, where / VGG19_FILE)
    vgg = VGGPerceptualLoss(pretrained=True)
    assert vgg.pretrained is True
    assert torch.equal(vgg.slices[0][0].weight, state["features.0.weight"])
    assert torch.equal(vgg.slices[4][-2].weight, state["features.28.weight"])  # conv5_1 (relu5_1 follows)
    (where / VGG19_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(AsapError) as ei:
        VGGPerceptualLoss(pretrained=True)
    assert str(where / VGG19_FILE) in str(ei.value) and "\n" not in str(ei.value)
