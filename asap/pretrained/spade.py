"""Reader of official SPADE generator checkpoints (NVlabs/SPADE ``*_net_G.pth``) into SPADEGenerator.

The official files are bare state_dicts whose keys our generator shares (``fc.``, ``head_0.``, ``G_middle_0.``,
..., ``conv_img.``), spectral-norm ``weight_orig/_u/_v`` and batch-norm running statistics included. The
architecture comes from the official options, given by their official names (the keys of the fixture's
``meta.json["options"]``), with the official defaults for the rest and optional dataset presets
(``preset="cityscapes"``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch

from asap.data.preprocess import SemanticSpec
from asap.errors import AsapError
from asap.models.spade import UPSAMPLINGS, SPADEGenerator, latent_grid_size
from asap.nn.spade import parse_spade_norm
from asap.pretrained.common import load_state_strict

FAMILY = "spade"

# The official option parser's defaults (base options + SPADEGenerator.modify_commandline_options), before any
# dataset's defaults. ``semantic_nc`` is derived officially; given here, it is checked against the others.
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "label_nc": 182, "contain_dontcare_label": False, "no_instance": False, "crop_size": 512,
    "aspect_ratio": 1.0, "ngf": 64, "num_upsampling_layers": "normal", "norm_G": "spectralspadesyncbatch3x3",
    "use_vae": False, "z_dim": 256, "output_nc": 3, "semantic_nc": None,
}

# Dataset defaults set by the official dataset classes (dataset_mode=<name>), applied with preset=<name>.
PRESETS: dict[str, dict[str, Any]] = {
    "cityscapes": {"label_nc": 35, "crop_size": 512, "aspect_ratio": 2.0, "num_upsampling_layers": "more",
                   "contain_dontcare_label": False, "no_instance": False},
    "ade20k": {"label_nc": 150, "crop_size": 256, "aspect_ratio": 1.0, "contain_dontcare_label": True,
               "no_instance": True},
    "coco": {"label_nc": 182, "crop_size": 256, "aspect_ratio": 1.0, "contain_dontcare_label": True,
             "no_instance": False},
    "facades": {"label_nc": 13, "crop_size": 256, "aspect_ratio": 1.0, "contain_dontcare_label": False,
                "no_instance": True},
}

_PREFIXES = ("fc.", "head_0.", "G_middle_0.", "G_middle_1.", "up_0.", "up_1.", "up_2.", "up_3.", "up_4.",
             "conv_img.")


def detect(obj: Any) -> bool:
    """A plain state_dict whose keys are the official SPADE generator's."""
    return (isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)
            and "conv_img.weight" in obj and any(k.startswith("head_0.") for k in obj)
            and any(k.startswith("fc.") for k in obj) and all(k.startswith(_PREFIXES) for k in obj))


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.lower() in ("true", "1", "yes")
    raise AsapError(f"SPADE option {name}={value!r} must be true or false")


def _as_number(name: str, value: Any, kind: type) -> Any:
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise AsapError(f"SPADE option {name}={value!r} must be {'an integer' if kind is int else 'a number'}") from None
    if kind is int and isinstance(value, float) and value != out:
        raise AsapError(f"SPADE option {name}={value!r} must be an integer")
    return out


def resolve_options(preset: str | None = None, **options: Any) -> dict[str, Any]:
    """Official defaults <- preset <- explicit options, type-checked; unknown names are an error."""
    unknown = sorted(set(options) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise AsapError(f"unknown SPADE option(s) {', '.join(unknown)} "
                        f"(official names: {', '.join(sorted(OFFICIAL_DEFAULTS))}, plus preset)")
    o = dict(OFFICIAL_DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise AsapError(f"unknown SPADE preset '{preset}' (known: {', '.join(sorted(PRESETS))})")
        o.update(PRESETS[preset])
    o.update(options)
    for name in ("label_nc", "crop_size", "ngf", "z_dim", "output_nc"):
        o[name] = _as_number(name, o[name], int)
    o["aspect_ratio"] = _as_number("aspect_ratio", o["aspect_ratio"], float)
    for name in ("contain_dontcare_label", "no_instance", "use_vae"):
        o[name] = _as_bool(name, o[name])
    for name in ("label_nc", "crop_size", "ngf", "z_dim", "output_nc"):
        if o[name] < 1:
            raise AsapError(f"SPADE option {name}={o[name]} must be positive")
    if o["aspect_ratio"] <= 0:
        raise AsapError(f"SPADE option aspect_ratio={o['aspect_ratio']} must be positive")
    if o["num_upsampling_layers"] not in UPSAMPLINGS:
        raise AsapError(f"SPADE option num_upsampling_layers={o['num_upsampling_layers']!r} must be one of "
                        f"{', '.join(UPSAMPLINGS)}")
    try:
        parse_spade_norm(str(o["norm_G"]))
        latent_grid_size(o["crop_size"], o["aspect_ratio"], o["num_upsampling_layers"])
    except ValueError as e:
        raise AsapError(f"SPADE options: {e}") from e
    derived = semantic_spec_of(o).num_channels
    if o["semantic_nc"] is not None and _as_number("semantic_nc", o["semantic_nc"], int) != derived:
        raise AsapError(f"SPADE option semantic_nc={o['semantic_nc']} disagrees with label_nc={o['label_nc']}, "
                        f"contain_dontcare_label={o['contain_dontcare_label']}, no_instance={o['no_instance']} "
                        f"(which give {derived})")
    o["semantic_nc"] = derived
    return o


def semantic_spec_of(o: Mapping[str, Any]) -> SemanticSpec:
    """The generator input described by resolved official options (SPADE has only the instance-edge channel)."""
    return SemanticSpec(int(o["label_nc"]), bool(o["contain_dontcare_label"]), instance_edge=not o["no_instance"],
                        instance_dist=False)


def semantic_spec(preset: str | None = None, **options: Any) -> SemanticSpec:
    """The SemanticSpec (preprocessing of label + instance maps) for official options."""
    return semantic_spec_of(resolve_options(preset, **options))


def official_options_to_kwargs(preset: str | None = None, **options: Any) -> dict[str, Any]:
    """Map official option names to SPADEGenerator keyword arguments.

    ``output_nc`` does not reach the generator: the official SPADEGenerator always ends in 3 channels.
    """
    o = resolve_options(preset, **options)
    return {
        "label_nc": o["label_nc"], "contain_dontcare_label": o["contain_dontcare_label"],
        "instance_edge": not o["no_instance"], "instance_dist": False, "ngf": o["ngf"],
        "num_upsampling_layers": str(o["num_upsampling_layers"]), "crop_size": o["crop_size"],
        "aspect_ratio": o["aspect_ratio"], "norm_G": str(o["norm_G"]), "use_vae": o["use_vae"], "z_dim": o["z_dim"],
        "output_nc": 3,
    }


official_to_kwargs = official_options_to_kwargs  # the name the ASAPNet reader uses


def load_official(obj: Mapping[str, torch.Tensor], path: str | os.PathLike, preset: str | None = None,
                  **options: Any) -> SPADEGenerator:
    """Build the generator from official options and load the official state_dict into it (strictly)."""
    kwargs = official_options_to_kwargs(preset, **options)
    try:
        model = SPADEGenerator(**kwargs, init_type=None)
    except ValueError as e:
        raise AsapError(f"{path}: {e}") from e
    load_state_strict(model, obj, str(path))
    model.asap_config = {"_target_": "asap.models.spade.SPADEGenerator", **kwargs}
    return model
