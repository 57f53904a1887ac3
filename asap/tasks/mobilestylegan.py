"""MobileStyleGAN distillation (the official ``Distiller``): a frozen StyleGAN2 teacher renders images from sampled
latents and its noise; the wavelet student is trained to match them.

Phases per step: G (student: multi-scale pixel + wavelet L1 and MSE at every wavelet output, LPIPS perceptual loss,
non-saturating GAN loss through differentiable augmentation; weights 1, 1, 1, 0.5), D (non-saturating loss, teacher
images as reals, both augmented) and Dreg every ``d_reg_every`` steps (R1 on non-augmented teacher images, weighted
by the interval as the official trainer does, without Adam's lazy correction; the official trainer skips the plain
D update on those steps, we run both). Adam lr 5e-4, betas (0.9, 0.999); no EMA (the official has none).

The teacher is any StyleGAN2 generator asap loads (a rosinality file, one of our runs, the distiller's Lightning file
or the converter's synthesis file with its mapping file); it is registered with ``add_frozen`` (checkpoints record
its path and sha256, not its weights). The student's mapping network is the teacher's, frozen.
No dataset: the inputs are latents drawn per sample from the step context.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.losses.adversarial import logistic_d_loss, logistic_g_loss
from asap.losses.distillation import wavelet_distillation_terms
from asap.losses.regularizers import r1_penalty
from asap.models.mobilestylegan import MobileStyleGANGenerator, seeded_noise
from asap.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, SynthesisNetwork
from asap.nn.diffaug import NUM_UNIFORMS, DistillAugment
from asap.tasks.base import Phase, StepContext, Task

STUDENT_TARGET = "asap.models.mobilestylegan.MobileStyleGANGenerator"
DISCRIMINATOR_TARGET = "asap.models.stylegan2.StyleGAN2Discriminator"


def load_teacher(path: str | Path, mapping_path: str | Path | None = None) -> tuple[StyleGAN2Generator, list[Path]]:
    """A StyleGAN2 generator from any file asap reads, and the files it came from. A converter synthesis file
    needs its mapping file (``mapping_path``, else the sibling ``*mapping_network*`` file)."""
    from asap.pretrained import detect_family, load, native, read_file, reader, safe_globals
    from asap.pretrained import mobilestylegan as msg_reader
    from asap.pretrained.mobilestylegan import mapping_file_for

    path = Path(path)
    obj = read_file(path, safe_globals())  # read once: distiller files can be large
    if native.is_native(obj):
        model = native.load_model(obj, path)
    elif msg_reader.detect(obj):
        model = msg_reader.load_official(obj, path, part="teacher" if "state_dict" in obj else None)
    else:
        family = detect_family(obj)
        if family is None:
            raise AsapError(f"{path}: not a checkpoint asap reads (a StyleGAN2 generator is needed as the teacher)")
        model = reader(family).load_official(obj, path)
    files = [path]
    if isinstance(model, SynthesisNetwork):
        mapping_path = Path(mapping_path) if mapping_path else mapping_file_for(path)
        if mapping_path is None:
            raise AsapError(f"{path}: a synthesis network alone; give its mapping file with model.teacher_mapping=PATH")
        mapping = load(mapping_path)
        if not hasattr(mapping, "layers") or getattr(mapping, "w_dim", None) != model.w_dim:
            raise AsapError(f"{mapping_path}: not a mapping network with {model.w_dim}-d output for {path}")
        generator = StyleGAN2Generator(size=model.size, style_dim=model.w_dim, z_dim=mapping.z_dim,
                                       n_mlp=len(mapping.layers), channels=model.channels)
        generator.mapping.load_state_dict(mapping.state_dict())
        generator.synthesis.load_state_dict(model.state_dict())
        model = generator
        files.append(mapping_path)
    elif mapping_path:
        raise AsapError(f"model.teacher_mapping is only for a converter synthesis file; {path} holds a whole generator")
    if not isinstance(model, StyleGAN2Generator):
        raise AsapError(f"{path}: holds a {type(model).__name__}, not a StyleGAN2 generator to distil from")
    return model.eval(), files


class DistillationTask(Task):
    """Owns the student, the discriminator, their optimizers, the augmentation and the perceptual network."""

    data_kinds = ("none",)

    visual_tag = "teacher_student"
    val_visuals = False

    def __init__(self, family: str, teacher: str | None, max_steps: int, teacher_mapping: str | None = None,
                 student: Mapping[str, Any] | None = None, discriminator: Mapping[str, Any] | None = None,
                 loss: Mapping[str, Any] | None = None, optim: Mapping[str, Any] | None = None,
                 augment: Mapping[str, Any] | None = None, samples: Mapping[str, Any] | None = None,
                 data: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 perceptual: nn.Module | None = None) -> None:
        super().__init__()
        self.family = family
        if not teacher:
            raise AsapError("model.teacher=PATH is required: a StyleGAN2 checkpoint to distil from")
        T, files = load_teacher(teacher, teacher_mapping)
        self.T = self.add_frozen("teacher", T, files[0])
        if len(files) > 1:
            self.add_frozen("teacher_mapping", T.mapping, files[1])
        self.notes.append(f"teacher: StyleGAN2 {T.size} px, widths {T.channels}, from {files[0]}")

        s_cfg = {"_target_": STUDENT_TARGET, "size": T.size, "style_dim": T.style_dim, "z_dim": T.z_dim,
                 "n_mlp": len(T.mapping.layers), "lr_mlp": float(T.mapping.layers[0].lr_mul),
                 "channels": list((student or {}).get("channels") or T.channels[:-1])}
        d_opts = dict(discriminator or {})
        d_cfg = {"_target_": DISCRIMINATOR_TARGET, "size": T.size,
                 "channels": list(d_opts.get("channels") or T.channels),
                 "stddev_group": int(d_opts.get("stddev_group", 4))}
        try:
            self.S = MobileStyleGANGenerator(**{k: v for k, v in s_cfg.items() if k != "_target_"})
            self.D = StyleGAN2Discriminator(**{k: v for k, v in d_cfg.items() if k != "_target_"})
        except ValueError as e:
            raise AsapError(f"model: {e}") from e
        self.S.mapping.load_state_dict(T.mapping.state_dict())
        self.S.mapping.requires_grad_(False)
        if T.has_w_avg():
            self.S.w_avg.copy_(T.w_avg)
        else:
            self.S.mean_w(4096)
        self.networks = {"generator": self.S, "discriminator": self.D}
        self.network_configs = {"generator": s_cfg, "discriminator": d_cfg}

        loss = dict(loss or {})
        self.weights = {k: float(loss.get(k, v)) for k, v in
                        (("l1", 1.0), ("l2", 1.0), ("perceptual", 1.0), ("gan", 0.5))}
        self.r1_gamma = float(loss.get("r1_gamma", 10.0))
        self.d_reg_every = int(loss.get("d_reg_every", 16))
        size = loss.get("perceptual_size", 256)
        self.perceptual_size = int(size) if size else None
        if self.d_reg_every < 1 or self.r1_gamma < 0 or min(self.weights.values()) < 0:
            raise AsapError("model.loss: weights and r1_gamma must be >= 0 and d_reg_every >= 1")
        self.perceptual = perceptual
        if self.perceptual is None and self.weights["perceptual"] > 0:
            from asap.metrics.lpips import build_lpips
            pretrained = bool(loss.get("lpips_pretrained", True))
            self.perceptual = build_lpips(str(loss.get("lpips_net", "vgg")), pretrained=pretrained)
            if not pretrained:
                self.notes.append("perceptual loss uses a RANDOM LPIPS backbone (model.loss.lpips_pretrained=false)")
        batch = (data or {}).get("batch_size")
        if batch is not None and int(batch) % min(int(batch), self.D.stddev_group):
            raise AsapError(f"data.batch_size={batch} must be divisible by the minibatch-stddev group "
                            f"{min(int(batch), self.D.stddev_group)}")

        optim = dict(optim or {})
        betas = (float(optim.get("beta1", 0.9)), float(optim.get("beta2", 0.999)))
        self.optimizers = {
            "G": torch.optim.Adam(self.S.synthesis.parameters(), lr=float(optim.get("lr_student", 5e-4)), betas=betas),
            "D": torch.optim.Adam(self.D.parameters(), lr=float(optim.get("lr_d", 5e-4)), betas=betas)}
        aug = dict(augment or {})
        self.augment = DistillAugment() if aug.get("enabled", True) else None

        samples = dict(samples or {})
        gen = torch.Generator().manual_seed(int(samples.get("seed", 0)))
        self.sample_z = torch.randn(int(samples.get("num", 8)), T.z_dim, generator=gen)
        self.sample_noise_maps = seeded_noise(T.synthesis.noise_shapes(), int(samples.get("seed", 0)))

    # -- the Trainer's view -------------------------------------------------------------------------------------
    def to(self, device: torch.device) -> "DistillationTask":
        super().to(device)
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self

    def phases(self) -> list[Phase]:
        phases = [Phase("G", self.g_loss, networks=("generator",), optimizer="G"),
                  Phase("D", self.d_loss, networks=("discriminator",), optimizer="D")]
        if self.r1_gamma > 0:
            phases.append(Phase("Dreg", self.r1_loss, networks=("discriminator",), optimizer="D",
                                interval=self.d_reg_every, mixed_precision=False))
        return phases

    # -- sampling -----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, ctx: StepContext) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """(w, the teacher's noise maps, the teacher image) for the context's samples, keyed per sample."""
        z = ctx.randn(self.T.z_dim, stream="z")
        shapes = self.T.synthesis.noise_shapes()
        sizes = [h * w for (_, _, h, w) in shapes]
        flat = ctx.randn(sum(sizes), stream="noise")
        noise = [t.reshape(ctx.size, 1, h, w) for t, (_, _, h, w) in zip(flat.split(sizes, 1), shapes)]
        w = self.T.mapping(z)
        return w, noise, self.T.synthesis(w, noise=noise)

    def student(self, w: torch.Tensor, noise: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.S.synthesis(w, noise=noise[:self.S.synthesis.num_noise], return_freq=True)

    def discriminate(self, images: torch.Tensor, ctx: StepContext, stream: str) -> torch.Tensor:
        if self.augment is not None:
            images = self.augment(images, ctx.rand(NUM_UNIFORMS, stream=f"augment/{stream}"))
        return self.D(images)

    def _resize(self, img: torch.Tensor) -> torch.Tensor:
        if self.perceptual_size is None or img.shape[-1] == self.perceptual_size:
            return img
        return F.interpolate(img, size=self.perceptual_size, mode="bilinear", align_corners=False)

    # -- losses (forward only) ---------------------------------------------------------------------------------
    def distillation_loss(self, freqs: list[torch.Tensor], img: torch.Tensor, teacher: torch.Tensor
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The non-adversarial part of the student loss (weighted) and its terms."""
        l1, l2 = wavelet_distillation_terms(freqs, teacher)
        total = self.weights["l1"] * l1 + self.weights["l2"] * l2
        logs = {"loss/l1": l1.detach(), "loss/l2": l2.detach()}
        if self.weights["perceptual"] > 0:
            p = self.perceptual(self._resize(img), self._resize(teacher)).mean()
            total = total + self.weights["perceptual"] * p
            logs["loss/perceptual"] = p.detach()
        logs["loss/distill"] = total.detach()
        return total, logs

    def g_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        w, noise, teacher = self.sample(ctx)
        img, freqs = self.student(w, noise)
        loss, logs = self.distillation_loss(freqs, img, teacher)
        if self.weights["gan"] > 0:
            gan = logistic_g_loss(self.discriminate(img, ctx, "fake"))
            loss = loss + self.weights["gan"] * gan
            logs["loss/G_gan"] = gan.detach()
        logs["loss/G"] = loss.detach()
        return loss, logs

    def d_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        w, noise, teacher = self.sample(ctx)
        with torch.no_grad():
            fake = self.student(w, noise)[0]
        real_logits = self.discriminate(teacher, ctx, "real")
        fake_logits = self.discriminate(fake, ctx, "fake")
        l_real, l_fake = logistic_d_loss(real_logits, fake_logits)
        return l_real + l_fake, {"loss/D_real": l_real.detach(), "loss/D_fake": l_fake.detach(),
                                 "D/real_score": real_logits.mean().detach(),
                                 "D/fake_score": fake_logits.mean().detach()}

    def r1_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        teacher = self.sample(ctx)[2].detach().requires_grad_(True)
        logits = self.D(teacher)
        r1 = r1_penalty(logits, teacher)
        return self.d_reg_every * self.r1_gamma / 2 * r1 + 0 * logits[0, 0], {"loss/D_r1": r1.detach()}

    # -- logging ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Fixed latents and noise: teacher images in the top row, the student's below, in [0, 1]."""
        from torchvision.utils import make_grid
        z = self.sample_z.to(self.device)
        noise = [n.to(self.device) for n in self.sample_noise_maps]
        w = self.T.mapping(z)
        was_training = self.S.training
        self.S.eval()
        teacher = self.T.synthesis(w, noise=noise)
        student = self.S.synthesis(w, noise=noise[:self.S.synthesis.num_noise])
        self.S.train(was_training)
        imgs = torch.cat([teacher, student]).clamp(-1, 1)
        return make_grid(((imgs + 1) / 2).cpu(), nrow=z.shape[0], padding=2)

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        return {}
