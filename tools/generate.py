#!/usr/bin/env python
"""Generate images from seeds with a StyleGAN-type generator (our checkpoint or an official rosinality file)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/generate.py checkpoint=PATH [seeds=[0,1,2] | seeds=0-7] [truncation_psi=0.7] [key=value ...]

Writes seed0000.png, seed0001.png, ... (one per seed, uint8 RGB) and grid.png into out=DIR, and prints images/s.
z for seed s is torch.randn(1, z_dim) from torch.Generator().manual_seed(s) on the CPU, so an image depends only
on its seed (not on batch_size or the device).

Keys (conf/generate.yaml):
  checkpoint=PATH     our checkpoint (from tools/train.py; the EMA generator g_ema by default) or an official
                      rosinality stylegan2-pytorch .pt (training checkpoint or convert_weight.py output), or an
                      official MobileStyleGAN distiller .ckpt (its student; +official.part=teacher for the teacher)
  family=NAME         official format: stylegan2 | mobilestylegan (default: detected from the file's keys)
  +official.K=V       load options, e.g. +official.which=g for the non-EMA generator
  seeds=SPEC          a list [0,1,2], one number, or a range string 0-7 (both ends included); '0-3,10' (quoted)
                      mixes both (default [0..7])
  truncation_psi=X    w -> w_avg + X * (w - w_avg) (default 1: none); w_avg comes from the file or, when the file
                      does not carry it, is computed from 4096 seeded samples (a note is printed)
  noise_mode=MODE     const (default: the stored noise maps; MobileStyleGAN: fixed seeded maps) | random (noise
                      maps drawn per seed) | none
  batch_size=N        images per forward pass (default 8); device=auto|cpu|cuda|cuda:N (auto uses CUDA if present)
  grid=BOOL           also write grid.png, all images in an about-square grid (default true)
  out=DIR             output folder (default outputs/generate); files are written to a temp name, then renamed

FastGAN (our checkpoints, official all_N.pth / N.pth): a seed gives z and then the noise maps; mode=eval (default:
BatchNorm running statistics, stored spectral-norm vectors; an image depends only on its seed) or mode=train (batch
statistics and one power iteration per call, as the official eval.py; images depend on the batch they share).

Any error (missing or corrupt checkpoint, a checkpoint that is not a StyleGAN-type generator, a bad seeds string,
truncation_psi not a number) prints one line and exits with code 2 before any file is written.
"""


def run(cfg, positional):
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.generate import (check_options, check_stylegan, generate, output_names, parse_seeds,
                                         write_images)
    from asap.utils.io import check_outputs
    from asap.utils.device import resolve_device

    if positional:
        raise AsapError(f"unexpected argument {positional[0]!r} (use checkpoint=PATH; a missing file named this way "
                        f"is taken as an argument)")
    if OmegaConf.is_missing(cfg, "checkpoint") or cfg.checkpoint is None:
        raise AsapError("checkpoint=PATH is required (our .pt checkpoint or an official rosinality stylegan2 .pt)")
    seeds = parse_seeds(OmegaConf.to_container(cfg.seeds, resolve=True) if OmegaConf.is_config(cfg.seeds)
                        else cfg.seeds)
    psi, batch_size = check_options(cfg.truncation_psi, cfg.noise_mode, cfg.batch_size)
    check_outputs(output_names(seeds, cfg.out, bool(cfg.grid)))  # before any work: out= must be writable
    device = resolve_device(cfg.device)
    official = OmegaConf.to_container(cfg.official, resolve=True) or {}
    G = asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official)
    from asap.models.fastgan import FastGANGenerator
    if isinstance(G, FastGANGenerator):  # z and noise maps per seed; eval (default) or train-mode sampling
        from asap.inference.fastgan import generate_fastgan
        if psi != 1:
            raise AsapError("truncation_psi does not apply to FastGAN (it has no mapping network)")
        images, ips = generate_fastgan(G, seeds, str(cfg.get("mode", "eval")), device, batch_size)
    else:
        G = check_stylegan(G, cfg.checkpoint)
        images, ips = generate(G, seeds, psi, cfg.noise_mode, device, batch_size,
                               note=lambda m: print(m, file=sys.stderr))
    written = write_images(images, seeds, cfg.out, grid=bool(cfg.grid))
    grid = " and grid.png" if cfg.grid else ""
    print(f"wrote {len(seeds)} image(s) ({G.size}x{G.size}){grid} to {cfg.out} on {device}: {ips:.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("generate", run, HELP))
