"""FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) on FID-Inception pool3 features, with their protocol.

FID is pytorch-fid's ``calculate_frechet_distance`` on the features' mean and covariance (``np.cov``, as
pytorch-fid). KID is the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over
``subsets`` random subsets of ``subset_size`` (the KID paper's estimator; the defaults of torch-fidelity and
torchmetrics: 100 subsets of 1000, fewer when there are fewer images). Statistics of a real folder can be saved
(``.npz``: mu, sigma, features, protocol) and reused; every result carries a ``protocol`` dict that says how it
was measured (Inception variant and weights sha256, counts, resize, resolution, where the real statistics came from).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from asap.errors import AsapError


@dataclass
class Stats:
    """Features of one image set and how they were made."""

    features: np.ndarray | None
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, feats: np.ndarray, **info: Any) -> "Stats":
        if len(feats) < 2:
            raise AsapError(f"FID needs at least 2 images per set (got {len(feats)})")
        return cls(feats, feats.mean(axis=0), np.cov(feats, rowvar=False), len(feats), dict(info))


def fid(a: Stats, b: Stats) -> float:
    """Frechet distance between the two feature Gaussians (pytorch-fid's implementation)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    try:
        return float(calculate_frechet_distance(a.mu, a.sigma, b.mu, b.sigma))
    except ValueError as e:
        raise AsapError(f"FID: {e}") from None


def kid(a: np.ndarray, b: np.ndarray, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Mean and standard deviation over subsets of the unbiased polynomial-kernel MMD^2 between feature sets."""
    n = min(len(a), len(b), int(subset_size))
    if n < 2:
        raise AsapError(f"KID needs at least 2 images per set (got {min(len(a), len(b))})")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    vals = []
    for _ in range(int(subsets)):
        x = a[rng.choice(len(a), n, replace=False)]
        y = b[rng.choice(len(b), n, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (n * (n - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))


def save_stats(stats: Stats, path: str | os.PathLike) -> Path:
    """Write ``.npz`` (mu, sigma, features, protocol as JSON) atomically."""
    from asap.utils.io import atomic_write

    path = Path(path)
    if path.suffix != ".npz":
        raise AsapError(f"{path}: statistics files end in .npz")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, mu=stats.mu, sigma=stats.sigma,
                                features=stats.features if stats.features is not None else np.zeros((0, 0)),
                                info=np.array(json.dumps(stats.info)))
    return atomic_write(path, write)


def load_stats(path: str | os.PathLike) -> Stats:
    """Read a statistics file written by :func:`save_stats` (or pytorch-fid's ``--save-stats``: mu and sigma)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            mu, sigma = z["mu"], z["sigma"]
            feats = z["features"] if "features" in z and z["features"].size else None
            info = json.loads(str(z["info"])) if "info" in z else {}
    except FileNotFoundError:
        raise AsapError(f"{path}: no such statistics file") from None
    except (OSError, ValueError, KeyError) as e:
        raise AsapError(f"{path}: not a statistics file (.npz with mu and sigma): {e}") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise AsapError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit")
    count = int(info.get("count", len(feats) if feats is not None else 0))
    return Stats(feats, mu, sigma, count, info)


def folder_stats(folder: str | os.PathLike, net: Any, weights: Path, device: Any = "cpu", batch_size: int = 32,
                 max_images: int | None = None, progress: bool = False) -> Stats:
    """Inception statistics of every image under ``folder`` (recursive, naturally sorted)."""
    from asap.data.paired import IMAGE_EXTENSIONS, list_files
    from asap.metrics.inception import features, folder_batches

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise AsapError(f"{root}: no such folder of real images")
    files = list_files(root, IMAGE_EXTENSIONS, recursive=True)[:max_images]
    if not files:
        raise AsapError(f"{root}: holds no images")
    from asap.data.labels import open_image
    sizes = sorted({open_image(f).size for f in files[:64]})
    feats = features(net, folder_batches(files, batch_size), device, len(files), progress, "real")
    return Stats.of(feats, source=f"folder {root.resolve()}", count=len(files),
                    resolution=[[h, w] for w, h in sizes][:4],
                    **weights_info(weights, getattr(net, "dims", 2048)))


def weights_info(weights: Path, dims: int = 2048) -> dict[str, Any]:
    from asap.metrics.inception import RESIZE, VARIANT, sha256

    return {"inception": f"{VARIANT}, {'pool3 ' if dims == 2048 else 'block '}{dims}-d", "dims": int(dims),
            "weights": weights.name, "weights_sha256": sha256(weights), "resize": RESIZE}


def protocol(real: Stats, fake: Stats, kid_subsets: int, kid_subset_size: int) -> dict[str, Any]:
    """What a result was measured with; refuses real statistics made with other Inception weights."""
    if real.info.get("weights_sha256") and real.info["weights_sha256"] != fake.info["weights_sha256"]:
        raise AsapError(f"the real statistics ({real.info.get('source')}) were made with other Inception weights "
                        f"(sha256 {real.info['weights_sha256'][:12]}..., now {fake.info['weights_sha256'][:12]}...)")
    if len(real.mu) != len(fake.mu):
        raise AsapError(f"the real statistics ({real.info.get('source')}) have {len(real.mu)}-d features, the "
                        f"generated images {len(fake.mu)}-d (inception_dims must match)")
    return {"inception": fake.info["inception"], "dims": fake.info.get("dims"), "weights": fake.info["weights"],
            "weights_sha256": fake.info["weights_sha256"], "resize": fake.info["resize"],
            "num_fake": fake.count, "num_real": real.count, "fake_resolution": fake.info.get("resolution"),
            "real_resolution": real.info.get("resolution"), "real_stats": real.info.get("source"),
            "fake_source": fake.info.get("source"),
            "kid": {"kernel": "(x.y/d+1)^3", "subsets": kid_subsets,
                    "subset_size": min(kid_subset_size, real.count, fake.count)}}


def sample_stats(render: Any, n: int, net: Any, weights: Path, device: Any = "cpu", batch_size: int = 16,
                 progress: bool = False, source: str = "generator") -> Stats:
    """Inception statistics of ``n`` generated images: ``render(start, count)`` returns uint8 [count,3,H,W]
    (images number start .. start+count-1), rendered in batches of ``batch_size``."""
    from asap.metrics.inception import features

    if int(n) < 2:
        raise AsapError(f"n={n}: FID/KID need at least 2 generated images")
    shape: list[Any] = []

    def batches():
        for start in range(0, int(n), int(batch_size)):
            imgs = render(start, min(int(batch_size), int(n) - start))
            shape[:] = [list(imgs.shape[-2:])]
            yield imgs
    feats = features(net, batches(), device, int(n), progress, "generated")
    return Stats.of(feats, source=source, count=int(n), resolution=shape,
                    **weights_info(weights, getattr(net, "dims", 2048)))


def real_stats(real: str | os.PathLike, net: Any, weights: Path, device: Any = "cpu", batch_size: int = 32,
               max_images: int | None = None, progress: bool = False) -> Stats:
    """Real statistics from a folder of images or a saved ``.npz`` statistics file."""
    p = Path(real).expanduser()
    if p.suffix == ".npz":
        s = load_stats(p)
        s.info = {**s.info, "source": f"stats file {p.resolve()} ({s.info.get('source', 'pytorch-fid format')})"}
        return s
    return folder_stats(p, net, weights, device, batch_size, max_images, progress)


def score(real: Stats, fake: Stats, metrics: Any = ("fid", "kid"), kid_subsets: int = 100,
          kid_subset_size: int = 1000) -> dict[str, Any]:
    """The asked metrics (fid, kid) of ``fake`` against ``real`` and the ``protocol`` they were measured with."""
    wanted = [str(m).lower() for m in metrics]
    unknown = [m for m in wanted if m not in ("fid", "kid")]
    if unknown:
        raise AsapError(f"metrics: {unknown[0]!r} is not one of fid, kid")
    out: dict[str, Any] = {}
    proto = protocol(real, fake, kid_subsets, kid_subset_size)
    if "fid" in wanted:
        out["fid"] = fid(real, fake)
    if "kid" in wanted:
        if real.features is None:
            raise AsapError(f"KID needs the real features; the statistics ({real.info.get('source')}) hold only "
                            f"mu and sigma (save them with tools/evaluate.py save_stats=PATH.npz)")
        out["kid"], out["kid_std"] = kid(real.features, fake.features, kid_subsets, kid_subset_size)
    out["protocol"] = proto
    return out
