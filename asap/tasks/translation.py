"""Semantic image synthesis (ASAPNet, SPADE): a conditional generator trained against a multi-scale patch
discriminator with hinge loss, discriminator feature matching and VGG19 perceptual loss (the SPADE recipe)."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from asap.data.preprocess import semantic_input
from asap.errors import AsapError
from asap.pretrained.native import build
from asap.tasks.base import Phase, StepContext, Task, linear_decay


def colorize_labels(label: torch.Tensor, palette: np.ndarray | None) -> torch.Tensor:
    """[B,1,H,W] ids -> [B,3,H,W] colours in [0,1] (dataset palette, or a fixed pseudo-random one)."""
    n = int(label.max().item()) + 1
    if palette is None or len(palette) < n:
        rng = np.random.default_rng(1234)
        palette = rng.integers(0, 256, (max(n, 256), 3), dtype=np.uint8)
    lut = torch.as_tensor(np.asarray(palette, dtype=np.float32) / 255.0, device=label.device)
    return lut[label[:, 0].long().clamp(0, len(lut) - 1)].permute(0, 3, 1, 2)


class TranslationTask(Task):
    """Owns G, D, their optimizers and schedulers. Phases: G (every ``d_steps_per_g``-th step, as the official
    ``--D_steps_per_G``), then D (every step)."""

    data_kinds = ("labels",)

    def __init__(self, family: str, generator: Mapping[str, Any], discriminator: Mapping[str, Any],
                 loss: Mapping[str, Any], optim: Mapping[str, Any], max_steps: int,
                 data: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        from asap.losses.adversarial import GANLoss
        from asap.losses.feature_matching import feature_matching_loss
        from asap.losses.perceptual import VGGPerceptualLoss

        self.family = family
        self.data = dict(data or {})
        self.metrics_cfg = dict(metrics or {})
        g_cfg = dict(generator)
        self.G = build(g_cfg)
        self.spec = self.G.spec
        d_cfg = dict(discriminator, input_nc=self.spec.num_channels + int(g_cfg.get("output_nc", 3)))
        self.D = build(d_cfg)
        self.networks = {"generator": self.G, "discriminator": self.D}
        self.network_configs = {"generator": g_cfg, "discriminator": d_cfg}

        self.gan_loss = GANLoss(loss.get("gan_mode", "hinge"))
        self.feature_matching = feature_matching_loss
        self.lambda_feat = float(loss.get("lambda_feat", 10.0))
        self.lambda_vgg = float(loss.get("lambda_vgg", 10.0))
        self.lambda_l1 = float(loss.get("lambda_l1", 0.0))
        self.vgg = None
        if self.lambda_vgg > 0:
            pretrained = bool(loss.get("perceptual", {}).get("pretrained", True))
            self.vgg = VGGPerceptualLoss(pretrained=pretrained)
            if not pretrained:
                self.notes.append("perceptual loss uses a RANDOM VGG19 (loss.perceptual.pretrained=false)")
        else:
            self.notes.append("VGG perceptual loss is off (model.loss.lambda_vgg=0)")

        lr = float(optim.get("lr", 2e-4))
        betas = (float(optim.get("beta1", 0.0)), float(optim.get("beta2", 0.9)))
        g_lr, d_lr = (lr / 2, lr * 2) if optim.get("ttur", True) else (lr, lr)
        self.optimizers = {"G": torch.optim.Adam(self.G.parameters(), lr=g_lr, betas=betas),
                           "D": torch.optim.Adam(self.D.parameters(), lr=d_lr, betas=betas)}
        factor = linear_decay(max_steps, float(optim.get("decay_start", 0.5)))
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, factor) for k, o in self.optimizers.items()}
        self.d_steps = int(optim.get("d_steps_per_g", 1))
        if self.d_steps < 1:
            raise AsapError(f"model.optim.d_steps_per_g must be >= 1, got {self.d_steps}")
        for name, v in (("lambda_feat", self.lambda_feat), ("lambda_vgg", self.lambda_vgg), ("lambda_l1", self.lambda_l1)):
            if v < 0:
                raise AsapError(f"model.loss.{name} must be >= 0, got {v}")
        self._lpips = None

    def to(self, device: torch.device) -> "TranslationTask":
        super().to(device)
        if self.vgg is not None:
            self.vgg.to(device)
        return self

    def phases(self) -> list[Phase]:
        return [Phase("G", self.g_loss, networks=("generator",), optimizer="G", interval=self.d_steps),
                Phase("D", self.d_loss, networks=("discriminator",), optimizer="D")]

    # -- helpers --------------------------------------------------------------------------------------------
    def inputs(self, batch: Mapping[str, Any]) -> torch.Tensor:
        inst = batch.get("instance") if self.spec.uses_instance else None
        return semantic_input(batch["label"], inst, self.spec, check=False)

    def discriminate(self, x: torch.Tensor, fake: torch.Tensor, real: torch.Tensor):
        """Fake and real through D in one batch (as the official code, so batch statistics are shared)."""
        out = self.D(torch.cat([torch.cat([x, fake], 1), torch.cat([x, real], 1)], 0))
        n = fake.shape[0]
        return [[f[:n] for f in scale] for scale in out], [[f[n:] for f in scale] for scale in out]

    # -- losses (forward only; the Trainer runs backward and the optimisers) ----------------------------------
    def g_loss(self, batch: Mapping[str, Any], ctx: StepContext | None = None):
        """Hinge G loss + feature matching + VGG (+ L1) on one batch."""
        x, real = self.inputs(batch), batch["image"]
        fake = self.G(x)
        pred_fake, pred_real = self.discriminate(x, fake, real)
        losses = {"loss/G_GAN": self.gan_loss(pred_fake, True, for_discriminator=False)}
        if self.lambda_feat > 0:
            losses["loss/G_feat"] = self.feature_matching(pred_fake, pred_real) * self.lambda_feat
        if self.vgg is not None:
            losses["loss/G_VGG"] = self.vgg(fake, real) * self.lambda_vgg
        if self.lambda_l1 > 0:
            losses["loss/G_L1"] = F.l1_loss(fake, real) * self.lambda_l1
        total = sum(losses.values())
        logs = {k: v.detach() for k, v in losses.items()}
        logs["loss/G_total"] = total.detach()
        return total, logs

    def d_loss(self, batch: Mapping[str, Any], ctx: StepContext | None = None):
        """Hinge D loss on fake (G's output, no gradient to G) and real pairs."""
        x, real = self.inputs(batch), batch["image"]
        fake = self.G(x).detach()  # G is frozen in this phase: no graph is built through it
        pred_fake, pred_real = self.discriminate(x, fake, real)
        d_fake = self.gan_loss(pred_fake, False, for_discriminator=True)
        d_real = self.gan_loss(pred_real, True, for_discriminator=True)
        return d_fake + d_real, {
            "loss/D_fake": d_fake.detach(), "loss/D_real": d_real.detach(),
            "D/real_score": torch.stack([s[-1].mean() for s in pred_real]).mean().detach(),
            "D/fake_score": torch.stack([s[-1].mean() for s in pred_fake]).mean().detach()}

    # -- logging and evaluation -----------------------------------------------------------------------------
    def _palette(self) -> np.ndarray | None:
        name = self.data.get("palette")
        if not name:
            return None
        try:
            from asap.data.palettes import get_palette
            return get_palette(name)
        except Exception:
            return None

    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Rows of colourised label | real | generated, in [0,1]."""
        from torchvision.utils import make_grid
        fake = self.G(self.inputs(batch))
        label = colorize_labels(batch["label"], self._palette())
        tiles = []
        for i in range(fake.shape[0]):
            tiles += [label[i], (batch["image"][i] + 1) / 2, (fake[i] + 1) / 2]
        return make_grid(torch.stack(tiles).clamp(0, 1).cpu(), nrow=3, padding=2)

    def lpips(self) -> torch.nn.Module:
        if self._lpips is None:
            from asap.metrics.lpips import build_lpips
            pretrained = bool(self.metrics_cfg.get("lpips_pretrained", True))
            self._lpips = build_lpips(pretrained=pretrained).to(self.device)
        return self._lpips

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        """Held-out L1, PSNR and LPIPS of G's outputs against the photos."""
        from asap.metrics.translation import evaluate_generator
        return evaluate_generator(self.G, self.spec, batches, self.lpips())
