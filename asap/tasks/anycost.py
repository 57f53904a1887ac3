"""Anycost GAN training: the official three stages on top of the StyleGAN2 task.

1. StyleGAN2 baseline (``model=anycost``): the StyleGAN2 recipe with Anycost's widths and a one-resolution D.
2. Multi-resolution (``model=anycost_multires``): G returns its top ``n_res`` skip images; each D step scores
   real/fake pairs at ``n_sampled_res`` of them (the real pyramid is the batch resized), the G loss sums the
   non-saturating loss over ``n_sampled_res`` outputs; path length is off.
3. Adaptive channels (``model=anycost_adaptive``): channels sorted by importance at the start, a new sub-generator
   per G and D step, a D conditioned on the sub-generator's architecture (reals get a random one), and distillation
   from the frozen stage-2 teacher: Σ_r MSE + LPIPS against the teacher's full output bilinearly reduced to r.

Each stage starts from the previous one's checkpoint (``model.anycost.init_from``: an asap checkpoint, an official
Anycost ``ckpt.pt`` or a rosinality StyleGAN2 file); new discriminator parts (from-RGB layers of the lower
resolutions, the conditioning layers) keep their fresh initialisation.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.losses.adversarial import logistic_d_loss, logistic_g_loss
from asap.losses.regularizers import r1_penalty
from asap.models.anycost import RATIOS, AnycostDiscriminator, AnycostGenerator, encode_arch
from asap.tasks.base import StepContext
from asap.tasks.stylegan import StyleGANTask

SAMPLING_MODES = ("uniform", "flexible", "sandwich")
PREVIEW_RATIOS = (1.0, 0.5, 0.25)
LPIPS_MIN_SIDE = 32  # LPIPS backbones pool 4-5 times: smaller skip images are enlarged to this side first


def resize(img: torch.Tensor, side: int, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize to ``side`` (identity when already that size)."""
    if img.shape[-1] == side:
        return img
    return F.interpolate(img, size=(side, side), mode="bilinear", align_corners=align_corners)


class AnycostTask(StyleGANTask):
    """StyleGAN2 task with multi-resolution D steps, sampled sub-generators, a conditioned D and distillation."""

    visual_tag = "samples_ema_full_x0.5_x0.25"
    val_visuals = False

    def __init__(self, family: str, generator: Mapping[str, Any], discriminator: Mapping[str, Any],
                 loss: Mapping[str, Any], optim: Mapping[str, Any], max_steps: int,
                 anycost: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(family, generator, discriminator, loss, optim, max_steps, metrics=metrics, **kwargs)
        if not isinstance(self.G, AnycostGenerator) or not isinstance(self.D, AnycostDiscriminator):
            raise AsapError("model: the anycost task needs asap.models.anycost.AnycostGenerator/AnycostDiscriminator")
        cfg = dict(anycost or {})
        self.metrics_cfg = dict(metrics or {})
        self.n_res = len(self.D.resolutions)
        self.n_sampled_res = min(int(cfg.get("n_sampled_res", 2)), self.n_res)
        if self.n_sampled_res < 1:
            raise AsapError("model.anycost.n_sampled_res must be >= 1")
        if self.n_res > 1 and self.path_weight > 0:
            raise AsapError("model.loss.path_weight must be 0 with a multi-resolution discriminator (the official "
                            "stages 2 and 3 turn path length off)")
        dyn = dict(cfg.get("dynamic_channels") or {})
        self.dynamic = bool(dyn.get("enabled", False))
        self.sampling = str(dyn.get("mode", "uniform"))
        if self.sampling not in SAMPLING_MODES:
            raise AsapError(f"model.anycost.dynamic_channels.mode must be one of {', '.join(SAMPLING_MODES)}, "
                            f"got {self.sampling!r}")
        self.min_channel = int(dyn.get("min_channel", 8))
        self.divided_by = int(dyn.get("divided_by", 4))
        if self.D.modulate and self.D.num_ws != self.G.num_ws:
            raise AsapError(f"model.discriminator.num_ws {self.D.num_ws} != the generator's {self.G.num_ws}")

        init_from = cfg.get("init_from")
        if init_from:
            self._init_from(Path(str(init_from)))
        if self.dynamic and bool(dyn.get("sort", True)):
            for net in (self.G, self.G_ema):
                net.sort_channels(n=int(dyn.get("sort_samples", 100_000)), seed=0)
            self.notes.append("channels sorted by importance (sub-generators keep the important ones)")

        distill = dict(cfg.get("distill") or {})
        self.distill_weight = float(distill.get("weight", 2.0))
        self.distill_lpips_pretrained = bool(distill.get("lpips_pretrained", True))
        self.distill_lpips_net = str(distill.get("lpips_net", "vgg"))
        self.distill_lpips_size = int(distill.get("lpips_size", 256))
        self.teacher = None
        teacher = distill.get("teacher")
        if teacher:
            import asap.pretrained
            t = asap.pretrained.load(str(teacher), which="g_ema")
            if not hasattr(t, "synthesis") or getattr(t, "size", None) != self.G.size:
                raise AsapError(f"model.anycost.distill.teacher: {teacher} is not a {self.G.size} px StyleGAN2/"
                                f"Anycost generator")
            self.teacher = self.add_frozen("teacher", t, str(teacher))
            self.notes.append(f"distillation from the frozen teacher {teacher} (weight {self.distill_weight}"
                              + ("" if self.distill_lpips_pretrained else ", LPIPS with a RANDOM backbone") + ")")
        self._lpips: dict[str, nn.Module] = {}

    # -- initialisation from the previous stage -------------------------------------------------------------
    def _init_from(self, path: Path) -> None:
        """Weights of the previous stage: G, G_ema and (partially) D; new D parts keep their initialisation."""
        import asap.pretrained
        from asap.pretrained.common import read_file
        try:
            obj = read_file(path, asap.pretrained.safe_globals())
        except AsapError as e:
            raise AsapError(f"model.anycost.init_from: {e}") from e
        nets: dict[str, nn.Module] = {}
        for name, which in (("g_ema", "g_ema"), ("generator", "g")):
            try:
                nets[name] = asap.pretrained.load(path, which=which)
            except AsapError:
                pass
        if "g_ema" not in nets and "generator" not in nets:
            raise AsapError(f"model.anycost.init_from: {path} holds no generator")
        nets.setdefault("generator", nets.get("g_ema"))
        nets.setdefault("g_ema", nets["generator"])
        for name, target in (("generator", self.G), ("g_ema", self.G_ema)):
            sd = nets[name].state_dict()
            if any(tuple(v.shape) != tuple(target.state_dict()[k].shape) for k, v in sd.items()
                   if k in target.state_dict()) or set(sd) != set(target.state_dict()):
                raise AsapError(f"model.anycost.init_from: {path}: its generator does not match model.generator "
                                f"(widths {getattr(nets[name], 'channels', '?')} vs {self.G.channels})")
            target.load_state_dict(sd)
        try:
            d_src = asap.pretrained.load(path, part="discriminator").state_dict()
        except AsapError:
            d_src = None
        if d_src is None:
            self.notes.append(f"init_from {path}: no discriminator there; D starts fresh")
            return
        d_src = {("from_rgbs.0." + k[len("from_rgb."):] if k.startswith("from_rgb.") else k): v
                 for k, v in d_src.items()}
        ours = self.D.state_dict()
        loaded = {k: v for k, v in d_src.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)}
        if not any(k.startswith("blocks.") for k in loaded):
            raise AsapError(f"model.anycost.init_from: {path}: its discriminator does not match model.discriminator")
        ours.update(loaded)
        self.D.load_state_dict(ours)
        fresh = len(ours) - len(loaded)
        self.notes.append(f"init_from {path}: G, G_ema and {len(loaded)} D tensors loaded; {fresh} new D tensors")
        del obj

    # -- sub-generators ---------------------------------------------------------------------------------------
    def sample_sub_generator(self, gen: torch.Generator) -> tuple[list[int] | None, list[float]]:
        """(per-layer widths or None for full, per-layer ratios) for one step: ``uniform`` one ratio for all,
        ``flexible`` a ratio per layer (no thinner than the uniform 0.25 width), ``sandwich`` 25% full,
        25% smallest, 50% flexible."""
        n = self.G.num_ws
        mode = self.sampling
        if mode == "sandwich":
            u = float(torch.rand((), generator=gen))
            if u < 0.25:
                return None, [1.0] * n
            if u < 0.5:
                return self.G.ratio_channels(RATIOS[0]), [RATIOS[0]] * n
            mode = "flexible"
        if mode == "uniform":
            r = RATIOS[int(torch.randint(len(RATIOS), (), generator=gen))]
            return (None if r == 1.0 else self.G.ratio_channels(r)), [r] * n
        full, bottom = self.G.full_channels, self.G.ratio_channels(RATIOS[0])
        widths, ratios = [], []
        for f, b in zip(full, bottom):
            valid = [r for r in RATIOS if r * f >= b] or [1.0]
            r = valid[int(torch.randint(len(valid), (), generator=gen))]
            c = min(max(int(r * f), self.min_channel), f)
            c = min(f, int(math.ceil(c / self.divided_by) * self.divided_by))
            widths.append(c)
            ratios.append(r)
        return widths, ratios

    def _arch(self, ratios: list[float]) -> torch.Tensor | None:
        return encode_arch(ratios).to(self.device) if self.D.modulate else None

    def _phase_sub_generator(self, ctx: StepContext, phase: str) -> tuple[list[int] | None, list[float]]:
        """The sub-generator of ``phase`` at this step (the same for every micro-batch and process)."""
        if not self.dynamic:
            return None, [1.0] * self.G.num_ws
        return self.sample_sub_generator(dataclasses.replace(ctx, phase=phase).generator("subnet"))

    # -- latents and images -----------------------------------------------------------------------------------
    def sample_latents(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
        """z, z2 and the crossover point (style mixing with ``mixing_prob``), keyed like StyleGANTask's."""
        z = ctx.randn(self.G.z_dim, stream="z")
        gen = ctx.generator("mixing")
        if self.mixing_prob > 0 and float(torch.rand((), generator=gen)) < self.mixing_prob:
            return z, ctx.randn(self.G.z_dim, stream="z2"), int(torch.randint(1, self.G.num_ws, (), generator=gen))
        return z, None, None

    @staticmethod
    def ws_of(G: nn.Module, latents: tuple[torch.Tensor, torch.Tensor | None, int | None]) -> torch.Tensor:
        z, z2, idx = latents
        return G.broadcast(G.mapping(z), G.mapping(z2) if z2 is not None else None, idx)

    def sample_ws(self, ctx: StepContext) -> torch.Tensor:
        return self.ws_of(self.G, self.sample_latents(ctx))

    def generate_rgbs(self, ctx: StepContext, channels: list[int] | None, latents=None, noise=None):
        """The top ``n_res`` skip images (ascending sides) of the sub-generator ``channels``."""
        latents = latents or self.sample_latents(ctx)
        noise = noise if noise is not None else self.sample_noise(ctx)
        with self.G.sub_generator(channels=channels):
            _, rgbs = self.G.synthesis(self.ws_of(self.G, latents), noise=noise, return_rgbs=True)
        return rgbs[-self.n_res:]

    def real_pyramid(self, real: torch.Tensor) -> list[torch.Tensor]:
        """The real batch at every D resolution (ascending sides), bilinearly resized with antialiasing."""
        return [real if r == real.shape[-1] else
                F.interpolate(real, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
                for r in sorted(self.D.resolutions)]

    def _sampled(self, ctx: StepContext, stream: str) -> list[int]:
        """Indices (into the ascending pyramid) of the resolutions scored at this step."""
        perm = torch.randperm(self.n_res, generator=ctx.generator(stream))
        return sorted(perm[:self.n_sampled_res].tolist())

    def discriminate(self, images: torch.Tensor, ctx: StepContext | None = None, stream: str = "",
                     g_arch: torch.Tensor | None = None) -> torch.Tensor:
        if self.augment is not None:
            images = self.augment(images) if ctx is None else self.augment(
                images, generator=ctx.generator(f"augment/{stream}/{images.shape[-1]}"), rows=ctx.positions,
                total=ctx.batch_size)
        return self.D(images, g_arch)

    # -- losses ---------------------------------------------------------------------------------------------
    def d_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        channels, ratios = self._phase_sub_generator(ctx, "D")
        with torch.no_grad():
            fakes = self.generate_rgbs(ctx, channels)
        reals = self.real_pyramid(batch["image"])
        arch = self._arch(ratios)
        real_arch = self._arch(self.sample_sub_generator(ctx.generator("real_arch"))[1]) if self.D.modulate else None
        total, logs = 0.0, {}
        real_scores, fake_scores = [], []
        for i in self._sampled(ctx, "d_res"):
            real_logits = self.discriminate(reals[i], ctx, "real", real_arch)
            fake_logits = self.discriminate(fakes[i].detach(), ctx, "fake", arch)
            l_real, l_fake = logistic_d_loss(real_logits, fake_logits)
            total = total + l_real + l_fake
            real_scores.append(real_logits.detach())
            fake_scores.append(fake_logits.detach())
            logs[f"loss/D_{reals[i].shape[-1]}px"] = (l_real + l_fake).detach()
        if self.ada is not None:  # the highest scored resolution's real logits tune p
            self.ada.accumulate(real_scores[-1])
        logs.update({"loss/D": total.detach(), "D/real_score": torch.cat(real_scores).mean(),
                     "D/fake_score": torch.cat(fake_scores).mean()})
        return total, logs

    def r1_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        reals = self.real_pyramid(batch["image"])
        i = int(torch.randint(self.n_res, (), generator=ctx.generator("r1_res")))
        real = reals[i].detach().requires_grad_(True)
        arch = self._arch(self._phase_sub_generator(ctx, "D")[1])  # the fake's arch of this step's D phase
        logits = self.discriminate(real, ctx, "real", arch)
        r1 = r1_penalty(logits, real)
        return self.r1_gamma / 2 * r1 + 0 * logits[0, 0], {"loss/D_r1": r1.detach()}

    def g_loss(self, batch: Mapping[str, Any], ctx: StepContext):
        channels, ratios = self._phase_sub_generator(ctx, "G")
        latents, noise = self.sample_latents(ctx), self.sample_noise(ctx)
        rgbs = self.generate_rgbs(ctx, channels, latents, noise)
        arch = self._arch(ratios)
        loss = sum(logistic_g_loss(self.discriminate(rgbs[i], ctx, "fake", arch)) for i in self._sampled(ctx, "g_res"))
        logs = {"loss/G_adv": loss.detach()}
        if self.teacher is not None and self.distill_weight > 0:
            mse, perceptual = self.distill_losses(rgbs, latents, noise)
            distill = mse + perceptual
            loss = loss + self.distill_weight * distill
            logs.update({"loss/G_distill_mse": mse.detach(), "loss/G_distill_lpips": perceptual.detach(),
                         "loss/G_distill": (self.distill_weight * distill).detach()})
        logs["loss/G"] = loss.detach()
        return loss, logs

    def distill_losses(self, rgbs: list[torch.Tensor], latents, noise) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ_r MSE and Σ_r LPIPS between the student's skip images and the teacher's full output bilinearly
        reduced to r (align_corners=True); LPIPS inputs clamped and resized into [32, ``lpips_size``]."""
        with torch.no_grad():
            target = self.teacher.synthesis(self.ws_of(self.teacher, latents), noise=noise)
        lp = self.lpips(self.distill_lpips_net, self.distill_lpips_pretrained)
        mse, perceptual = 0.0, 0.0
        for s in rgbs:
            t = resize(target, s.shape[-1], align_corners=True)
            mse = mse + F.mse_loss(s, t)
            s_in, t_in = s.clamp(-1, 1), t.clamp(-1, 1)
            side = s_in.shape[-1]
            if side > self.distill_lpips_size or side < LPIPS_MIN_SIDE:  # tiny skips are enlarged for the backbone
                side = min(max(side, LPIPS_MIN_SIDE), self.distill_lpips_size)
                s_in = resize(s_in, side, align_corners=True)
                t_in = resize(t_in, side, align_corners=True)
            perceptual = perceptual + lp(s_in, t_in).mean()
        return mse, perceptual

    def lpips(self, net: str, pretrained: bool) -> nn.Module:
        key = f"{net}/{pretrained}"
        if key not in self._lpips:
            from asap.metrics.lpips import build_lpips
            self._lpips[key] = build_lpips(net, pretrained=pretrained).to(self.device)
        return self._lpips[key]

    # -- logging ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def preview_images(self, n: int = 8) -> list[torch.Tensor]:
        """G_ema's outputs on the fixed latents (constant noise) at full width, x0.5 and x0.25."""
        z = self.sample_z[:n].to(self.device)
        outs = []
        for r in PREVIEW_RATIOS:
            with self.G_ema.sub_generator(ratio=r):
                outs.append(self.G_ema(z, noise_mode="const"))
        return outs

    def visuals(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """One row per fixed latent: full | x0.5 | x0.25, in [0, 1]."""
        from torchvision.utils import make_grid
        outs = self.preview_images()
        rows = torch.stack(outs, 1).flatten(0, 1)
        return make_grid(((rows.clamp(-1, 1) + 1) / 2).cpu(), nrow=len(outs), padding=2)

    @torch.no_grad()
    def consistency(self) -> dict[str, float]:
        """LPIPS between G_ema's full output and its x0.5 / x0.25 sub-generators on the fixed latents."""
        pretrained = bool(self.metrics_cfg.get("lpips_pretrained", True))
        lp = self.lpips("alex", pretrained)
        full, *subs = self.preview_images()
        return {f"consistency_lpips_x{r}": float(lp(full.clamp(-1, 1), s.clamp(-1, 1)).mean())
                for r, s in zip(PREVIEW_RATIOS[1:], subs)}

    def evaluate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, float]:
        out = super().evaluate(batches)
        out.update(self.consistency())
        return out

    def to(self, device: torch.device) -> "AnycostTask":
        super().to(device)
        for m in self._lpips.values():
            m.to(device)
        return self


__all__ = ["AnycostTask", "SAMPLING_MODES", "resize"]
