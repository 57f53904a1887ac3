"""Unconditional StyleGAN2 training (the recipe of rosinality's train.py / the StyleGAN2 paper).

Phases per step: D (non-saturating logistic loss), Dreg every ``d_reg_every`` steps (lazy R1 on reals), G
(non-saturating loss with style mixing), Greg every ``g_reg_every`` steps (lazy path-length regularisation on a
shrunk batch); then an EMA update of G. Adam's lr and betas are corrected for the lazy intervals
(c = k / (k + 1)). Optional adaptive differentiable augmentation (ADA) of everything D sees.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.losses.adversarial import logistic_d_loss, logistic_g_loss
from asap.losses.regularizers import path_length_penalty, r1_penalty
from asap.pretrained.native import build
from asap.tasks.base import Phase, Task

AUGMENT_WEIGHTS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
                   "lumaflip", "hue", "saturation")


def lazy_adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], eps: float,
              reg_every: int) -> torch.optim.Adam:
    """Adam with the lazy-regularisation correction: lr * c and betas ** c with c = k / (k + 1) (k = 0: none)."""
    c = reg_every / (reg_every + 1) if reg_every > 0 else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=eps)


class StyleGANTask(Task):
    """Owns G, its EMA copy, D, both optimizers, the path-length running mean and the augmentation state."""

    visual_tag = "samples_ema"
    val_visuals = False

    def __init__(self, family: str, generator: Mapping[str, Any], discriminator: Mapping[str, Any],
                 loss: Mapping[str, Any], optim: Mapping[str, Any], max_steps: int,
                 ema: Mapping[str, Any] | None = None, augment: Mapping[str, Any] | None = None,
                 samples: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.family = family
        self.data = dict(data or {})
        self.notes: list[str] = []
        g_cfg, d_cfg = dict(generator), dict(discriminator)
        try:
            self.G = build(g_cfg)
            self.D = build(d_cfg)
        except ValueError as e:
            raise AsapError(f"model: {e}") from e
        if self.G.size != self.D.size:
            raise AsapError(f"model.generator.size {self.G.size} != model.discriminator.size {self.D.size}")
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.networks = {"generator": self.G, "g_ema": self.G_ema, "discriminator": self.D}
        self.network_configs = {"generator": g_cfg, "g_ema": g_cfg, "discriminator": d_cfg}

        self.r1_gamma = float(loss.get("r1_gamma", 10.0))
        self.d_reg_every = int(loss.get("d_reg_every", 16))
        self.path_weight = float(loss.get("path_weight", 2.0))
        self.path_decay = float(loss.get("path_decay", 0.01))
        self.path_batch_shrink = int(loss.get("path_batch_shrink", 2))
        self.g_reg_every = int(loss.get("g_reg_every", 4))
        self.mixing_prob = float(loss.get("mixing_prob", 0.9))
        for name, v in (("d_reg_every", self.d_reg_every), ("g_reg_every", self.g_reg_every),
                        ("path_batch_shrink", self.path_batch_shrink)):
            if v < 1:
                raise AsapError(f"model.loss.{name} must be >= 1, got {v}")
        if not 0.0 <= self.mixing_prob <= 1.0:
            raise AsapError(f"model.loss.mixing_prob must be in [0, 1], got {self.mixing_prob}")
        if self.r1_gamma < 0 or self.path_weight < 0:
            raise AsapError("model.loss.r1_gamma and model.loss.path_weight must be >= 0")
        batch = self.data.get("batch_size")
        if batch is not None:
            group = min(int(batch), self.D.stddev_group)
            if int(batch) % group:
                raise AsapError(f"data.batch_size={batch} must be divisible by the minibatch-stddev group {group}")

        lr = float(optim.get("lr", 0.002))
        betas = (float(optim.get("beta1", 0.0)), float(optim.get("beta2", 0.99)))
        eps = float(optim.get("eps", 1e-8))
        self.optimizers = {
            "G": lazy_adam(self.G.parameters(), lr, betas, eps, self.g_reg_every if self.path_weight > 0 else 0),
            "D": lazy_adam(self.D.parameters(), lr, betas, eps, self.d_reg_every if self.r1_gamma > 0 else 0)}
        self.schedulers = {}

        ema = dict(ema or {})
        self.ema_kimg = float(ema.get("kimg", 10.0))
        self.ema_ref_batch = ema.get("ref_batch", 32)
        self.ema_rampup = ema.get("rampup")
        if self.ema_kimg <= 0:
            raise AsapError(f"model.ema.kimg must be > 0, got {self.ema_kimg}")
        self.mean_path_length = torch.zeros(())

        aug = dict(augment or {})
        self.augment = None
        if aug.get("enabled", False):
            from asap.nn.augment import AdaptiveAugment
            try:
                self.augment = AdaptiveAugment(
                    p=float(aug.get("p", 0.0)), target=float(aug.get("target", 0.6)),
                    adjust_every=int(aug.get("interval", 4)), speed_kimg=float(aug.get("speed_kimg", 500.0)),
                    adaptive=bool(aug.get("adaptive", True)),
                    **{k: float(aug[k]) for k in AUGMENT_WEIGHTS if k in aug})
            except ValueError as e:
                raise AsapError(f"model.augment: {e}") from e
            self.notes.append(f"adaptive augmentation on: p={self.augment.probability:.3f}, "
                              f"target r_t={aug.get('target', 0.6)}, adaptive={aug.get('adaptive', True)}")
        samples = dict(samples or {})
        gen = torch.Generator().manual_seed(int(samples.get("seed", 0)))
        self.sample_z = torch.randn(int(samples.get("num", 16)), self.G.z_dim, generator=gen)
        self._batch = int(batch) if batch is not None else None

    # -- the Trainer's view -------------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "StyleGANTask":
        super().to(device)
        self.mean_path_length = self.mean_path_length.to(device)
        if self.augment is not None:
            self.augment.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.G.train(mode)
        self.D.train(mode)
        self.G_ema.eval()

    def phases(self) -> list[Phase]:
        phases = [Phase("D")]
        if self.r1_gamma > 0:
            phases.append(Phase("Dreg", self.d_reg_every))
        phases.append(Phase("G"))
        if self.path_weight > 0:
            phases.append(Phase("Greg", self.g_reg_every))
        return phases

    # -- helpers ------------------------------------------------------------------------------------------------
    def sample_ws(self, n: int) -> torch.Tensor:
        """W+ latents of ``n`` fresh z through G's mapping, with style mixing at probability ``mixing_prob``."""
        z = torch.randn(n, self.G.z_dim, device=self.device)
        w = self.G.mapping(z)
        if self.mixing_prob > 0 and float(torch.rand(())) < self.mixing_prob:
            w2 = self.G.mapping(torch.randn(n, self.G.z_dim, device=self.device))
            return self.G.broadcast(w, w2, int(torch.randint(1, self.G.num_ws, ())))
        return self.G.broadcast(w)

    def discriminate(self, images: torch.Tensor) -> torch.Tensor:
        return self.D(self.augment(images) if self.augment is not None else images)

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # -- phases -------------------------------------------------------------------------------------------------
    def run_phase(self, phase: Phase, batch: Mapping[str, Any], step: int) -> dict[str, torch.Tensor]:
        real = batch["image"]
        n = real.shape[0]
        if phase.name == "D":
            with torch.no_grad():
                fake = self.G.synthesis(self.sample_ws(n), noise_mode="random")
            real_logits, fake_logits = self.discriminate(real), self.discriminate(fake)
            l_real, l_fake = logistic_d_loss(real_logits, fake_logits)
            self._step(self.optimizers["D"], l_real + l_fake)
            out = {"loss/D_real": l_real.detach(), "loss/D_fake": l_fake.detach(),
                   "D/real_score": real_logits.mean().detach(), "D/fake_score": fake_logits.mean().detach()}
            if self.augment is not None:
                self.augment.accumulate(real_logits.detach())
                rt = self.augment.update(n)
                out["augment/p"] = torch.tensor(self.augment.probability)
                if rt is not None:
                    out["augment/rt"] = torch.tensor(rt)
            return out
        if phase.name == "Dreg":
            real = real.detach().requires_grad_(True)
            logits = self.discriminate(real)
            r1 = r1_penalty(logits, real)
            self._step(self.optimizers["D"], self.r1_gamma / 2 * r1 * self.d_reg_every + 0 * logits[0, 0])
            return {"loss/D_r1": r1.detach()}
        if phase.name == "G":
            self.D.requires_grad_(False)
            try:
                fake = self.G.synthesis(self.sample_ws(n), noise_mode="random")
                loss = logistic_g_loss(self.discriminate(fake))
                self._step(self.optimizers["G"], loss)
            finally:
                self.D.requires_grad_(True)
            return {"loss/G": loss.detach()}
        if phase.name == "Greg":
            m = max(1, n // self.path_batch_shrink)
            ws = self.sample_ws(m)
            fake = self.G.synthesis(ws, noise_mode="random")
            penalty, self.mean_path_length, lengths = path_length_penalty(fake, ws, self.mean_path_length,
                                                                          self.path_decay)
            self._step(self.optimizers["G"], self.path_weight * self.g_reg_every * penalty + 0 * fake[0, 0, 0, 0])
            return {"loss/G_path": penalty.detach(), "path/mean_length": self.mean_path_length.detach(),
                    "path/length": lengths.mean()}
        raise AsapError(f"unknown phase {phase.name}")

    def ema_beta(self, step: int, batch: int) -> float:
        """Per-step EMA decay: half-life of ``ema.kimg`` thousand images, counted at ``ema.ref_batch`` images per
        step (rosinality: 32, whatever the batch) or at the real batch (ref_batch null); optional ramp-up."""
        per_step = float(self.ema_ref_batch) if self.ema_ref_batch is not None else float(batch)
        nimg = self.ema_kimg * 1000.0
        if self.ema_rampup is not None:
            nimg = min(nimg, (step + 1) * per_step * float(self.ema_rampup))
        return 0.5 ** (per_step / max(nimg, 1e-8))

    @torch.no_grad()
    def end_step(self, step: int) -> None:
        beta = self.ema_beta(step, self._batch or 1)
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)

    # -- logging, evaluation, persistence ----------------------------------------------------------------------
    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Fixed-seed samples of the EMA generator (constant noise), as a grid in [0, 1]."""
        from torchvision.utils import make_grid
        imgs = self.G_ema(self.sample_z.to(self.device), noise_mode="const")
        nrow = max(1, int(math.ceil(math.sqrt(imgs.shape[0]))))
        return make_grid(((imgs.clamp(-1, 1) + 1) / 2).cpu(), nrow=nrow, padding=2)

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """D's mean logit on held-out reals and on EMA samples (a gap to the training reals signals D overfitting)."""
        real_sum, fake_sum, count = 0.0, 0.0, 0
        gen = torch.Generator().manual_seed(1)  # z and noise from a private generator: validation leaves the
        for batch in batches:                   # training RNG untouched, so val_every cannot change a run
            real = batch["image"]
            z = torch.randn(real.shape[0], self.G.z_dim, generator=gen).to(self.device)
            noise = [torch.randn(shape, generator=gen).to(self.device) for shape in self.G.synthesis.noise_shapes()]
            real_sum += float(self.D(real).sum())
            fake_sum += float(self.D(self.G_ema(z, noise=noise)).sum())
            count += real.shape[0]
        if not count:
            return {}
        return {"D_real_heldout": real_sum / count, "D_fake_ema": fake_sum / count}

    def checkpoint_networks(self) -> dict[str, tuple[nn.Module, dict]]:
        self.G_ema.mean_w(4096)  # truncation centre travels with the checkpoint
        return super().checkpoint_networks()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["mean_path_length"] = self.mean_path_length.detach().cpu()
        if self.augment is not None:
            state["augment"] = self.augment.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.mean_path_length = state["mean_path_length"].to(self.device)
        if self.augment is not None and "augment" in state:
            self.augment.load_state_dict(state["augment"])
