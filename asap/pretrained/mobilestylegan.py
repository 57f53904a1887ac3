"""Reader of bes-dev/MobileStyleGAN.pytorch files: the distiller's Lightning checkpoint and the converter's two files.

- Lightning checkpoint (``epoch``, ``global_step``, ``callbacks`` keyed by the pickled class
  ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``, ``optimizer_states``, ``state_dict``): parts
  ``student`` (default; :class:`MobileStyleGANGenerator` from ``mapping_net.*`` + ``student.*``, ``w_avg`` = the
  file's ``style_mean``), ``teacher`` (:class:`StyleGAN2Generator` from ``mapping_net.*`` + ``synthesis_net.*``) and
  ``discriminator`` (:class:`StyleGAN2Discriminator` from ``loss.gan_loss.m.*``). The perceptual and FID backbones,
  Haar filter buffers, ``device_info`` and optimiser states are ignored. The ModelCheckpoint class is replaced by
  an inert allow-listed stand-in, so pytorch-lightning is not needed and nothing else is unpickled.
- ``convert_rosinality_ckpt.py`` output ``{"params", "ckpt"}``: ``*_mapping_network.ckpt`` -> :class:`MappingNetwork`,
  ``*_synthesis_network.ckpt`` -> StyleGAN2 :class:`SynthesisNetwork`.

The architecture is read from tensor shapes. MobileStyleGAN's teacher layout stores no noise maps: our teacher's
``noise_mode='const'`` maps are :func:`seeded_noise` (seed 0), the same maps the student's 'const' mode uses, so
teacher and student const samples are comparable. (The official teacher hands every block W+ slots 0..2; ours
uses the StyleGAN2 W+ layout, which agrees for the repeated-w styles the distiller feeds.)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.models.mobilestylegan import MobileStyleGANGenerator, noise_shapes, seeded_noise
from asap.models.stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator, SynthesisNetwork
from asap.pretrained.common import load_state_strict
from asap.pretrained.stylegan2 import discriminator_key_map, infer_discriminator

FAMILY = "mobilestylegan"
LIGHTNING_CALLBACK = "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"


class LightningCallbackKey:
    """Inert stand-in for the pickled ModelCheckpoint class (only ever used as a dict key in these files)."""


SAFE_GLOBALS = [(LightningCallbackKey, LIGHTNING_CALLBACK)]
PARTS = ("student", "teacher", "discriminator")
# student buffers that are fixed Haar filters or bookkeeping, not weights
_IGNORED_STUDENT = re.compile(r"(layers\.\d+\.up\.)?idwt\.[gh][01]_(col|row)|device_info")
_TEACHER_UPSAMPLE = "upsample.kernel"  # the teacher's shared skip upsampler (same fixed FIR as every to_rgb's)


def _is_lightning(obj: Any) -> bool:
    return isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping) \
        and "student.input.input" in obj["state_dict"]


def _converter_kind(obj: Any) -> str | None:
    if not (isinstance(obj, Mapping) and isinstance(obj.get("params"), Mapping) and isinstance(obj.get("ckpt"), Mapping)):
        return None
    sd = obj["ckpt"]
    if "input.input" in sd and "to_rgb1.bias" in sd:
        return "synthesis"
    if "layers.1.weight" in sd:
        return "mapping"
    return None


def detect(obj: Any) -> bool:
    """The distiller's Lightning checkpoint or one of the converter's files."""
    return _is_lightning(obj) or _converter_kind(obj) is not None


# -- helpers ------------------------------------------------------------------------------------------------------
def _sub(sd: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _shape(sd: Mapping[str, Any], key: str, source: str, what: str) -> tuple[int, ...]:
    v = sd.get(key)
    if not isinstance(v, torch.Tensor):
        raise AsapError(f"{source}: missing key '{key}' - not a complete MobileStyleGAN {what}")
    return tuple(v.shape)


def _count(sd: Mapping[str, Any], pattern: str) -> int:
    return len([k for k in sd if re.fullmatch(pattern, k)])


def _build(cls: type, kwargs: dict[str, Any], source: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise AsapError(f"{source}: {e}") from e


def _mapping_kwargs(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """MappingNetwork sizes from ``layers.{1..n}`` (index 0 is the parameter-free pixel norm)."""
    n = _count(sd, r"layers\.\d+\.weight")
    w_dim, z_dim = _shape(sd, "layers.1.weight", source, "mapping network")
    if n < 1 or any(f"layers.{i}.weight" not in sd for i in range(1, n + 1)):
        raise AsapError(f"{source}: mapping layers are not numbered 1..{n} - not a MobileStyleGAN mapping network")
    return {"z_dim": int(z_dim), "w_dim": int(w_dim), "n_mlp": n}


def _mapping_key_map(prefix_ours: str, prefix_theirs: str, n: int) -> dict[str, str]:
    return {f"{prefix_ours}layers.{i}.{p}": f"{prefix_theirs}layers.{i + 1}.{p}"
            for i in range(n) for p in ("weight", "bias")}


def _synthesis_kwargs(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """StyleGAN2 synthesis sizes from MobileStyleGAN's teacher layout (``input``, ``conv1``, ``layers.k.*``)."""
    n = _count(sd, r"layers\.\d+\.to_rgb\.bias")
    channels = [_shape(sd, "input.input", source, "teacher")[1]]
    channels += [_shape(sd, f"layers.{k}.conv1.conv.weight", source, "teacher")[1] for k in range(n)]
    w_dim = _shape(sd, "conv1.conv.modulation.weight", source, "teacher")[1]
    return {"size": 2 ** (n + 2), "w_dim": int(w_dim), "channels": [int(c) for c in channels]}


def _synthesis_key_map(net: SynthesisNetwork, ours: str, theirs: str) -> dict[str, str]:
    """Our SynthesisNetwork key -> the teacher-layout key (noise buffers excluded: the layout has none)."""
    prefixes = {"const": "input", "conv1": "conv1", "torgb1": "to_rgb1"}
    for k in range(len(net.blocks)):
        prefixes.update({f"blocks.{k}.conv0": f"layers.{k}.conv1", f"blocks.{k}.conv1": f"layers.{k}.conv2",
                         f"blocks.{k}.torgb": f"layers.{k}.to_rgb"})
    out = {}
    for key in net.state_dict():
        if key.endswith("noise.noise_const"):
            continue
        head = key
        while head not in prefixes:
            head = head.rsplit(".", 1)[0]
        out[ours + key] = theirs + prefixes[head] + key[len(head):]
    return out


def _load_synthesis(model: nn.Module, net: SynthesisNetwork, sd: Mapping[str, Any], ours: str, theirs: str,
                    extra: Mapping[str, torch.Tensor], extra_map: Mapping[str, str], source: str) -> None:
    """Fill ``model`` (whose synthesis is ``net`` under ``ours``) from teacher-layout keys under ``theirs``, the
    seeded const noise and ``extra`` entries; every other key under ``theirs`` must be known."""
    key_map = {**_synthesis_key_map(net, ours, theirs), **extra_map}
    state = {k: v for k, v in sd.items() if k.startswith(theirs) and k != theirs + _TEACHER_UPSAMPLE}
    up = sd.get(theirs + _TEACHER_UPSAMPLE)
    if up is not None and (not isinstance(up, torch.Tensor) or tuple(up.shape) != (4, 4)
                           or not torch.allclose(up.float(), net.blocks[0].torgb.upsample.kernel)):
        raise AsapError(f"{source}: '{theirs}{_TEACHER_UPSAMPLE}' is not the [1,3,3,1] upsampling filter")
    names = {id(m): n for n, m in net.named_modules()}
    for i, (conv, noise) in enumerate(zip(net.styled_convs(), seeded_noise(noise_shapes(net.size)))):
        key = f"{ours}{names[id(conv)]}.noise.noise_const"
        key_map[key] = f"<seeded const noise {i}>"
        state[key_map[key]] = noise
    state.update(extra)
    load_state_strict(model, state, source, key_map)


def _w_avg(sd: Mapping[str, Any], w_dim: int, source: str) -> torch.Tensor:
    """The file's ``style_mean`` [1, wsize, D] (one row repeated) as a [D] truncation centre."""
    mean = sd.get("style_mean")
    if not isinstance(mean, torch.Tensor) or mean.ndim != 3 or mean.shape[-1] != w_dim:
        raise AsapError(f"{source}: 'style_mean' is missing or not [1, wsize, {w_dim}]")
    row = mean[0, 0]
    if not torch.equal(mean, row.expand_as(mean)):
        raise AsapError(f"{source}: 'style_mean' rows differ; expected one mean style repeated over W+")
    return row.clone()


# -- the parts ------------------------------------------------------------------------------------------------
def load_student(sd: Mapping[str, Any], source: str) -> MobileStyleGANGenerator:
    student = {k: v for k, v in _sub(sd, "student.").items() if not _IGNORED_STUDENT.fullmatch(k)}
    mkw = _mapping_kwargs(_sub(sd, "mapping_net."), source)
    n = _count(student, r"layers\.\d+\.conv2\.conv\.weight_permute")
    channels = [_shape(student, "input.input", source, "student")[1]]
    channels += [_shape(student, f"layers.{i}.conv2.conv.weight_permute", source, "student")[0] for i in range(n)]
    kwargs = {"size": 2 ** (n + 3), "style_dim": mkw["w_dim"], "z_dim": mkw["z_dim"], "n_mlp": mkw["n_mlp"],
              "channels": [int(c) for c in channels], "lr_mlp": 0.01}
    model = _build(MobileStyleGANGenerator, kwargs, source)
    key_map = {f"synthesis.{k}": f"student.{k}" for k in model.synthesis.state_dict()}
    key_map.update(_mapping_key_map("mapping.", "mapping_net.", mkw["n_mlp"]))
    key_map["w_avg"] = "style_mean"
    state = {f"student.{k}": v for k, v in student.items()}
    state.update({k: v for k, v in sd.items() if k.startswith("mapping_net.")})
    state["style_mean"] = _w_avg(sd, mkw["w_dim"], source)
    load_state_strict(model, state, source, key_map)
    model.asap_config = {"_target_": "asap.models.mobilestylegan.MobileStyleGANGenerator", **kwargs}
    return model


def load_teacher(sd: Mapping[str, Any], source: str) -> StyleGAN2Generator:
    mkw = _mapping_kwargs(_sub(sd, "mapping_net."), source)
    skw = _synthesis_kwargs(_sub(sd, "synthesis_net."), source)
    if skw["w_dim"] != mkw["w_dim"]:
        raise AsapError(f"{source}: teacher style size {skw['w_dim']} != mapping output {mkw['w_dim']}")
    kwargs = {"size": skw["size"], "style_dim": mkw["w_dim"], "z_dim": mkw["z_dim"], "n_mlp": mkw["n_mlp"],
              "channels": skw["channels"], "lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1]}
    model = _build(StyleGAN2Generator, kwargs, source)
    extra_map = _mapping_key_map("mapping.", "mapping_net.", mkw["n_mlp"])
    extra = {k: v for k, v in sd.items() if k.startswith("mapping_net.")}
    if "style_mean" in sd:
        extra_map["w_avg"], extra["style_mean"] = "style_mean", _w_avg(sd, mkw["w_dim"], source)
    else:
        extra_map["w_avg"], extra["<no style_mean>"] = "<no style_mean>", torch.full((mkw["w_dim"],), float("nan"))
    _load_synthesis(model, model.synthesis, sd, "synthesis.", "synthesis_net.", extra, extra_map, source)
    model.asap_config = {"_target_": "asap.models.stylegan2.StyleGAN2Generator", **kwargs}
    return model


def load_discriminator(sd: Mapping[str, Any], source: str) -> StyleGAN2Discriminator:
    dsd = _sub(sd, "loss.gan_loss.m.")
    if not dsd:
        raise AsapError(f"{source}: this file has no discriminator (no 'loss.gan_loss.m.*' keys)")
    try:
        kwargs = infer_discriminator(dsd, source)
    except AsapError as e:
        raise AsapError(str(e).replace("rosinality StyleGAN2 state", "MobileStyleGAN discriminator")) from e
    model = _build(StyleGAN2Discriminator, kwargs, source)
    load_state_strict(model, dsd, source, discriminator_key_map(model))
    model.asap_config = {"_target_": "asap.models.stylegan2.StyleGAN2Discriminator", **kwargs}
    return model


def load_converter_file(obj: Mapping[str, Any], source: str) -> nn.Module:
    sd = obj["ckpt"]
    if _converter_kind(obj) == "mapping":
        kw = _mapping_kwargs(sd, source)
        model = _build(MappingNetwork, {**kw, "lr_mul": 0.01}, source)
        load_state_strict(model, sd, source, _mapping_key_map("", "", kw["n_mlp"]))
        model.asap_config = {"_target_": "asap.models.stylegan2.MappingNetwork", **kw, "lr_mul": 0.01}
        return model
    kw = _synthesis_kwargs(sd, source)
    model = _build(SynthesisNetwork, kw, source)
    _load_synthesis(model, model, sd, "", "", {}, {}, source)
    model.asap_config = {"_target_": "asap.models.stylegan2.SynthesisNetwork", **kw}
    return model


def load_official(obj: Mapping[str, Any], path: str | os.PathLike, part: str | None = None,
                  **options: Any) -> nn.Module:
    """``part`` = student (default) | teacher | discriminator for the Lightning file; converter files hold one network."""
    source = str(path)
    if options:
        raise AsapError(f"{source}: MobileStyleGAN files record their architecture; unexpected options "
                        f"{', '.join(sorted(options))}")
    if not _is_lightning(obj):
        if part is not None:
            raise AsapError(f"{source}: a converter file holds one network; part= applies to the distiller checkpoint")
        return load_converter_file(obj, source)
    part = part or "student"
    sd = obj["state_dict"]
    if part == "student":
        return load_student(sd, source)
    if part in ("teacher", "generator"):
        return load_teacher(sd, source)
    if part in ("discriminator", "d"):
        return load_discriminator(sd, source)
    raise AsapError(f"part must be one of {', '.join(PARTS)}, got {part!r}")


def mapping_file_for(synthesis_path: str | os.PathLike) -> Path | None:
    """The converter's mapping file next to a ``*synthesis_network*`` file (same name with 'mapping'), if present."""
    p = Path(synthesis_path)
    if "synthesis" not in p.name:
        return None
    candidate = p.with_name(p.name.replace("synthesis", "mapping"))
    return candidate if candidate.is_file() else None


def to_official(student: MobileStyleGANGenerator, teacher: StyleGAN2Generator | None = None,
                discriminator: StyleGAN2Discriminator | None = None) -> dict[str, Any]:
    """Our modules -> a dict in the distiller's checkpoint layout (``state_dict`` with ``mapping_net.``,
    ``student.``, ``style_mean`` [, ``synthesis_net.``, ``loss.gan_loss.m.``]; no Lightning bookkeeping)."""
    sd: dict[str, torch.Tensor] = {}
    for ours, theirs in _mapping_key_map("", "mapping_net.", len(student.mapping.layers)).items():
        sd[theirs] = student.mapping.state_dict()[ours].detach().clone()
    sd.update({f"student.{k}": v.detach().clone() for k, v in student.synthesis.state_dict().items()})
    w_avg = student.w_avg if student.has_w_avg() else student.sample_w(4096).mean(0)
    sd["style_mean"] = w_avg.detach().reshape(1, 1, -1).repeat(1, student.num_ws, 1).clone()
    if teacher is not None:
        t_sd = teacher.synthesis.state_dict()
        for ours, theirs in _synthesis_key_map(teacher.synthesis, "", "synthesis_net.").items():
            sd[theirs] = t_sd[ours].detach().clone()
        sd["synthesis_net." + _TEACHER_UPSAMPLE] = teacher.synthesis.blocks[0].torgb.upsample.kernel.clone()
    if discriminator is not None:
        d_sd = discriminator.state_dict()
        for ours, theirs in discriminator_key_map(discriminator).items():
            sd[f"loss.gan_loss.m.{theirs}"] = d_sd[ours].detach().clone()
    return {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.0.2", "optimizer_states": [],
            "lr_schedulers": [], "state_dict": sd}
