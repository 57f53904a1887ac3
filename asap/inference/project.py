"""Project photos into the latent space of a StyleGAN-type generator: the engine behind tools/project.py.

The procedure of StyleGAN2 (Karras et al. 2020, Appendix D) as in rosinality's ``projector.py``: start from w_avg
with w_std estimated from 10000 mapped samples; optimise w (one vector broadcast to every layer) or W+ (one vector
per layer) together with every noise map (initialised N(0,1)) with Adam under a learning-rate ramp (linear rampup
over the first 5%, cosine rampdown over the last 25%); add latent noise of strength
``0.05 * w_std * max(0, 1 - t / 0.75)^2``; minimise LPIPS(img, target) + mse * MSE + noise_regularize * (multi-scale
noise autocorrelation); renormalise each noise map to zero mean and unit std after every step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.data.transforms import SquareTransform
from asap.errors import AsapError
from asap.inference.generate import check_stylegan

SPACES = ("w", "w+")
LPIPS_MAX = 256  # images larger than this are average-pooled down for LPIPS, as in the reference projector


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """An image file -> [1, 3, size, size] in [-1, 1]: RGB, shorter side resized to ``size``, centre crop."""
    from asap.data.labels import open_image

    path = Path(path)
    with open_image(path, "image") as im:  # the same pixel and file-size limits as every reader
        im = im.convert("RGB")
    w, h = im.size
    if w < 1 or h < 1:
        raise AsapError(f"{path}: empty image")
    x = SquareTransform(int(size))(np.asarray(im))  # the same resize and crop as data=images trains on
    return (torch.from_numpy(np.array(x)).permute(2, 0, 1).float() / 127.5 - 1).unsqueeze(0)


def lpips_input(img: torch.Tensor) -> torch.Tensor:
    """Average-pool images larger than 256 px down to about 256 px for LPIPS."""
    h = img.shape[-1]
    if h > LPIPS_MAX:
        factor = h // LPIPS_MAX
        return F.avg_pool2d(img, factor)
    return img


class PerceptualToTarget(nn.Module):
    """LPIPS(img, target) for a fixed target: an ``lpips.LPIPS`` module gets the target's features computed once
    (the same value as ``lpips(img, target)``, a third less work per step); other modules are called as they are."""

    def __init__(self, lpips: nn.Module, target: torch.Tensor) -> None:
        super().__init__()
        self.lpips, self.target = lpips, target
        self.cached = None
        if all(hasattr(lpips, a) for a in ("net", "scaling_layer", "lins", "L", "version")) and \
                getattr(lpips, "lpips", False) and not getattr(lpips, "spatial", True):
            with torch.no_grad():
                self.cached = [self._normalize(f) for f in lpips.net.forward(self._scale(target))]

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        return self.lpips.scaling_layer(x) if self.lpips.version == "0.1" else x

    @staticmethod
    def _normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (torch.sqrt(torch.sum(f ** 2, dim=1, keepdim=True)) + eps)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.cached is None:
            return self.lpips(img, self.target.expand_as(img))
        feats = self.lpips.net.forward(self._scale(img))
        val = 0
        for k in range(self.lpips.L):
            diff = (self._normalize(feats[k]) - self.cached[k]) ** 2
            val = val + self.lpips.lins[k](diff).mean([2, 3], keepdim=True)
        return val


def learning_rate(t: float, lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Reference schedule at progress ``t`` in [0, 1): linear rampup, cosine rampdown."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return lr * ramp * min(1.0, t / rampup)


def noise_regularization(noises: Sequence[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation (1-pixel shifts in x and y) of every noise map at every scale down to 8x8."""
    loss = noises[0].new_zeros(())
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = loss + (noise * torch.roll(noise, shifts=1, dims=3)).mean().pow(2) \
                + (noise * torch.roll(noise, shifts=1, dims=2)).mean().pow(2)
            if size <= 8:
                break
            noise = noise.reshape(-1, 1, size // 2, 2, size // 2, 2).mean([3, 5])
            size //= 2
    return loss


@torch.no_grad()
def normalize_noise_(noises: Sequence[torch.Tensor]) -> None:
    for noise in noises:
        noise.sub_(noise.mean()).div_(noise.std())


@torch.no_grad()
def w_statistics(G: nn.Module, n: int = 10000, seed: int = 0, batch: int = 1024) -> tuple[torch.Tensor, float]:
    """Mean and std (sqrt of the summed per-dimension variance, as in the reference) of ``n`` mapped seeded z."""
    ws = G.sample_w(n, seed, batch).double()
    mean = ws.mean(0)
    std = float(((ws - mean).pow(2).sum() / n).sqrt())
    return mean.float(), std


def project(G: nn.Module, target: torch.Tensor, steps: int = 1000, space: str = "w", lpips: nn.Module | None = None,
            lr: float = 0.1, mse: float = 0.0, noise_regularize: float = 1e5, latent_noise: float = 0.05,
            noise_ramp: float = 0.75, lr_rampup: float = 0.05, lr_rampdown: float = 0.25,
            w_avg_samples: int = 10000, seed: int = 0, progress: bool | str = False,
            note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Project ``target`` [1, 3, G.size, G.size] in [-1, 1] (on G's device) into ``space`` ('w' or 'w+').

    Returns a dict: ``ws`` [1, num_ws, w_dim] (and ``w`` [1, w_dim] for space 'w'), ``noise`` (list of maps),
    ``space``, ``image`` (the reconstruction, [1, 3, H, W] float on the CPU), ``lpips``, ``mse`` and ``loss``
    (= lpips + mse_weight * mse) of the reconstruction, the same three as ``initial_*`` for the start point,
    and ``loss_history`` (the optimised total loss, noise penalty included, of every step). Randomness (noise
    initialisation, latent noise) comes from CPU generators seeded by ``seed``.
    """
    check_stylegan(G, type(G).__name__)
    steps = int(steps)
    if steps < 1:
        raise AsapError(f"steps must be >= 1, got {steps}")
    if space not in SPACES:
        raise AsapError(f"space={space!r} must be 'w' or 'w+'")
    if lpips is None:
        raise AsapError("project() needs an LPIPS module (asap.metrics.lpips.build_lpips)")
    if target.ndim != 4 or target.shape[0] != 1 or target.shape[1] != 3 or \
            tuple(target.shape[2:]) != (G.size, G.size):
        raise AsapError(f"target must be [1, 3, {G.size}, {G.size}], got {list(target.shape)}")
    device = G.w_avg.device
    target = target.to(device)
    lpips = lpips.to(device).eval()
    mse_weight = float(mse)

    was_training = G.training
    requires = [p.requires_grad for p in G.parameters()]
    G.eval().requires_grad_(False)
    try:
        mean, w_std = w_statistics(G, int(w_avg_samples), seed)
        if not G.has_w_avg():
            if note is not None:
                note(f"note: the checkpoint carries no w_avg; using the mean of {int(w_avg_samples)} mapped samples")
            G.w_avg.copy_(mean.to(G.w_avg))
        start = G.w_avg.detach().clone().to(device)[None]  # [1, w_dim]
        latent = start[:, None, :].repeat(1, G.num_ws, 1) if space == "w+" else start.clone()
        latent.requires_grad_(True)
        gen = torch.Generator().manual_seed(int(seed))
        noises = [torch.randn(*shape, generator=gen).to(device).requires_grad_(True)
                  for shape in G.synthesis.noise_shapes()]
        perceptual = PerceptualToTarget(lpips, lpips_input(target))

        def render(lat: torch.Tensor) -> torch.Tensor:
            ws = lat if lat.ndim == 3 else G.broadcast(lat)
            return G.synthesis(ws, noise=noises)

        def losses(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return perceptual(lpips_input(img)).sum(), F.mse_loss(img, target)

        with torch.no_grad():
            p0, m0 = losses(render(latent))
        optimizer = torch.optim.Adam([latent] + noises, lr=lr)
        history: list[float] = []
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps, desc=progress if isinstance(progress, str) else "project", leave=False,
                       dynamic_ncols=True)
        for i in range(steps):
            t = i / steps
            optimizer.param_groups[0]["lr"] = learning_rate(t, lr, lr_rampdown, lr_rampup)
            strength = w_std * latent_noise * max(0.0, 1.0 - t / noise_ramp) ** 2
            jitter = torch.randn(latent.shape, generator=gen).to(device) * strength
            img = render(latent + jitter)
            p_loss, m_loss = losses(img)
            n_loss = noise_regularization(noises)
            loss = p_loss + noise_regularize * n_loss + mse_weight * m_loss
            if not torch.isfinite(loss):
                raise AsapError(f"projection diverged at step {i} (loss {loss.item()}); try a smaller lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            normalize_noise_(noises)
            history.append(float(loss.detach()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(lpips=f"{float(p_loss):.4f}", mse=f"{float(m_loss):.4f}", refresh=False)
        if bar is not None:
            bar.close()
        with torch.no_grad():
            final = render(latent)
            p1, m1 = losses(final)
    finally:
        for p, r in zip(G.parameters(), requires):
            p.requires_grad_(r)
        G.train(was_training)

    latent = latent.detach()
    ws = latent if space == "w+" else G.broadcast(latent)
    out: dict[str, Any] = {
        "space": space,
        "ws": ws.cpu().contiguous(),
        "noise": [n.detach().cpu() for n in noises],
        "image": final.detach().cpu(),
        "lpips": float(p1), "mse": float(m1), "loss": float(p1) + mse_weight * float(m1),
        "initial_lpips": float(p0), "initial_mse": float(m0), "initial_loss": float(p0) + mse_weight * float(m0),
        "loss_history": history,
        "w_std": w_std,
    }
    if space == "w":
        out["w"] = latent.cpu()
    return out


def latent_record(result: dict[str, Any], checkpoint: str | Path, source: str | Path, steps: int) -> dict[str, Any]:
    """What ``<stem>_latent.pt`` holds: plain tensors, lists, numbers and strings (``weights_only`` loadable)."""
    rec = {k: result[k] for k in ("space", "ws", "noise", "lpips", "mse") if k in result}
    if "w" in result:
        rec["w"] = result["w"]
    rec.update(checkpoint=str(checkpoint), image=str(source), steps=int(steps))
    return rec
