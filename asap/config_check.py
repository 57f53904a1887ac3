"""Check a composed tool config once, before anything runs or is written: every wrong value is one line naming the
key, the value and what is allowed.

Two kinds of checks:

- **types against the defaults**: a value given on the command line must have the type of the value it replaces
  (an integer key stays an integer, a float accepts integers, a bool stays a bool); this holds for every key, also
  those of families added later, because the defaults come from composing the same config without the values;
- **value rules**: per tool, dotted key patterns (``fnmatch``) with a test and the allowed range, e.g.
  ``trainer.max_steps`` >= 1 or ``model.optim.lr*`` > 0; they also catch bad values written in YAML files.

``tools/train.py`` additionally checks that the model trains on the kind of data the data config gives.
"""
from __future__ import annotations

import fnmatch
import numbers
from pathlib import Path
from typing import Any, Callable, Sequence

from asap.errors import AsapError

Check = Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def int_at_least(low: int) -> tuple[Check, str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def number_above(low: float) -> tuple[Check, str]:
    return (lambda v: _is_number(v) and v > low), f"a number > {low:g}"


def number_at_least(low: float) -> tuple[Check, str]:
    return (lambda v: _is_number(v) and v >= low), f"a number >= {low:g}"


def number_in(low: float, high: float) -> tuple[Check, str]:
    return (lambda v: _is_number(v) and low <= v < high), f"a number in [{low:g}, {high:g})"


def optional(rule: tuple[Check, str]) -> tuple[Check, str]:
    check, text = rule
    return (lambda v: v is None or check(v)), f"null or {text}"


def one_of(*allowed: Any) -> tuple[Check, str]:
    return (lambda v: v in allowed), "one of " + ", ".join(str(a) for a in allowed)


def _hw(v: Any) -> bool:
    try:
        h, w = str(v).lower().split("x")
        return int(h) >= 1 and int(w) >= 1
    except ValueError:
        return False


HW = (_hw, "HxW with positive integers, e.g. 256x512")
HW_LIST = ((lambda v: (isinstance(v, (list, tuple)) and len(v) > 0 and all(_hw(x) for x in v)) or _hw(v)),
           "a non-empty list of HxW sizes, e.g. [256x512,512x1024]")
SIZE = ((lambda v: (_is_int(v) and v >= 1) or (isinstance(v, (list, tuple)) and len(v) in (1, 2)
                                                 and all(_is_int(x) and x >= 1 for x in v))),
        "a positive integer or [H, W] of positive integers")


def _duration(v: Any) -> bool:
    from asap.training.trainer import parse_duration
    try:
        parse_duration(v)
        return True
    except AsapError:
        return False


def _precision(v: Any) -> bool:
    from asap.training.precision import parse_precision
    try:
        parse_precision(v)
        return True
    except AsapError:
        return False


COMMON: list[tuple[str, tuple[Check, str]]] = [
    ("limits.*", int_at_least(1)),
    ("batch_size", int_at_least(1)),
    ("seed", int_at_least(0)),
]

RULES: dict[str, list[tuple[str, tuple[Check, str]]]] = {
    "train": [
        ("trainer.max_steps", int_at_least(1)),
        ("trainer.batch_size", int_at_least(1)),
        ("trainer.accumulate", int_at_least(1)),
        ("trainer.keep_last", (int_at_least(0)[0], "an integer >= 0 (0 keeps every checkpoint)")),
        ("trainer.num_workers", int_at_least(0)),
        ("trainer.seed", int_at_least(0)),
        ("trainer.log_every", int_at_least(1)),
        ("trainer.ckpt_every", int_at_least(1)),
        ("trainer.image_every", (int_at_least(0)[0], "an integer >= 0 (0 = off)")),
        ("trainer.val_every", (int_at_least(0)[0], "an integer >= 0 (0 = off)")),
        ("trainer.val_batches", optional(int_at_least(1))),
        ("trainer.grad_clip", optional(number_above(0))),
        ("trainer.max_time", (_duration, "null, seconds or [DD:]HH:MM:SS")),
        ("trainer.precision", (_precision, "32, bf16 or 16-mixed")),
        ("model.optim.lr*", number_above(0)),
        ("model.optim.*_lr", number_above(0)),
        ("model.optim.beta*", number_in(0, 1)),
        ("model.optim.eps", number_above(0)),
        ("model.optim.d_steps_per_g", int_at_least(1)),
        ("model.loss.lambda_*", number_at_least(0)),
        ("model.loss.lpips_winograd_min_channels", optional(int_at_least(1))),
        ("model.loss.lpips_winograd_tile", one_of(2, 4)),
        ("data.batch_size", int_at_least(1)),
        ("data.num_workers", int_at_least(0)),
        ("data.label_nc", int_at_least(1)),
        ("data.crop_size", int_at_least(1)),
        ("data.load_size", int_at_least(1)),
        ("data.image_size", SIZE),
    ],
    "generate": [("truncation_psi", (_is_number, "a number")), ("noise_mode", one_of("const", "random", "none"))],
    "project": [
        ("steps", int_at_least(1)), ("lr", number_above(0)), ("mse", number_at_least(0)),
        ("noise_regularize", number_at_least(0)), ("latent_noise", number_at_least(0)),
        ("noise_ramp", number_above(0)), ("w_avg_samples", int_at_least(2)), ("space", one_of("w", "w+")),
    ],
    "export": [
        ("format", one_of("onnx", "torchscript")), ("batch", int_at_least(1)), ("opset", int_at_least(7)),
        ("tolerance", number_above(0)), ("size", optional(HW)),
    ],
    "benchmark": [
        ("res", HW_LIST), ("batch", int_at_least(1)), ("threads", optional(int_at_least(1))),
        ("warmup", int_at_least(0)), ("runs", int_at_least(1)), ("dtype", one_of("float32", "bfloat16", "float16")),
    ],
    "evaluate": [("max_images", optional(int_at_least(1))), ("split", one_of("val", "train", "test"))],
    "translate": [("resize", one_of("model", "native"))],
    "demo": [
        ("port", ((lambda v: _is_int(v) and 0 <= v <= 65535), "an integer in 0..65535")),
        ("labels", one_of("auto", "ids", "cityscapes", "ade20k", "facades")), ("size", SIZE),
        ("edit_layers", int_at_least(1)), ("edit_scale", number_above(0)), ("max_upload_bytes", int_at_least(1)),
        ("preview_ratio", ((lambda v: _is_number(v) and 0 < v <= 1), "a number in (0, 1]")),
        ("log_level", one_of("critical", "error", "warning", "info", "debug")), ("measure", int_at_least(0)),
    ],
}


# ----------------------------------------------------------------------------------------------------------------
def is_group_override(override: str, conf_dir: Path) -> bool:
    """``model=stylegan2``, ``+preset=x``, ``hydra/launcher=...``: choices of config groups, not values."""
    key = override.split("=", 1)[0].lstrip("+~")
    return "/" in key or ("." not in key and (conf_dir / key).is_dir()) or key.startswith("hydra")


def _kind(v: Any) -> str | None:
    if isinstance(v, bool):
        return "bool"
    if _is_int(v):
        return "int"
    if _is_number(v):
        return "float"
    return None


def _type_ok(default: Any, value: Any) -> bool:
    want = _kind(default)
    if want is None or value is None:
        return True
    if want == "bool":
        return isinstance(value, bool)
    if want == "int":
        return _is_int(value)
    return _is_number(value)


EXPECTED = {"bool": "true or false", "int": "an integer", "float": "a number"}


def check_types(cfg: Any, defaults: Any, overrides: Sequence[str], conf_dir: Path,
                config_name: str | None = None) -> None:
    """Each ``key=value`` override must keep the type of the default it replaces (see the module doc); keys with a
    value rule of ``config_name`` are left to the rule (some take several types, e.g. precision 32 or bf16)."""
    from omegaconf import OmegaConf

    ruled = [pattern for pattern, _ in RULES.get(config_name or "", []) + COMMON]
    for o in overrides:
        if "=" not in o or is_group_override(o, conf_dir) or o.startswith("~"):
            continue
        key, raw = o.split("=", 1)
        key = key.lstrip("+")
        if any(fnmatch.fnmatchcase(key, p) for p in ruled):
            continue
        default = OmegaConf.select(defaults, key, default=None, throw_on_missing=False)
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if not _type_ok(default, value):
            raise AsapError(f"{key}={raw}: expected {EXPECTED[_kind(default)]} (default {default!r})")


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        out = []
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict):
                out += _leaves(v, key)
            else:
                out.append((key, v))
        return out
    return []


def check_rules(cfg: Any, config_name: str) -> None:
    """Every leaf that matches a rule of ``config_name`` (or a common rule) must pass it."""
    from omegaconf import OmegaConf

    import asap.config  # noqa: F401  (the resolvers the configs use)

    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    rules = RULES.get(config_name, []) + COMMON
    for key, value in _leaves(container):
        if key.startswith("hydra.") or value == "???":
            continue
        for pattern, (check, allowed) in rules:
            if fnmatch.fnmatchcase(key, pattern) and not check(value):
                raise AsapError(f"{key}={value!r}: must be {allowed}")


def check_model_data(cfg: Any) -> None:
    """tools/train.py: the model's task must train on the data config's kind (labels, images or none)."""
    import importlib

    from omegaconf import OmegaConf

    target = OmegaConf.select(cfg, "model.task._target_")
    kind = OmegaConf.select(cfg, "data.kind", default=None)
    if not isinstance(target, str) or kind is None:
        return
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return  # build_task reports it
    kinds = getattr(cls, "data_kinds", None)
    if kinds is not None and kind not in kinds:
        want = " or ".join(kinds)
        raise AsapError(f"model={cfg.model.family} trains on {want} data, but data={cfg.data.name} gives {kind} "
                        f"(choose a data config of kind {want})")


def validate(config_name: str, cfg: Any, overrides: Sequence[str], conf_dir: Path) -> None:
    """All checks for one tool's composed ``cfg`` (``overrides`` as given on the command line)."""
    from omegaconf import OmegaConf

    from asap.cli import compose
    from asap.utils import limits

    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    values = [o for o in overrides if "=" in o and not is_group_override(o, conf_dir)]
    if values:
        defaults = compose(config_name, [o for o in overrides if o not in values])
        check_types(cfg, defaults, values, conf_dir, config_name)
    check_rules(cfg, config_name)
    if config_name == "train":
        check_model_data(cfg)
    if cfg.get("limits") is not None:
        limits.apply(OmegaConf.to_container(cfg.limits, resolve=True))
