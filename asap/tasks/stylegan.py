"""Unconditional StyleGAN2 training (the recipe of rosinality's train.py / the StyleGAN2 paper).

Phases per step: D (non-saturating logistic loss), Dreg every ``d_reg_every`` steps (lazy R1 on reals), G
(non-saturating loss with style mixing), Greg every ``g_reg_every`` steps (lazy path-length regularisation on a
shrunk batch); then an EMA update of G. The regularisers are lazy phases: the Trainer weights them by their
interval and corrects Adam's lr and betas (c = k / (k + 1)); they run in float32 under mixed precision. Optional
adaptive differentiable augmentation (ADA) of everything D sees, its p tuned by the ADA controller.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.losses.adversarial import logistic_d_loss, logistic_g_loss
from asap.losses.regularizers import path_length_penalty, r1_penalty
from asap.pretrained.native import build
from asap.tasks.base import Phase, StepContext, Task
from asap.training.ema import EMA

AUGMENT_WEIGHTS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
                   "lumaflip", "hue", "saturation")


def _mean_over_processes(values: torch.Tensor) -> torch.Tensor:
    """Mean over the values of every process; gradients flow through this process's values."""
    from asap.training import distributed
    if not distributed.current().enabled:
        return values.mean()
    total, count = distributed.all_reduce_sum([float(values.detach().sum()), float(values.numel())])
    return (values.sum() + (total - float(values.detach().sum()))) / count


class StyleGANTask(Task):
    """Owns G, its EMA copy, D, both optimizers, the path-length running mean and the augmentation state."""

    visual_tag = "samples_ema"
    val_visuals = False
    data_kinds = ("images",)

    def __init__(self, family: str, generator: Mapping[str, Any], discriminator: Mapping[str, Any],
                 loss: Mapping[str, Any], optim: Mapping[str, Any], max_steps: int,
                 ema: Mapping[str, Any] | None = None, augment: Mapping[str, Any] | None = None,
                 samples: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.family = family
        self.data = dict(data or {})
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
        # plain Adam with the official settings; the Trainer applies the lazy-regularisation correction
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas, eps=eps),
                           "D": torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas, eps=eps)}
        self.schedulers = {}

        ema = dict(ema or {})
        try:
            self.ema = EMA(self.G, self.G_ema, half_life_kimg=float(ema.get("kimg", 10.0)),
                           rampup=ema.get("rampup"), ref_batch=ema.get("ref_batch", 32))
        except ValueError as e:
            raise AsapError(f"model.ema: {e}") from e
        self.mean_path_length = torch.zeros(())

        aug = dict(augment or {})
        self.augment = None
        self.ada = None
        if aug.get("enabled", False):
            from asap.nn.augment import AdaptiveAugment
            from asap.training.ada import AdaController
            try:
                self.augment = AdaptiveAugment(p=float(aug.get("p", 0.0)),
                                               **{k: float(aug[k]) for k in AUGMENT_WEIGHTS if k in aug})
                self.ada = AdaController(self.augment, target=float(aug.get("target", 0.6)),
                                         interval=int(aug.get("interval", 4)),
                                         speed_kimg=float(aug.get("speed_kimg", 500.0)),
                                         adaptive=bool(aug.get("adaptive", True)))
            except ValueError as e:
                raise AsapError(f"model.augment: {e}") from e
            self.notes.append(f"adaptive augmentation on: p={self.augment.probability:.3f}, "
                              f"target r_t={aug.get('target', 0.6)}, adaptive={aug.get('adaptive', True)}")
        samples = dict(samples or {})
        gen = torch.Generator().manual_seed(int(samples.get("seed", 0)))
        self.sample_z = torch.randn(int(samples.get("num", 16)), self.G.z_dim, generator=gen)
        self._batch = int(batch) if batch is not None else None
        self.fid_cfg = dict((metrics or {}).get("fid") or {})
        self._fid_real = None
        if self.fid_cfg.get("real"):
            from asap.metrics.inception import find_weights
            try:
                find_weights(self.fid_cfg.get("inception_weights"))
                self.validates_without_data = True
                self.notes.append(f"validation logs FID of {int(self.fid_cfg.get('n', 500))} EMA samples against "
                                  f"{self.fid_cfg['real']}")
            except AsapError as e:
                self.notes.append(f"FID during training is off: {e}")

    # -- the Trainer's view -------------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "StyleGANTask":
        super().to(device)
        self.mean_path_length = self.mean_path_length.to(device)
        if self.augment is not None:
            self.augment.to(device)
        return self

    def phases(self) -> list[Phase]:
        phases = [Phase("D", self.d_loss, networks=("discriminator",), optimizer="D")]
        if self.r1_gamma > 0:
            phases.append(Phase("Dreg", self.r1_loss, networks=("discriminator",), optimizer="D",
                                interval=self.d_reg_every, lazy=True, mixed_precision=False))
        phases.append(Phase("G", self.g_loss, networks=("generator",), optimizer="G"))
        if self.path_weight > 0:
            phases.append(Phase("Greg", self.path_loss, networks=("generator",), optimizer="G",
                                interval=self.g_reg_every, lazy=True, mixed_precision=False))
        return phases

    # -- helpers ------------------------------------------------------------------------------------------------
    def sample_ws(self, ctx: StepContext) -> torch.Tensor:
        """W+ latents for the context's samples: z keyed per sample, style mixing with probability
        ``mixing_prob`` (one decision and crossover point per step, as rosinality's mixing_noise)."""
        z = ctx.randn(self.G.z_dim, stream="z")
        w = self.G.mapping(z)
        gen = ctx.generator("mixing")
        mix = self.mixing_prob > 0 and float(torch.rand((), generator=gen)) < self.mixing_prob
        if mix:
            w2 = self.G.mapping(ctx.randn(self.G.z_dim, stream="z2"))
            return self.G.broadcast(w, w2, int(torch.randint(1, self.G.num_ws, (), generator=gen)))
        return self.G.broadcast(w)

    def sample_noise(self, ctx: StepContext) -> list[torch.Tensor]:
        """Per-sample noise maps for G's synthesis, keyed per sample like the latents."""
        shapes = self.G.synthesis.noise_shapes()
        sizes = [h * w for (_, _, h, w) in shapes]
        flat = ctx.randn(sum(sizes), stream="noise")
        return [t.reshape(ctx.size, 1, h, w) for t, (_, _, h, w) in zip(flat.split(sizes, 1), shapes)]

    def generate(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        ws = self.sample_ws(ctx)
        return self.G.synthesis(ws, noise=self.sample_noise(ctx)), ws

    def discriminate(self, images: torch.Tensor, ctx: StepContext | None = None, stream: str = "") -> torch.Tensor:
        """D's logits, through the adaptive augmentation when on: each sample's transform keyed by its position in
        the step's global batch (the same however the batch is split over processes)."""
        if self.augment is None:
            return self.D(images)
        if ctx is None:
            return self.D(self.augment(images))
        return self.D(self.augment(images, generator=ctx.generator(f"augment/{stream}"), rows=ctx.positions,
                                   total=ctx.batch_size))

    # -- losses (forward only) ---------------------------------------------------------------------------------
    def d_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        real = batch["image"]
        fake = self.generate(ctx)[0].detach()
        real_logits, fake_logits = self.discriminate(real, ctx, "real"), self.discriminate(fake, ctx, "fake")
        l_real, l_fake = logistic_d_loss(real_logits, fake_logits)
        if self.ada is not None:
            self.ada.accumulate(real_logits)
        return l_real + l_fake, {"loss/D_real": l_real.detach(), "loss/D_fake": l_fake.detach(),
                                 "D/real_score": real_logits.mean().detach(),
                                 "D/fake_score": fake_logits.mean().detach()}

    def r1_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        real = batch["image"].detach().requires_grad_(True)
        logits = self.discriminate(real, ctx, "real")
        r1 = r1_penalty(logits, real)
        return self.r1_gamma / 2 * r1 + 0 * logits[0, 0], {"loss/D_r1": r1.detach()}

    def g_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        fake = self.generate(ctx)[0]
        loss = logistic_g_loss(self.discriminate(fake, ctx, "fake"))
        return loss, {"loss/G": loss.detach()}

    def path_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        # every path_batch_shrink-th sample of the global batch (the same subset however the batch is split)
        keep = ctx.positions[ctx.positions % self.path_batch_shrink == 0]
        if keep.numel() == 0:
            keep = ctx.positions[:1]
        ctx = dataclasses.replace(ctx, positions=keep)
        fake, ws = self.generate(ctx)
        noise = ctx.randn(*fake.shape[1:], stream="path_noise").to(fake.dtype)
        penalty, self.mean_path_length, lengths = path_length_penalty(fake, ws, self.mean_path_length,
                                                                      self.path_decay, noise=noise,
                                                                      batch_mean=_mean_over_processes)
        return self.path_weight * penalty + 0 * fake[0, 0, 0, 0], {
            "loss/G_path": penalty.detach(), "path/mean_length": self.mean_path_length.detach(),
            "path/length": lengths.mean()}

    def ema_beta(self, step: int, batch: int) -> float:
        return self.ema.beta(step, batch)

    def end_step(self, step: int, batch_size: int) -> dict[str, Any]:
        """EMA of G; the ADA controller's p update (after every D step)."""
        self.ema.update(step, batch_size)
        out: dict[str, Any] = {}
        if self.ada is not None:
            rt = self.ada.update(batch_size)
            out["augment/p"] = self.augment.probability
            if rt is not None:
                out["augment/rt"] = rt
        return out

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
        out = {"D_real_heldout": real_sum / count, "D_fake_ema": fake_sum / count} if count else {}
        if self.validates_without_data:
            out["fid"] = self.ema_fid()
        return out

    @torch.no_grad()
    def ema_fid(self) -> float:
        """FID of ``metrics.fid.n`` fixed-seed EMA samples (const noise) against ``metrics.fid.real`` (folder or
        .npz; its statistics are computed once per run)."""
        from asap.metrics.fid import fid, real_stats, sample_stats
        from asap.metrics.inception import build_inception, to_uint8

        cfg = self.fid_cfg
        net, weights = build_inception(cfg.get("inception_weights"), int(cfg.get("dims", 2048)))
        if self._fid_real is None:
            self._fid_real = real_stats(cfg["real"], net, weights, self.device, int(cfg.get("batch_size", 16)))
        gen = torch.Generator().manual_seed(int(cfg.get("seed", 123)))

        def render(start: int, count: int) -> torch.Tensor:
            z = torch.randn(count, self.G.z_dim, generator=gen).to(self.device)
            return to_uint8(self.G_ema(z, noise_mode="const")).cpu()
        fake = sample_stats(render, int(cfg.get("n", 500)), net, weights, self.device, int(cfg.get("batch_size", 16)))
        return fid(self._fid_real, fake)

    def checkpoint_networks(self) -> dict[str, tuple[nn.Module, dict]]:
        self.G_ema.mean_w(4096)  # truncation centre travels with the checkpoint
        return super().checkpoint_networks()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["mean_path_length"] = self.mean_path_length.detach().cpu()
        if self.ada is not None:
            state["ada"] = self.ada.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.mean_path_length = state["mean_path_length"].to(self.device)
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])
