"""Our own checkpoint format: a plain dict of state_dicts + the constructor config of each network.

Layout (all values are tensors, numbers, strings, lists or dicts, so ``weights_only=True`` reads it)::

    {"format": "asap", "version": 1, "family": "asapnet", "step": int,
     "networks": {"generator": {"config": {"_target_": "asap.models....", **kwargs}, "state_dict": {...}},
                  "discriminator": {...}, ...},
     "config": {... resolved Hydra config ...}, "training": {... optimizer/scheduler/RNG state ...}}
"""
from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

import torch.nn as nn

from asap.errors import AsapError
from asap.pretrained.common import load_state_strict, seal

FORMAT = "asap"
VERSION = 1
# which= aliases used by the StyleGAN-style API
_WHICH = {"g_ema": "g_ema", "g": "generator", "generator": "generator", "d": "discriminator",
          "discriminator": "discriminator"}


def is_native(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def build(config: Mapping[str, Any]) -> nn.Module:
    """Instantiate a network from ``{"_target_": "asap.models.X.Cls", **kwargs}`` (only asap.models targets)."""
    config = dict(config)
    target = config.pop("_target_", None)
    if not isinstance(target, str) or not target.startswith("asap.models."):
        raise AsapError(f"network config has no asap.models target: {target!r}")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise AsapError(f"cannot build {target}: {e}") from e
    return cls(**config)


def network_entry(model: nn.Module, config: Mapping[str, Any]) -> dict:
    """The checkpoint entry of one network: its constructor config and its weights."""
    return {"config": dict(config), "state_dict": model.state_dict()}


def load_model(obj: Mapping[str, Any], path: str | os.PathLike, family: str | None = None,
               part: str | None = None, which: str | None = None, **options: Any) -> nn.Module:
    """Build and fill one network of a native checkpoint (default: the EMA generator if any, else the generator)."""
    if family is not None and obj.get("family") != family:
        raise AsapError(f"{path}: this is a {obj.get('family')} checkpoint, not {family}")
    nets = obj.get("networks", {})
    if part in (None, "generator"):
        name = which or ("g_ema" if "g_ema" in nets else "generator")
    elif which is not None:
        raise AsapError(f"which={which!r} only applies to part='generator'")
    else:
        name = part
    name = _WHICH.get(name, name)
    if name not in nets:
        raise AsapError(f"{path}: no network '{name}' in this checkpoint (has: {', '.join(sorted(nets))})")
    if options:
        raise AsapError(f"{path}: asap checkpoints record their architecture; unexpected options "
                        f"{', '.join(sorted(options))}")
    entry = nets[name]
    model = build(entry["config"])
    load_state_strict(model, entry["state_dict"], str(path))
    model.asap_config = dict(entry["config"])  # keep what built it, so tools can re-save or export
    return model


def make_checkpoint(family: str, networks: Mapping[str, tuple[nn.Module, Mapping[str, Any]]], **extra: Any) -> dict:
    """Assemble a native checkpoint dict from ``{name: (module, constructor config)}`` plus extra fields."""
    return seal({"format": FORMAT, "version": VERSION, "family": family,
                 "networks": {name: network_entry(m, cfg) for name, (m, cfg) in networks.items()}, **extra})
