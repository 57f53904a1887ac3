"""FID/KID (asap.metrics.fid) against PyPI reference implementations on the same random Inception weights and images,
the offline error, and statistics files. Random weights stand in for the real file, which cannot be downloaded here."""
from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from asap.errors import AsapError
from asap.metrics.fid import Stats, fid, folder_stats, kid, load_stats, save_stats
from asap.metrics.inception import WEIGHTS_FILE, build_inception, default_weights_path, find_weights


def save_random_inception(path: Path, seed: int = 0) -> Path:
    """pytorch-fid's FID Inception with seeded random convolutions (He init keeps the activations O(1)), saved as
    the weights file pytorch-fid loads."""
    import torchvision
    from pytorch_fid import inception as pf

    torch.manual_seed(seed)
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda self, *a, **k: None):
        net = pf.fid_inception_v3()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def write_images(folder: Path, n: int, seed: int, size: int = 48) -> Path:
    """Smooth random colour images (upsampled noise), different per seed."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    weights = save_random_inception(root / "hub" / "checkpoints" / WEIGHTS_FILE)
    a = write_images(root / "a", 4, seed=1)
    b = write_images(root / "b", 4, seed=2)
    net, w = build_inception(weights, dims=DIMS)
    sa, sb = folder_stats(a, net, w, batch_size=4), folder_stats(b, net, w, batch_size=4)
    return root, weights, a, b, sa, sb


# pytorch-fid's 192-d block: the same network, images, resize and Frechet distance as pool3's 2048-d, but a 192x192
# matrix square root, so that the comparison takes seconds on a loaded 2-core CPU (sqrtm of 2048x2048 takes minutes)
DIMS = 192


def test_fid_matches_pytorch_fid_on_the_same_weights_and_images(setup, monkeypatch):
    from pytorch_fid.fid_score import calculate_fid_given_paths

    root, weights, a, b, sa, sb = setup
    ours = fid(sa, sb)
    monkeypatch.setenv("TORCH_HOME", str(root))          # pytorch-fid finds the same file in its hub cache
    assert default_weights_path() == weights
    ref = calculate_fid_given_paths([str(a), str(b)], batch_size=4, device="cpu", dims=DIMS, num_workers=0)
    assert ours > 0.1
    assert abs(ours - ref) <= 1e-3 * abs(ref), (ours, ref)


def test_fid_of_a_folder_against_itself_is_zero(setup):
    _, _, _, _, sa, sb = setup
    assert abs(fid(sa, sa)) < 1e-6 * fid(sa, sb)
    assert sa.features.shape == (4, DIMS) and sa.info["dims"] == DIMS
    assert sa.count == 4 and sa.info["weights_sha256"] == sb.info["weights_sha256"] and len(sa.info["weights_sha256"]) == 64


def test_kid_matches_torchmetrics_on_the_same_features(setup):
    from torchmetrics.image.kid import KernelInceptionDistance

    _, _, _, _, sa, sb = setup

    class Given(torch.nn.Module):      # the features are the input: compares the KID estimator alone
        def forward(self, x):
            return x

    ref = KernelInceptionDistance(feature=Given(), subsets=1, subset_size=4)
    ref.update(torch.from_numpy(sa.features), real=True)
    ref.update(torch.from_numpy(sb.features), real=False)
    ref_mean, _ = ref.compute()
    ours, std = kid(sa.features, sb.features, subsets=1, subset_size=4)
    assert ours == pytest.approx(float(ref_mean), rel=1e-6) and std == 0.0
    m, s = kid(sa.features, sb.features, subsets=10, subset_size=3)
    assert m > 0 and s > 0


def test_pool3_features_are_2048_d(setup):
    from asap.metrics.inception import features

    _, weights, a, _, _, _ = setup
    net, _ = build_inception(weights)
    x = torch.from_numpy(np.asarray(Image.open(a / "img_00.png"))).permute(2, 0, 1)[None]
    f = features(net, [x])
    assert f.shape == (1, 2048) and np.isfinite(f).all() and f.std() > 0
    with pytest.raises(AsapError, match="inception_dims=100"):
        build_inception(weights, dims=100)


def test_offline_without_weights_is_one_line_naming_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    with pytest.raises(AsapError) as e:
        find_weights()
    msg = str(e.value)
    assert "\n" not in msg and WEIGHTS_FILE in msg and str(tmp_path / "th" / "hub" / "checkpoints") in msg
    with pytest.raises(AsapError, match="nowhere.pth does not exist"):
        find_weights(tmp_path / "nowhere.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(AsapError, match="cannot read the Inception weights"):
        build_inception(tmp_path / "junk.pth")


def test_stats_file_round_trip(setup, tmp_path):
    _, _, _, _, sa, sb = setup
    path = save_stats(sa, tmp_path / "real.npz")
    back = load_stats(path)
    assert np.array_equal(back.features, sa.features) and back.info == sa.info and back.count == 4
    assert fid(back, sb) == pytest.approx(fid(sa, sb), rel=1e-12)
    np.savez(tmp_path / "pf.npz", mu=sa.mu, sigma=sa.sigma)          # pytorch-fid's --save-stats format
    assert load_stats(tmp_path / "pf.npz").features is None
    with pytest.raises(AsapError, match="not a statistics file"):
        (tmp_path / "bad.npz").write_bytes(b"xx")
        load_stats(tmp_path / "bad.npz")
    with pytest.raises(AsapError, match="at least 2"):
        Stats.of(np.zeros((1, 4)))


def test_ssim_identity_noise_and_range():
    from asap.metrics.image import ssim

    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    same = ssim(x, x)
    assert same.shape == (2,) and torch.allclose(same, torch.ones(2, dtype=torch.float64))
    noisy = ssim((x + 0.3 * torch.randn_like(x)).clamp(-1, 1), x)
    assert (noisy < 0.95).all() and (noisy > 0).all()
    assert float(ssim(x, -x).max()) < float(noisy.min())
