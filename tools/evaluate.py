#!/usr/bin/env python
"""Held-out metrics of a trained label-to-image checkpoint; the last line is one JSON object."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asap.config  # noqa: E402,F401
from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/evaluate.py checkpoint=PATH [data=synthetic|cityscapes|ade20k|facades|pairs] [key=value ...]
       python tools/evaluate.py checkpoint=PATH real=FOLDER|STATS.npz [n=N] [metrics=[fid,kid]] [key=value ...]
       python tools/evaluate.py real=FOLDER save_stats=PATH.npz

Label -> image checkpoints (ASAPNet, SPADE): scores the generator on a dataset split (default: the held-out split)
and prints L1 (on [0,1]), PSNR (dB), SSIM and LPIPS (always), plus FID/KID against the split's photos with metrics=[...,fid,kid];
the last line is a JSON object with at least psnr, l1, lpips (and baseline_psnr where the data config has one).
split=test scores the test split where the dataset has one and is refused (one line) where it has none.

Unconditional checkpoints (StyleGAN2 and the families to come): generates n images (seeds seed .. seed+n-1, in
batches of batch_size, with a progress bar) and prints FID and KID against real=FOLDER (every image under it) or a
statistics file saved earlier with save_stats=PATH.npz; the last line is a JSON object with fid, kid, kid_std and
the protocol (Inception variant and weights sha256, image counts, resize, resolution, real-statistics source).

FID/KID need the FID Inception weights pt_inception-2015-12-05-6726825d.pth: inception_weights=PATH or
$TORCH_HOME/hub/checkpoints/ (nothing is downloaded; without the file: one line saying where to put it).

Keys (conf/evaluate.yaml): checkpoint, data (and data.* overrides), split=train|val|test, batch_size, max_images,
device=auto|cpu|cuda, lpips_pretrained, metrics=[psnr,l1,ssim,lpips,fid,kid], real, n, seed, truncation_psi,
noise_mode, save_stats, inception_weights, inception_dims, kid_subsets, kid_subset_size, progress=true|false.
"""


def print_result(record: dict) -> None:
    """Readable lines, then the one-line JSON record (the last line)."""
    for k, v in record.items():
        if k != "protocol":
            print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(json.dumps(record))


def inception(cfg):
    from asap.metrics.inception import build_inception

    return build_inception(cfg.inception_weights, int(cfg.inception_dims))


def real_statistics(cfg, net, weights, device):
    """Real statistics from cfg.real (folder or .npz), saved to cfg.save_stats when asked."""
    from asap.errors import AsapError
    from asap.metrics.fid import real_stats, save_stats

    if cfg.real is None:
        raise AsapError("FID/KID need real=FOLDER (real images) or real=STATS.npz (saved with save_stats=)")
    real = real_stats(cfg.real, net, weights, device, int(cfg.batch_size),
                      int(cfg.max_images) if cfg.max_images is not None else None, bool(cfg.progress))
    if cfg.save_stats:
        if str(cfg.real).endswith(".npz"):
            raise AsapError("save_stats= saves the statistics of a real FOLDER; real= is already a statistics file")
        save_stats(real, cfg.save_stats)
        print(f"saved the statistics of {real.count} real image(s) to {cfg.save_stats}", file=sys.stderr)
    return real


def evaluate_unconditional(cfg, G, device) -> dict:
    """FID/KID of n generated images against the real statistics."""
    from asap.inference.generate import check_options, generate
    from asap.metrics.fid import sample_stats, score

    metrics = list(cfg.metrics) if cfg.metrics is not None else ["fid", "kid"]
    check_options(cfg.truncation_psi, cfg.noise_mode, cfg.batch_size)
    net, weights = inception(cfg)
    real = real_statistics(cfg, net, weights, device)
    seed0 = int(cfg.seed)

    def render(start: int, count: int):
        seeds = list(range(seed0 + start, seed0 + start + count))
        return generate(G, seeds, truncation_psi=cfg.truncation_psi, noise_mode=cfg.noise_mode, device=device,
                        batch_size=count)[0]
    fake = sample_stats(render, int(cfg.n), net, weights, device, int(cfg.batch_size), bool(cfg.progress),
                        source=f"{cfg.checkpoint} seeds {seed0}..{seed0 + int(cfg.n) - 1} "
                               f"psi={float(cfg.truncation_psi)} noise={cfg.noise_mode}")
    res = score(real, fake, metrics, int(cfg.kid_subsets), int(cfg.kid_subset_size))
    return {"checkpoint": str(cfg.checkpoint), "n": int(cfg.n), **res}


def split_dataset(cfg):
    """The dataset of cfg.split: train and val from the data config, test built from the val (or train) entry
    with split=test; a dataset without that split is one line."""
    from omegaconf import OmegaConf

    from asap.errors import AsapError
    from asap.training.run import build_datasets

    if cfg.split not in ("train", "val", "test"):
        raise AsapError(f"split={cfg.split!r} is not one of train, val, test")
    if cfg.split == "test":
        base = cfg.data.get("val") or cfg.data.get("train")
        if base is None or "split" not in base:
            raise AsapError(f"data={cfg.data.name} has no test split (its datasets are folders: point "
                            f"data.val.* at the folders to score)")
        entry = OmegaConf.to_container(base, resolve=True)
        entry.update(split="test", flip=False)
        return build_datasets(OmegaConf.create({"train": entry, "val": None}))[0]
    train, val = build_datasets(cfg.data)
    dataset = val if cfg.split == "val" else train
    if dataset is None:
        raise AsapError(f"data={cfg.data.name} has no {cfg.split} split")
    return dataset


def evaluate_translation(cfg, G, spec, device) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from asap.data.collate import collate
    from asap.errors import AsapError
    from asap.metrics.lpips import build_lpips
    from asap.metrics.translation import evaluate_generator
    from asap.pretrained.common import read_file

    if spec.label_nc != int(cfg.data.label_nc):
        raise AsapError(f"{cfg.checkpoint}: model has label_nc={spec.label_nc} but data={cfg.data.name} has "
                        f"label_nc={cfg.data.label_nc}")
    wanted = [str(m).lower() for m in (cfg.metrics if cfg.metrics is not None else ["psnr", "l1", "ssim", "lpips"])]
    bad = [m for m in wanted if m not in ("psnr", "l1", "ssim", "lpips", "fid", "kid")]
    if bad:
        raise AsapError(f"metrics: {bad[0]!r} is not one of psnr, l1, ssim, lpips, fid, kid")
    gen_metrics = [m for m in wanted if m in ("fid", "kid")]
    net = weights = None
    if gen_metrics:
        net, weights = inception(cfg)          # before any work: a missing weights file is one line up front
    lp = cfg.lpips_pretrained
    if lp is None:
        ck = read_file(cfg.checkpoint)
        lp = bool(((ck.get("config") or {}).get("metrics") or {}).get("lpips_pretrained", True)) \
            if isinstance(ck, dict) else True
    dataset = split_dataset(cfg)
    if cfg.max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(int(cfg.max_images), len(dataset))))
    loader = DataLoader(dataset, batch_size=int(cfg.batch_size), shuffle=False, collate_fn=collate)

    def batches():
        for b in loader:
            if b is not None:
                yield {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in b.items()}

    metrics = evaluate_generator(G, spec, batches(), build_lpips(pretrained=lp).to(device))
    if not metrics:
        raise AsapError(f"data={cfg.data.name}: the {cfg.split} split produced no images")
    metrics["lpips_backbone"] = "imagenet" if lp else "random"
    if cfg.data.get("baseline_psnr") is not None:
        metrics["baseline_psnr"] = float(cfg.data.baseline_psnr)
    record = {"checkpoint": str(cfg.checkpoint), "data": cfg.data.name, "split": cfg.split, **metrics}
    if gen_metrics:
        from asap.data.preprocess import semantic_input
        from asap.metrics.fid import Stats, score, weights_info
        from asap.metrics.inception import features, to_uint8

        fakes, reals = [], []
        with torch.no_grad():
            for b in batches():
                inst = b.get("instance") if spec.uses_instance else None
                fakes.append(to_uint8(G(semantic_input(b["label"], inst, spec, check=False))).cpu())
                reals.append(to_uint8(b["image"]).cpu())
        res = [list(fakes[0].shape[-2:])]
        info = dict(resolution=res, **weights_info(weights, net.dims))
        real = Stats.of(features(net, reals, device), source=f"data={cfg.data.name} split={cfg.split} photos "
                        f"(as the dataset preprocesses them)", count=sum(len(r) for r in reals), **info)
        fake = Stats.of(features(net, fakes, device), source=f"{cfg.checkpoint} on the same label maps",
                        count=sum(len(f) for f in fakes), **info)
        record.update(score(real, fake, gen_metrics, int(cfg.kid_subsets), int(cfg.kid_subset_size)))
    return record


def run(cfg, positional):
    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.generate import check_stylegan
    from asap.utils.device import resolve_device
    from asap.utils.io import check_outputs

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r} (use checkpoint=PATH)")
    if cfg.save_stats:
        check_outputs([Path(str(cfg.save_stats))])  # before scoring every real image: save_stats= must be writable
    device = resolve_device(cfg.device)
    if cfg.checkpoint is None:
        if not cfg.save_stats:
            raise AsapError("checkpoint=PATH is required (or real=FOLDER save_stats=PATH.npz to only save statistics)")
        net, weights = inception(cfg)
        real = real_statistics(cfg, net, weights, device)
        print(json.dumps({"saved_stats": str(cfg.save_stats), "count": real.count, **real.info}))
        return 0
    G = asap.pretrained.load(cfg.checkpoint).to(device)
    spec = getattr(G, "spec", None)
    if spec is not None:
        record = evaluate_translation(cfg, G, spec, device)
    else:
        check_stylegan(G, cfg.checkpoint)   # neither kind: one line naming what the file holds
        record = evaluate_unconditional(cfg, G, device)
    print_result(record)
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("evaluate", run, HELP))
