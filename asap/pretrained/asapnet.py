"""Reader of official ASAPNet generator checkpoints (tamarott/ASAPNet ``*_net_G.pth``) into ASAPNetGenerator.

The official files are bare state_dicts; the architecture comes from the official options, given here by their
official names (the keys of the fixtures' ``meta.json["options"]``), with the official defaults for the rest and
optional dataset presets (``preset="cityscapes"``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from asap.errors import AsapError
from asap.models.asapnet import ASAPNetGenerator
from asap.pretrained.common import load_state_strict
from asap.nn.layers import parse_norm

FAMILY = "asapnet"

# The official option parser's defaults, with ASAPNetsGenerator.modify_commandline_options applied.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "label_nc": 182, "contain_dontcare_label": False, "no_instance_edge": False, "no_instance_dist": True,
    "lr_instance": True, "crop_size": 512, "aspect_ratio": 1.0, "learned_ds_factor": 16, "lr_width": 64,
    "lr_max_width": 1024, "lr_depth": 7, "hr_width": 64, "hr_depth": 5, "reflection_pad": False,
    "replicate_pad": False, "hr_coor": "cosine", "norm_G": "instanceaffine", "no_one_hot": False, "output_nc": 3,
}

# Dataset defaults of the official code (set by its dataset classes), applied with preset=<name>.
PRESETS: dict[str, dict[str, Any]] = {
    "cityscapes": {"label_nc": 35, "crop_size": 512, "aspect_ratio": 2.0, "contain_dontcare_label": False,
                   "lr_instance": True, "no_instance_dist": True, "no_instance_edge": False},
    "facades": {"label_nc": 13, "crop_size": 256, "aspect_ratio": 1.0, "contain_dontcare_label": False,
                "no_instance_edge": True, "no_instance_dist": True, "lr_instance": False},
    "facades512": {"label_nc": 13, "crop_size": 512, "aspect_ratio": 1.0, "contain_dontcare_label": False,
                   "no_instance_edge": True, "no_instance_dist": True, "lr_instance": False, "reflection_pad": True},
    "ade20k": {"label_nc": 150, "crop_size": 256, "aspect_ratio": 1.0, "contain_dontcare_label": True,
               "no_instance_edge": True, "no_instance_dist": True, "lr_instance": False},
}


def detect(obj: Any) -> bool:
    """A plain state_dict whose keys are the official ASAPNet generator's."""
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj) \
        and any(k.startswith("lowres_stream.model.") for k in obj) \
        and all(k.startswith("lowres_stream.") for k in obj)


def resolve_options(preset: str | None = None, **options: Any) -> dict[str, Any]:
    """Official defaults <- preset <- explicit options; unknown names are an error."""
    unknown = sorted(set(options) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise AsapError(f"unknown ASAPNet option(s) {', '.join(unknown)} "
                        f"(official names: {', '.join(sorted(OFFICIAL_DEFAULTS))})")
    opts = dict(OFFICIAL_DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise AsapError(f"unknown ASAPNet preset '{preset}' (known: {', '.join(sorted(PRESETS))})")
        opts.update(PRESETS[preset])
    opts.update(options)
    return opts


def official_to_kwargs(preset: str | None = None, **options: Any) -> dict[str, Any]:
    """Map official option names to ASAPNetGenerator keyword arguments."""
    o = resolve_options(preset, **options)
    crop, aspect = int(o["crop_size"]), float(o["aspect_ratio"])
    s = int(crop // (16 * aspect))
    if not o["no_instance_edge"] and not o["no_instance_dist"]:
        raise AsapError("no_instance_edge=false with no_instance_dist=false gives the official generator two "
                        "instance channels but it expects one; set one of them to true")
    hr_coor = o["hr_coor"]
    if hr_coor in ("None", "none", "null"):
        hr_coor = None
    try:
        parse_norm(str(o["norm_G"]))
    except ValueError as e:
        raise AsapError(str(e)) from e
    if s < 1 or s & (s - 1):
        raise AsapError(f"crop_size {crop} / (16 * aspect_ratio {aspect}) gives downsampling {s}, "
                        f"which must be a power of two")
    if int(o["learned_ds_factor"]) > s:
        raise AsapError(f"learned_ds_factor {o['learned_ds_factor']} exceeds the total downsampling {s}")
    return {
        "label_nc": int(o["label_nc"]), "contain_dontcare_label": bool(o["contain_dontcare_label"]),
        "instance_edge": not o["no_instance_edge"], "instance_dist": not o["no_instance_dist"],
        "lr_instance": bool(o["lr_instance"]), "downsampling": s, "learned_ds_factor": int(o["learned_ds_factor"]),
        "lr_width": int(o["lr_width"]), "lr_max_width": int(o["lr_max_width"]), "lr_depth": int(o["lr_depth"]),
        "hr_width": int(o["hr_width"]), "hr_depth": int(o["hr_depth"]), "positional_encoding": hr_coor,
        "norm": str(o["norm_G"]),
        # the official generator passes only reflection_pad to its low-res stream: replicate_pad has no effect
        "pad_mode": "reflect" if o["reflection_pad"] else "zeros",
        "output_nc": int(o["output_nc"]), "output_activation": "tanh",
        "image_size": [int(round(crop / aspect)), crop],
    }


def official_key_map(model: ASAPNetGenerator) -> dict[str, str]:
    """Our state_dict key -> the official key (``lowres_stream.model.<i>...``)."""
    padded = model.lr_stream[0].pad is not None
    n_plain = len(model.lr_stream) - 1  # ConvNormAct layers
    n_head = 1 + len([m for m in model.lr_stream[1:-1] if m.conv.stride[0] == 2])  # first conv + strided convs
    mapping: dict[str, str] = {}
    for ours in model.state_dict():
        parts = ours.split(".")
        i = int(parts[1])
        rest = parts[2:]
        if i == n_plain:  # final 1x1 conv
            mapping[ours] = f"lowres_stream.model.{(3 if padded else 2) * n_head + (i - n_head)}.{'.'.join(rest)}"
            continue
        layer = model.lr_stream[i]
        has_norm = layer.norm is not None
        sub, leaf = rest[0], ".".join(rest[1:])
        inner = (("0." if sub == "conv" else "1.") if has_norm else "") + leaf
        if i < n_head:
            idx = 3 * i + 1 if padded else 2 * i
            mapping[ours] = f"lowres_stream.model.{idx}.{inner}"
        else:
            idx = (3 if padded else 2) * n_head + (i - n_head)
            mapping[ours] = f"lowres_stream.model.{idx}.conv_block.{1 if padded else 0}.{inner}"
    return mapping


def load_official(obj: Mapping[str, torch.Tensor], path: str | os.PathLike, preset: str | None = None,
                  **options: Any) -> ASAPNetGenerator:
    """Build the generator from official options and load the official state_dict into it."""
    kwargs = official_to_kwargs(preset, **options)
    try:
        model = ASAPNetGenerator(**kwargs)
    except ValueError as e:
        raise AsapError(f"{path}: {e}") from e
    load_state_strict(model, obj, str(path), official_key_map(model))
    model.asap_config = {"_target_": "asap.models.asapnet.ASAPNetGenerator", **kwargs}
    return model
