"""Held-out metrics of a label-to-image generator: L1, PSNR and LPIPS (shared by training and tools/evaluate.py)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from asap.data.preprocess import SemanticSpec, semantic_input


@torch.no_grad()
def evaluate_generator(generator: torch.nn.Module, spec: SemanticSpec, batches: Iterable[Mapping[str, Any]],
                       lpips_model: torch.nn.Module) -> dict[str, float]:
    """Mean over images of L1 (on [0,1] intensities), PSNR (dB, on [0,1]) and LPIPS."""
    from asap.metrics.image import psnr

    n, l1, ps, lp = 0, 0.0, 0.0, 0.0
    for batch in batches:
        inst = batch.get("instance") if spec.uses_instance else None
        fake = generator(semantic_input(batch["label"], inst, spec, check=False)).float()
        real = batch["image"].float().to(fake.device)
        l1 += (fake - real).abs().mean(dim=(1, 2, 3)).sum().item() / 2.0
        ps += float(torch.as_tensor(psnr(fake, real, reduction="none")).sum())
        lp += lpips_model(fake, real).flatten().sum().item()
        n += fake.shape[0]
    if n == 0:
        return {}
    return {"l1": l1 / n, "psnr": ps / n, "lpips": lp / n, "num_images": float(n)}
