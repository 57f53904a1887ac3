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

Scores the generator of a checkpoint on a dataset split (default: the held-out split) and prints L1 (on [0,1]),
PSNR (dB) and LPIPS; the last line is a JSON object with at least psnr, l1, lpips (and baseline_psnr for the
synthetic data: the PSNR of predicting each class's mean training colour).

Keys (conf/evaluate.yaml): checkpoint=PATH, data=NAME (and data.* overrides such as data.root=...), split=val|train,
batch_size=N, max_images=N, device=auto|cpu|cuda, lpips_pretrained=true|false (default: as trained).
"""


def run(cfg, positional):
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from torch.utils.data import DataLoader

    import asap.pretrained
    from asap.data.collate import collate
    from asap.errors import AsapError
    from asap.metrics.lpips import build_lpips
    from asap.metrics.translation import evaluate_generator
    from asap.pretrained.common import read_file
    from asap.training.run import build_datasets
    from asap.utils.device import resolve_device

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r} (use checkpoint=PATH)")
    device = resolve_device(cfg.device)
    G = asap.pretrained.load(cfg.checkpoint).to(device)
    spec = getattr(G, "spec", None)
    if spec is None:
        raise AsapError(f"{cfg.checkpoint}: not a label-to-image generator")
    if spec.label_nc != int(cfg.data.label_nc):
        raise AsapError(f"{cfg.checkpoint}: model has label_nc={spec.label_nc} but data={cfg.data.name} has "
                        f"label_nc={cfg.data.label_nc}")
    lp = cfg.lpips_pretrained
    if lp is None:
        ck = read_file(cfg.checkpoint)
        lp = bool(((ck.get("config") or {}).get("metrics") or {}).get("lpips_pretrained", True)) \
            if isinstance(ck, dict) else True
    if cfg.split not in ("val", "train"):  # never score one split and report another
        raise AsapError(f"split={cfg.split!r}: must be val or train (the data config's held-out or training split)")
    train, val = build_datasets(cfg.data)
    dataset = {"val": val, "train": train}[cfg.split]
    if dataset is None:
        raise AsapError(f"data={cfg.data.name} has no {cfg.split} split")
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
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}")
    print(json.dumps({"checkpoint": str(cfg.checkpoint), "data": cfg.data.name, "split": cfg.split, **metrics}))
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("evaluate", run, HELP))
