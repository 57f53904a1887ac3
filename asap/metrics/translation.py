"""Held-out metrics of a label-to-image generator: L1, PSNR and LPIPS (shared by training and tools/evaluate.py)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from asap.data.preprocess import SemanticSpec, semantic_input


@torch.no_grad()
def evaluate_generator(generator: torch.nn.Module, spec: SemanticSpec, batches: Iterable[Mapping[str, Any]],
                       lpips_model: torch.nn.Module) -> dict[str, float]:
    """Mean over images of L1 (on [0,1] intensities), PSNR (dB, on [0,1]), SSIM (torchmetrics: Gaussian window
    11, sigma 1.5, on [0,1]) and LPIPS."""
    from asap.metrics.image import psnr, ssim

    n, l1, ps, ss, lp = 0, 0.0, 0.0, 0.0, 0.0
    for batch in batches:
        inst = batch.get("instance") if spec.uses_instance else None
        fake = generator(semantic_input(batch["label"], inst, spec, check=False)).float()
        real = batch["image"].float().to(fake.device)
        l1 += (fake - real).abs().mean(dim=(1, 2, 3)).sum().item() / 2.0
        ps += float(torch.as_tensor(psnr(fake, real, reduction="none")).sum())
        ss += float(ssim(fake, real).sum())
        lp += lpips_model(fake, real).flatten().sum().item()
        n += fake.shape[0]
    if n == 0:
        return {}
    return {"l1": l1 / n, "psnr": ps / n, "ssim": ss / n, "lpips": lp / n, "num_images": float(n)}


def class_mean_psnr(train: Iterable[Mapping[str, Any]], held_out: Iterable[Mapping[str, Any]],
                    label_nc: int) -> float:
    """PSNR (dB) on ``held_out`` of predicting each pixel's class-mean colour over ``train`` (items with ``label``
    [1,H,W] and ``image`` [3,H,W] in [-1,1]): the floor a label-to-image model must beat. A class absent from
    ``train`` gets the overall mean colour."""
    import numpy as np

    from asap.metrics.image import psnr

    n = int(label_nc) + 256   # room for dontcare / unmapped ids
    counts, sums = np.zeros(n), np.zeros((n, 3))
    for it in train:
        lab = it["label"].reshape(-1).numpy().astype(np.intp)
        pix = ((it["image"].double().numpy() + 1.0) * 127.5).reshape(3, -1)
        counts += np.bincount(lab, minlength=n)[:n]
        sums += np.stack([np.bincount(lab, weights=pix[c], minlength=n)[:n] for c in range(3)], axis=1)
    overall = sums.sum(0) / max(counts.sum(), 1.0)
    means = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], overall)
    total, count = 0.0, 0
    for it in held_out:
        lab = it["label"][0].numpy().astype(np.intp)
        pred = torch.from_numpy(means[lab]).permute(2, 0, 1) / 127.5 - 1.0
        total += float(psnr(pred, it["image"].double()))
        count += 1
    return total / max(count, 1)
