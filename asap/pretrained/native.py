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
from asap.utils import limits
from asap.pretrained.common import load_state_strict, seal

FORMAT = "asap"
VERSION = 1
# which= aliases used by the StyleGAN-style API
_WHICH = {"g_ema": "g_ema", "g": "generator", "generator": "generator", "d": "discriminator",
          "discriminator": "discriminator"}


def is_native(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def build(config: Mapping[str, Any], source: str | None = None) -> nn.Module:
    """Instantiate a network from ``{"_target_": "asap.models.X.Cls", **kwargs}`` (only asap.models targets).

    With ``source`` (a config read from a file, e.g. a checkpoint, which is user input): its keys are checked
    against the constructor, the network is first built on the ``meta`` device (no memory) to count its parameters
    against ``limits.max_parameters``, and any constructor error (a wrong type, an impossible width) is one line
    naming ``source``. Without it (a config composed from our YAML files) the constructor runs directly and its
    errors are left to the caller (tools/train.py names the model).
    """
    config = dict(config)
    target = config.pop("_target_", None)
    if not isinstance(target, str) or not target.startswith("asap.models."):
        raise AsapError(f"{source or 'network config'}: no asap.models target ({target!r})")
    module_name, _, cls_name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise AsapError(f"{source or 'network config'}: cannot build {target}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise AsapError(f"{source or 'network config'}: {target} is not a network class")
    if source is None:
        return cls(**config)
    _check_keys(cls, config, f"{source} ({cls_name})")
    import torch

    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the probe draws no random numbers of ours
            probe = cls(**config)
    except AsapError as e:
        raise AsapError(f"{source} ({cls_name}): {e}") from e
    except Exception as e:  # a crafted or damaged config: say which, never a traceback
        raise AsapError(f"{source} ({cls_name}): cannot be built from its recorded config: {_first(e)}") from e
    count = sum(t.numel() for t in probe.state_dict().values())
    if count > limits.get("max_parameters"):
        raise AsapError(f"{source} ({cls_name}): its recorded config asks for {count:,} parameters, over "
                        f"{limits.describe('max_parameters')}")
    try:
        return cls(**config)
    except AsapError:
        raise
    except Exception as e:
        raise AsapError(f"{source} ({cls_name}): cannot be built from its recorded config: {_first(e)}") from e


def _defaulted_keys(model: nn.Module, config: Mapping[str, Any]) -> list[str]:
    """Constructor arguments that the recorded config does not give (so their defaults were used)."""
    import inspect

    params = list(inspect.signature(type(model).__init__).parameters.items())[1:]
    return [n for n, p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in config]


def _first(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _check_keys(cls: type, config: Mapping[str, Any], source: str) -> None:
    """Every key must be a constructor argument and every required argument must be there."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    named = {n: p for n, p in list(params.items())[1:]
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(k for k in config if k not in named)
        if unknown:
            raise AsapError(f"{source}: unknown constructor key {unknown[0]!r} in the recorded config")
    missing = sorted(n for n, p in named.items() if p.default is p.empty and n not in config)
    if missing:
        raise AsapError(f"{source}: the recorded config lacks the required key {missing[0]!r}")


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
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping) \
            or not isinstance(entry.get("state_dict"), Mapping):
        raise AsapError(f"{path}: network '{name}' has no config/state_dict entry (damaged or foreign checkpoint)")
    model = build(entry["config"], f"{path}: network '{name}'")
    try:
        load_state_strict(model, entry["state_dict"], str(path))
    except AsapError as e:
        defaulted = _defaulted_keys(model, entry["config"])
        if defaulted:  # a key missing from the recorded config is the likely cause
            raise AsapError(f"{e} (the recorded config lacks {', '.join(defaulted[:3])}: defaults were used)") from e
        raise
    model.asap_config = dict(entry["config"])  # keep what built it, so tools can re-save or export
    return model


def make_checkpoint(family: str, networks: Mapping[str, tuple[nn.Module, Mapping[str, Any]]], **extra: Any) -> dict:
    """Assemble a native checkpoint dict from ``{name: (module, constructor config)}`` plus extra fields."""
    return seal({"format": FORMAT, "version": VERSION, "family": family,
                 "networks": {name: network_entry(m, cfg) for name, (m, cfg) in networks.items()}, **extra})
