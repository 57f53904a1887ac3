"""FastGAN training (the recipe of the official ``train.py``, Liu et al. ICLR 2021) on the shared training core.

One step: G draws a batch of fakes (z ~ N(0, 1), fresh noise maps); DiffAugment (``color,translation`` by default)
augments the real batch and each of G's two outputs separately. Phase D: hinge loss with a random margin
m ~ U(0.8, 1.0) per logit, relu(m - D(real)) + relu(m + D(fake)), plus LPIPS (VGG16, v0.1 linear heads, summed over
the batch) between the three decoders' 128 px reconstructions and the augmented real image, its small version and
one random quadrant (the first two targets are the same 128 px image: its LPIPS features are computed once). Phase G: -mean D(fake) on the same augmented fakes. Then an EMA of G's parameters
(``lerp`` by 0.001; the buffers are copied, as the official EMA generator uses the live generator's buffers).

As in the official loop, G runs once per step: the D phase keeps the fakes' graph and the G phase reuses them
after D's update (``reuse_fakes``). Randomness is keyed by the sample's place in the global batch, so data parallel
runs and resumed runs draw what one uninterrupted process draws.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.losses.lpips_loss import LPIPSLoss, use_winograd
from asap.models.fastgan import crop_quadrant
from asap.nn.diffaugment import N_PARAMS, diff_augment, parse_policy
from asap.nn.winograd import TILES
from asap.pretrained.native import build
from asap.tasks.base import Phase, StepContext, Task
from asap.training.ema import EMA

REC_SIZE = 128  # the decoders' output size


def hinge_d_terms(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_margin: torch.Tensor,
                  fake_margin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FastGAN's D hinge with per-logit margins: (mean relu(m - real), mean relu(m + fake))."""
    return F.relu(real_margin - real_logits).mean(), F.relu(fake_margin + fake_logits).mean()


def build_lpips_loss(net: str = "vgg", pretrained: bool = True) -> nn.Module:
    """LPIPS v0.1 (the official code's 'net-lin' over VGG16): ImageNet backbone from the torch hub cache (one-line
    error naming the file when absent) or, with pretrained=False, a fixed random backbone."""
    from asap.metrics.lpips import build_lpips
    try:
        return build_lpips(net, pretrained)
    except AsapError as e:
        raise AsapError(f"{str(e).split(', or use')[0]}, or set model.loss.lpips_pretrained=false for a random "
                        f"backbone") from None


class FastGANTask(Task):
    """Owns G, its EMA copy, D, the LPIPS network and both Adam optimizers."""

    data_kinds = ("images",)

    visual_tag = "samples_ema"
    val_visuals = False

    def __init__(self, family: str, generator: Mapping[str, Any], discriminator: Mapping[str, Any],
                 loss: Mapping[str, Any], optim: Mapping[str, Any], max_steps: int,
                 ema: Mapping[str, Any] | None = None, augment: Mapping[str, Any] | None = None,
                 samples: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                 metrics: Mapping[str, Any] | None = None, reuse_fakes: bool = True,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.family = family
        g_cfg, d_cfg = dict(generator), dict(discriminator)
        try:
            self.G = build(g_cfg)
            self.D = build(d_cfg)
            self.G_ema = build(g_cfg)  # built, not deep-copied: spectral-norm modules keep derived tensors
        except ValueError as e:
            raise AsapError(f"model: {e}") from e
        if self.G.im_size != self.D.im_size:
            raise AsapError(f"model.generator.im_size {self.G.im_size} != model.discriminator.im_size {self.D.im_size}")
        if self.G.nc != self.D.nc:
            raise AsapError(f"model.generator.nc {self.G.nc} != model.discriminator.nc {self.D.nc}")
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.eval().requires_grad_(False)
        self.networks = {"generator": self.G, "g_ema": self.G_ema, "discriminator": self.D}
        self.network_configs = {"generator": g_cfg, "g_ema": g_cfg, "discriminator": d_cfg}
        size = (data or {}).get("image_size")
        if size is not None and int(size) != self.G.im_size:
            raise AsapError(f"data.image_size={size} but the model is built for {self.G.im_size} px")

        loss = dict(loss)
        self.margin = (float(loss.get("margin_low", 0.8)), float(loss.get("margin_high", 1.0)))
        if not self.margin[0] <= self.margin[1]:
            raise AsapError(f"model.loss: margin_low {self.margin[0]} > margin_high {self.margin[1]}")
        self.rec_weight = float(loss.get("rec_weight", 1.0))
        if self.rec_weight < 0:
            raise AsapError(f"model.loss.rec_weight must be >= 0, got {self.rec_weight}")
        self.lpips_pretrained = bool(loss.get("lpips_pretrained", True))
        self.lpips = build_lpips_loss(str(loss.get("lpips_net", "vgg")), self.lpips_pretrained) \
            if self.rec_weight > 0 else None
        if self.lpips is not None and not self.lpips_pretrained:
            self.notes.append("reconstruction LPIPS uses a RANDOM backbone (model.loss.lpips_pretrained=false)")
        wino = loss.get("lpips_winograd_min_channels", 128)
        self.lpips_winograd = None if wino is None else int(wino)
        if self.lpips_winograd is not None and self.lpips_winograd < 1:
            raise AsapError(f"model.loss.lpips_winograd_min_channels must be >= 1 or null, got {wino}")
        self.lpips_winograd_tile = loss.get("lpips_winograd_tile", 4)
        if self.lpips_winograd_tile not in TILES:
            raise AsapError(f"model.loss.lpips_winograd_tile must be {' or '.join(map(str, TILES))}, "
                            f"got {self.lpips_winograd_tile}")

        aug = dict(augment or {})
        try:
            self.policy = parse_policy(aug.get("policy", "color,translation"))
        except ValueError as e:
            raise AsapError(f"model.augment.policy: {e}") from e

        lr = float(optim.get("lr", 2e-4))
        betas = (float(optim.get("beta1", 0.5)), float(optim.get("beta2", 0.999)))
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas),
                           "D": torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas)}
        self.schedulers = {}
        try:
            self.ema = EMA(self.G, self.G_ema, decay=float((ema or {}).get("decay", 0.999)), copy_buffers=True)
        except ValueError as e:
            raise AsapError(f"model.ema: {e}") from e
        self.reuse_fakes = bool(reuse_fakes)
        self.channels_last = bool(channels_last)
        samples = dict(samples or {})
        gen = torch.Generator().manual_seed(int(samples.get("seed", 0)))
        n = int(samples.get("num", 16))
        self.sample_z = torch.randn(n, self.G.nz, generator=gen)
        self.sample_noise = [torch.randn(n, *s[1:], generator=gen) for s in self.G.noise_shapes()]
        self._fakes: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._last_rec: tuple[torch.Tensor, ...] | None = None

    # -- the Trainer's view -------------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "FastGANTask":
        super().to(device)
        if self.lpips is not None:
            self.lpips.to(device)
            if torch.device(device).type == "cpu" and self.lpips_winograd is not None:
                # CPU only: cuDNN picks its own algorithms
                use_winograd(self.lpips.net, self.lpips_winograd, self.lpips_winograd_tile)
        if self.channels_last:  # NHWC convolutions (same values): tensor cores on CUDA
            for net in (self.G, self.G_ema, self.D, self.lpips):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        return self

    def phases(self) -> list[Phase]:
        return [Phase("D", self.d_loss, networks=("discriminator",), optimizer="D"),
                Phase("G", self.g_loss, networks=("generator",), optimizer="G")]

    # -- helpers ------------------------------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor, ctx: StepContext, stream: str) -> torch.Tensor:
        if not self.policy:
            return x
        return diff_augment(x, self.policy, ctx.rand(N_PARAMS, stream=f"augment/{stream}"))

    def fakes(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """G's augmented (image, 128 px image) for the context's samples; the draws are keyed by the step, not the
        phase, so the D and G phases see the same fakes."""
        ctx = dataclasses.replace(ctx, phase="fake")
        z = ctx.randn(self.G.nz, stream="z")
        noise = [ctx.randn(*s[1:], stream=f"noise/{i}") for i, s in enumerate(self.G.noise_shapes())]
        img, small = self.G(z, noise=noise, return_small=True)
        return self._augment(img, ctx, "fake_big"), self._augment(small, ctx, "fake_small")

    def margins(self, ctx: StepContext, stream: str) -> torch.Tensor:
        """U(low, high) margins in the logits' layout ([big maps of every sample, small maps of every sample])."""
        lo, hi = self.margin
        u = ctx.rand(2, 25, stream=f"margin/{stream}")
        return lo + (hi - lo) * torch.cat([u[:, 0].reshape(-1), u[:, 1].reshape(-1)])

    def reconstruction(self, recs: tuple[torch.Tensor, ...], real: torch.Tensor, part: int,
                       batch_size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum over the global batch of LPIPS(decoder output, target) for the three decoders; targets are the real
        image, and its quadrant, resized to 128 with nearest. The big and small decoders share one target, so the
        LPIPS network runs on 2B targets (no graph) and on the 3B stacked reconstructions (LPIPSLoss)."""
        b = real.shape[0]
        targets = torch.cat([F.interpolate(real, REC_SIZE), F.interpolate(crop_quadrant(real, part), REC_SIZE)])
        loss = LPIPSLoss(self.lpips)
        index = torch.cat([torch.arange(b), torch.arange(b), torch.arange(b, 2 * b)]).to(real.device)
        per_sample = loss.distance(torch.cat(recs).float(), loss.targets(targets.float()), index).reshape(3, b)
        # mean x global batch: the official per-batch sum, exact under gradient accumulation and data parallel
        terms = per_sample.mean(dim=1) * batch_size
        return terms.sum(), {"loss/rec_big": terms[0].detach(), "loss/rec_small": terms[1].detach(),
                             "loss/rec_part": terms[2].detach()}

    # -- losses (forward only) ---------------------------------------------------------------------------------
    def d_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        real = batch["image"]
        if self.channels_last:
            real = real.contiguous(memory_format=torch.channels_last)
        if self.reuse_fakes:  # keep G's graph for the G phase: one G forward per step, as the official loop
            self.G.requires_grad_(True)
            try:
                with torch.enable_grad():
                    fakes = self.fakes(ctx)
            finally:
                self.G.requires_grad_(False)
            self._fakes = {k: v for k, v in self._fakes.items() if k[0] == ctx.step}
            self._fakes[(ctx.step, ctx.micro)] = fakes
        else:
            with torch.no_grad():
                fakes = self.fakes(ctx)
        real_aug = self._augment(real, ctx, "real")
        part = int(torch.randint(0, 4, (), generator=ctx.generator("part")))
        real_logits, recs = self.D(real_aug, part=part)
        fake_logits = self.D([f.detach() for f in fakes])
        l_real, l_fake = hinge_d_terms(real_logits, fake_logits, self.margins(ctx, "real"), self.margins(ctx, "fake"))
        logs = {"loss/D_real": l_real.detach(), "loss/D_fake": l_fake.detach(),
                "D/real_logit": real_logits.mean().detach(), "D/fake_logit": fake_logits.mean().detach(),
                "D/margin": (real_logits.mean() - fake_logits.mean()).detach()}
        total = l_real + l_fake
        if self.lpips is not None:
            rec, rec_logs = self.reconstruction(recs, real_aug, part, ctx.batch_size)
            total = total + self.rec_weight * rec
            logs.update(rec_logs)
        self._last_rec = tuple(t[:4].detach() for t in (F.interpolate(real_aug, REC_SIZE), *recs))
        return total, logs

    def g_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        fakes = self._fakes.pop((ctx.step, ctx.micro), None)
        if fakes is None:
            fakes = self.fakes(ctx)
        loss = -self.D(list(fakes)).mean()
        return loss, {"loss/G": loss.detach()}

    def end_step(self, step: int, batch_size: int) -> dict[str, Any]:
        self._fakes.clear()
        return {"ema/beta": self.ema.update(step, batch_size)}

    # -- logging and persistence -------------------------------------------------------------------------------
    @torch.no_grad()
    def visuals(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Fixed-latent, fixed-noise samples of the EMA generator, and the decoders' last reconstructions
        (rows: augmented real at 128 px, decoder_big, decoder_small, decoder_part), as [0, 1] grids."""
        from torchvision.utils import make_grid
        dev = self.device
        imgs = self.G_ema(self.sample_z.to(dev), noise=[n.to(dev) for n in self.sample_noise]).float()
        nrow = max(1, int(math.ceil(math.sqrt(imgs.shape[0]))))
        out = {self.visual_tag: make_grid(((imgs.clamp(-1, 1) + 1) / 2).cpu(), nrow=nrow, padding=2)}
        if self._last_rec is not None:
            rows = torch.cat([t.float().cpu() for t in self._last_rec])
            out["reconstructions"] = make_grid(((rows.clamp(-1, 1) + 1) / 2), nrow=self._last_rec[0].shape[0],
                                               padding=2)
        return out
