"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, with offline-safe backbone loading."""
from __future__ import annotations

from pathlib import Path

import torch

from asap.errors import AsapError

# torchvision ImageNet weights each LPIPS backbone needs (lpips loads them through torchvision)
_BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
                   "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def build_lpips(net: str = "alex", pretrained: bool = True) -> torch.nn.Module:
    """An LPIPS metric in eval mode. ``pretrained=False`` uses a random backbone (tests, offline demos)."""
    import lpips

    if pretrained:
        ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
        fname = _BACKBONE_FILES[net]
        if not (ckpt_dir / fname).is_file():
            raise AsapError(f"LPIPS needs the ImageNet {net} weights: place {fname} in {ckpt_dir} (or set TORCH_HOME), "
                            f"or use metrics.lpips_pretrained=false for a random backbone")
    import warnings

    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)  # a random backbone is still the same function in every run
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=not pretrained, verbose=False)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()
