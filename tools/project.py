#!/usr/bin/env python
"""Project photos into the latent space (w or W+) of a StyleGAN-type generator, StyleGAN2 Appendix D style."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/project.py IMAGE [IMAGE | FOLDER ...] checkpoint=PATH [steps=1000] [space=w|w+] [key=value ...]

Finds a latent and noise maps whose image matches each photo (StyleGAN2, Karras et al. 2020, Appendix D; as
rosinality's projector.py) and writes, per input, <stem>_projected.png (the reconstruction) and <stem>_latent.pt
(a dict: ws [1, num_ws, w_dim], plus w [1, w_dim] for space=w; noise (list of maps); space; lpips; mse; checkpoint;
image; steps - loadable with torch.load(weights_only=True)) into out=DIR, then prints the final LPIPS and MSE.

Inputs are read as RGB, resized (LANCZOS) so the shorter side equals the generator's size, centre-cropped and
scaled to [-1, 1]. Images larger than 256 px are average-pooled to 256 px for LPIPS.

Keys (conf/project.yaml):
  checkpoint=PATH     our checkpoint (g_ema by default), an official rosinality stylegan2-pytorch .pt, an official
                      Anycost file or an official MobileStyleGAN distiller .ckpt (W+ then has its 3n+2 slots)
  family=NAME         official format: stylegan2 | anycost | mobilestylegan (default: detected); +official.K=V load
                      options (e.g. which=g)
  family=anycost      Anycost's procedure: w+ only with the stored noise, LPIPS + anycost.mse * MSE (1.0),
                      anycost.steps=100, anycost.optimizer=lbfgs|adam, anycost.lr (1 | 0.001),
                      anycost.consistency=true: every step through a random sub-generator (consistency-aware)
  steps=N             optimisation steps (default 1000)
  space=w|w+          w: one w broadcast to every layer (default); w+: one w per layer
  lr=X                peak Adam learning rate (default 0.1; rampup 5%, cosine rampdown over the last 25%)
  mse=X               weight of a pixel MSE term added to LPIPS (default 0)
  noise_regularize=X  weight of the multi-scale noise autocorrelation penalty (default 1e5)
  latent_noise=X      latent noise strength 0.05 * w_std, decaying quadratically to 0 at noise_ramp=0.75
  w_avg_samples=N     mapped samples for w_std (and w_avg, when the file does not carry it) (default 10000)
  lpips_pretrained=B  true (default): LPIPS-VGG with ImageNet weights (vgg16-397923af.pth in the torch hub
                      checkpoints folder; an offline machine without it gets a one-line error); false: a random
                      backbone (for tests; a note is printed)
  seed=N              seeds the noise initialisation and the latent noise (default 0)
  device=auto|cpu|cuda|cuda:N; progress=true|false (tqdm bar on stderr)
  out=DIR             output folder (default outputs/project); files are written to a temp name, then renamed

Any error (missing or corrupt image or checkpoint, a checkpoint that is not a StyleGAN-type generator, steps < 1,
space not w or w+, missing LPIPS weights) prints one line and exits with code 2; all inputs are checked first.
"""


def _number(cfg, key, kind, minimum=None):
    from asap.errors import AsapError

    value = cfg[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise AsapError(f"{key}={value!r} is not {'an integer' if kind is int else 'a number'}") from None
    if minimum is not None and not number >= minimum:
        raise AsapError(f"{key} must be >= {minimum}, got {value}")
    return number


def run(cfg, positional):
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.generate import check_stylegan, hwc, to_uint8
    from asap.inference.project import SPACES, latent_record, load_image, project
    from asap.inference.translate import expand_inputs
    from asap.metrics.lpips import build_lpips
    from asap.utils.device import resolve_device
    from asap.utils.io import atomic_files, check_outputs, save_png, save_torch

    def note(message):
        print(message, file=sys.stderr)

    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        raise AsapError("checkpoint=PATH is required (our .pt checkpoint or an official rosinality stylegan2 .pt)")
    steps = _number(cfg, "steps", int, 1)
    space = str(cfg.space).lower()
    if space not in SPACES:
        raise AsapError(f"space={cfg.space!r} must be 'w' or 'w+'")
    lr = _number(cfg, "lr", float)
    if not lr > 0:
        raise AsapError(f"lr must be > 0, got {cfg.lr}")
    mse = _number(cfg, "mse", float, 0)
    noise_reg = _number(cfg, "noise_regularize", float, 0)
    latent_noise = _number(cfg, "latent_noise", float, 0)
    noise_ramp = _number(cfg, "noise_ramp", float)
    if not noise_ramp > 0:
        raise AsapError(f"noise_ramp must be > 0, got {cfg.noise_ramp}")
    samples = _number(cfg, "w_avg_samples", int, 2)
    seed = _number(cfg, "seed", int, 0)
    inputs = list(cfg.inputs) + positional
    if not inputs:
        raise AsapError("no input images given (pass image files or folders as arguments)")
    paths = expand_inputs(inputs)
    out = Path(cfg.out)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise AsapError(f"{p} and {stems[p.stem]} would both be written as {out / (p.stem + '_projected.png')}; "
                            f"project them in separate runs or rename one")
        stems[p.stem] = p
    check_outputs([out / f"{p.stem}{suffix}" for p in paths for suffix in ("_projected.png", "_latent.pt")])
    device = resolve_device(cfg.device)
    official = OmegaConf.to_container(cfg.official, resolve=True) or {}
    G = check_stylegan(asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official), cfg.checkpoint)
    targets = [load_image(p, G.size) for p in paths]  # every input is read before any output is written
    if cfg.family == "anycost":
        return _run_anycost(cfg, G, paths, targets, device, note)
    try:
        lpips = build_lpips(net="vgg", pretrained=bool(cfg.lpips_pretrained))
    except AsapError as e:
        raise AsapError(str(e).replace("metrics.lpips_pretrained=false", "lpips_pretrained=false")) from e
    if not cfg.lpips_pretrained:
        note("note: lpips_pretrained=false: LPIPS uses a random VGG backbone, so the perceptual loss is not "
             "meaningful (for tests and offline demos)")
    G = G.to(device)
    for path, target in zip(paths, targets):
        result = project(G, target.to(device), steps=steps, space=space, lpips=lpips, lr=lr, mse=mse,
                         noise_regularize=noise_reg, latent_noise=latent_noise, noise_ramp=noise_ramp,
                         w_avg_samples=samples, seed=seed, progress=path.name if cfg.progress else False, note=note)
        with atomic_files() as files:  # the image and its latent appear together, or neither
            save_png(hwc(to_uint8(result["image"][0])), out / f"{path.stem}_projected.png", files)
            save_torch(latent_record(result, cfg.checkpoint, path, steps), out / f"{path.stem}_latent.pt", files)
        print(f"{path.name}: lpips {result['lpips']:.4f} mse {result['mse']:.5f} (start: lpips "
              f"{result['initial_lpips']:.4f} mse {result['initial_mse']:.5f}) -> {out / (path.stem + '_projected.png')}")
    print(f"projected {len(paths)} image(s) into {space} with {steps} step(s) on {device}; outputs in {out}")
    return 0


def _run_anycost(cfg, G, paths, targets, device, note):
    """family=anycost: Anycost's w+ projection (optionally consistency-aware); same output files."""
    from asap.errors import AsapError
    from asap.inference.edit import OPTIMIZERS, check_anycost, project_wplus
    from asap.inference.generate import hwc, to_uint8
    from asap.inference.project import latent_record
    from asap.metrics.lpips import build_lpips
    from asap.utils.io import save_png, save_torch

    a = cfg.anycost
    steps = _number(a, "steps", int, 1)
    mse = _number(a, "mse", float, 0)
    if str(a.optimizer) not in OPTIMIZERS:
        raise AsapError(f"anycost.optimizer={a.optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
    lr = None if a.lr is None else _number(a, "lr", float)
    G = check_anycost(G, cfg.checkpoint).to(device)
    try:
        lpips = build_lpips(net="vgg", pretrained=bool(cfg.lpips_pretrained))
    except AsapError as e:
        raise AsapError(str(e).replace("metrics.lpips_pretrained=false", "lpips_pretrained=false")) from e
    if not cfg.lpips_pretrained:
        note("note: lpips_pretrained=false: LPIPS uses a random VGG backbone (tests and offline demos)")
    out = Path(cfg.out)
    for path, target in zip(paths, targets):
        result = project_wplus(G, target.to(device), lpips, steps=steps, optimizer=str(a.optimizer), lr=lr, mse=mse,
                               consistency=bool(a.consistency), seed=int(cfg.seed),
                               w_avg_samples=int(cfg.w_avg_samples), progress=path.name if cfg.progress else False)
        save_png(hwc(to_uint8(result["image"][0])), out / f"{path.stem}_projected.png")
        rec = latent_record(result, cfg.checkpoint, path, steps)
        rec.update(optimizer=result["optimizer"], consistency=result["consistency"])
        save_torch(rec, out / f"{path.stem}_latent.pt")
        print(f"{path.name}: lpips {result['lpips']:.4f} mse {result['mse']:.5f} (start: lpips "
              f"{result['initial_lpips']:.4f} mse {result['initial_mse']:.5f}) -> {out / (path.stem + '_projected.png')}")
    print(f"projected {len(paths)} image(s) into w+ (anycost, {a.optimizer}"
          + (", consistency-aware" if a.consistency else "") + f") with {steps} step(s) on {device}; outputs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("project", run, HELP))
