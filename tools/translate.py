#!/usr/bin/env python
"""Translate label maps into images with an ASAPNet/SPADE generator (ours or an official *_net_G.pth)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import tool_main  # noqa: E402

HELP = """
usage: python tools/translate.py LABEL [LABEL | FOLDER ...] checkpoint=PATH [key=value ...]

Writes one PNG per label map into out=DIR, named by the input's file stem, and prints images/s.

Inputs: single-channel id maps (8 or 16 bit) or colour-coded label maps in the dataset palette (Cityscapes,
ADE20K, Facades). Folders expand to their label maps by the datasets' naming rules: a folder with Cityscapes
*_labelIds.png files gives those (never *_instanceIds.png or photos); any other folder gives its image files.
A checkpoint whose label_nc does not fit the labels (e.g. a 13-class facades model on Cityscapes labelIds) is
refused with one line before anything is written.

Keys (conf/translate.yaml):
  checkpoint=PATH     our checkpoint (from tools/train.py) or an official ASAPNet/SPADE *_net_G.pth
  family=NAME         official format: asapnet | spade (default: detected from the file's keys)
  +official.K=V       official architecture options for official files, by their official names, e.g.
                      +official.label_nc=35 +official.crop_size=512 +official.aspect_ratio=2 +official.lr_depth=7;
                      +official.preset=cityscapes|facades|facades512|ade20k applies the official dataset defaults
  instance=PATH       instance map (one input) or a folder of instance maps matched by file stem; Cityscapes
                      *_labelIds.png inputs pick up their *_instanceIds.png sibling. Without one, models that use
                      instance edges take the label map as the instance map (a note is printed).
  out=DIR             output folder (default outputs/translate); files are written to a temp name, then renamed
  labels=MODE         auto | ids | cityscapes | ade20k | facades: how the files encode ids (ade20k: file id 0 is
                      'unlabeled' and maps to the dontcare class; colour maps use the named palette; auto picks by
                      label_nc: 35 -> cityscapes, 150 -> ade20k)
  resize=MODE         model (default): label maps of another size are resized with nearest neighbour to the model's
                      training size and the output has that size; native: keep the input size, padding the label map
                      (edge replicate) up to a multiple of the downsampling factor and cropping the output back
  batch_size=N        images per forward pass (default 4); device=auto|cpu|cuda|cuda:N (auto uses CUDA when present)

Any error (missing or corrupt file, label id >= label_nc, wrong channels, wrong checkpoint or options) prints one
line and exits with code 2; every input is checked before any output is written.
"""


def run(cfg, positional):
    from omegaconf import OmegaConf

    import asap.pretrained
    from asap.errors import AsapError
    from asap.inference.translate import expand_inputs, output_names, prepare, translate
    from asap.utils.io import check_outputs
    from asap.utils.device import resolve_device

    paths = expand_inputs(list(cfg.inputs) + positional)
    check_outputs(output_names(paths, cfg.out))  # before any work: out= must be a folder we can write into
    official = OmegaConf.to_container(cfg.official, resolve=True) or {}
    if cfg.checkpoint is None:
        raise AsapError("checkpoint=PATH is required")
    model = asap.pretrained.load(cfg.checkpoint, family=cfg.family, **official)
    device = resolve_device(cfg.device)
    items = prepare(paths, model, instance=cfg.instance, labels=cfg.labels, resize=cfg.resize,
                    warn=lambda m: print(m, file=sys.stderr))
    written, ips = translate(model, items, cfg.out, device, batch_size=int(cfg.batch_size))
    print(f"wrote {len(written)} image(s) to {cfg.out} on {device}: {ips:.2f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(tool_main("translate", run, HELP))
