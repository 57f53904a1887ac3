"""Reader of rosinality/stylegan2-pytorch checkpoints into StyleGAN2Generator / StyleGAN2Discriminator.

Two layouts: training checkpoints of ``train.py`` (``g``, ``d``, ``g_ema``, optimiser states, an
``argparse.Namespace`` of options) and converted files of ``convert_weight.py`` (``g_ema`` + ``latent_avg``, maybe
``g``/``d``; often the pre-1.6 non-zip torch format). The architecture (size, style_dim, n_mlp, widths per
resolution) is read from the tensor shapes, so non-standard channel tables load too; ``lr_mlp`` (not recorded in
the files) defaults to the official 0.01.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from asap.nn.stylegan import ConvLayer
from asap.pretrained.common import load_state_strict

FAMILY = "stylegan2"
# train.py stores its options as an argparse.Namespace: the one class allow-listed for weights_only loading.
SAFE_GLOBALS = [argparse.Namespace]
GENERATOR_KEYS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.bias")
GENERATOR_OPTIONS = ("size", "style_dim", "n_mlp", "channel_multiplier", "channels", "lr_mlp", "blur_kernel", "z_dim")
DISCRIMINATOR_OPTIONS = ("size", "channel_multiplier", "channels", "blur_kernel", "stddev_group", "stddev_feat")


def _is_generator_state(sd: Any) -> bool:
    return isinstance(sd, Mapping) and all(k in sd for k in GENERATOR_KEYS)


def detect(obj: Any) -> bool:
    """A rosinality training or converted checkpoint (a dict holding a ``g_ema`` or ``g`` generator state)."""
    return isinstance(obj, Mapping) and any(_is_generator_state(obj.get(k)) for k in ("g_ema", "g"))


# -- key maps: our state_dict key -> rosinality key -------------------------------------------------------------
def generator_key_map(model: StyleGAN2Generator) -> dict[str, str]:
    syn = model.synthesis
    # our module prefix -> rosinality's; the leaf names below a prefix are the same on both sides
    prefixes = {f"mapping.layers.{i}": f"style.{i + 1}" for i in range(len(model.mapping.layers))}
    prefixes.update({"synthesis.const": "input", "synthesis.torgb1": "to_rgb1", "synthesis.conv1": "conv1"})
    for k in range(len(syn.blocks)):
        prefixes.update({f"synthesis.blocks.{k}.conv0": f"convs.{2 * k}",
                         f"synthesis.blocks.{k}.conv1": f"convs.{2 * k + 1}",
                         f"synthesis.blocks.{k}.torgb": f"to_rgbs.{k}"})
    # the stored noise maps live in one module there, numbered in the official noise order
    names = {id(m): n for n, m in syn.named_modules()}
    mapping: dict[str, str] = {"w_avg": "latent_avg"}
    for i, conv in enumerate(syn.styled_convs()):
        mapping[f"synthesis.{names[id(conv)]}.noise.noise_const"] = f"noises.noise_{i}"
    for ours in model.state_dict():
        if ours in mapping:
            continue
        prefix = ours
        while prefix not in prefixes:
            if "." not in prefix:
                raise AssertionError(f"unmapped generator key {ours}")
            prefix = prefix.rsplit(".", 1)[0]
        mapping[ours] = prefixes[prefix] + ours[len(prefix):]
    return mapping


def _conv_layer_key(layer: ConvLayer, rest: str, theirs_prefix: str) -> str:
    part, _, param = rest.partition(".")
    return f"{theirs_prefix}.{layer.parts().index(part)}.{param}"


def discriminator_key_map(model: StyleGAN2Discriminator) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for ours in model.state_dict():
        head, _, rest = ours.partition(".")
        if head == "from_rgb":
            mapping[ours] = _conv_layer_key(model.from_rgb, rest, "convs.0")
        elif head == "blocks":
            j, sub, rest2 = rest.split(".", 2)
            layer = getattr(model.blocks[int(j)], sub)
            mapping[ours] = _conv_layer_key(layer, rest2, f"convs.{int(j) + 1}.{sub}")
        elif head == "final_conv":
            mapping[ours] = _conv_layer_key(model.final_conv, rest, "final_conv")
        elif head == "fc":
            mapping[ours] = f"final_linear.0.{rest}"
        elif head == "out":
            mapping[ours] = f"final_linear.1.{rest}"
        else:
            raise AssertionError(f"unmapped discriminator key {ours}")
    return mapping


# -- architecture from shapes -----------------------------------------------------------------------------------
def _shape(sd: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    v = sd.get(key)
    if not isinstance(v, torch.Tensor):
        raise AsapError(f"{source}: missing key '{key}' - not a complete rosinality StyleGAN2 state")
    return tuple(v.shape)


def infer_generator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Constructor kwargs of StyleGAN2Generator read from a rosinality generator state_dict."""
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    out_dim, in_dim = _shape(sd, "style.1.weight", source)
    n_blocks = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    channels = [_shape(sd, "input.input", source)[1]]
    channels += [_shape(sd, f"convs.{2 * k}.conv.weight", source)[1] for k in range(n_blocks)]
    return {"size": 2 ** (n_blocks + 2), "style_dim": out_dim, "z_dim": in_dim, "n_mlp": n_mlp,
            "channels": channels, "lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1]}


def infer_discriminator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    widths_desc = [_shape(sd, "convs.0.0.weight", source)[0]]
    widths_desc += [_shape(sd, f"convs.{i}.conv2.1.weight", source)[0] for i in range(1, n_blocks + 1)]
    final_in = _shape(sd, "final_conv.0.weight", source)[1]
    return {"size": 2 ** (n_blocks + 2), "channels": widths_desc[::-1], "blur_kernel": [1, 3, 3, 1],
            "stddev_group": 4, "stddev_feat": final_in - widths_desc[-1]}


def _merge(inferred: dict[str, Any], options: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AsapError(f"unknown StyleGAN2 {what} option(s) {', '.join(unknown)} (known: {', '.join(allowed)})")
    kwargs = dict(inferred)
    if "channel_multiplier" in options and "channels" not in options:
        kwargs.pop("channels", None)
    kwargs.update(options)
    return kwargs


def load_official(obj: Mapping[str, Any], path: str | os.PathLike, which: str | None = None,
                  part: str | None = None, **options: Any) -> nn.Module:
    """``part='generator'`` (default; ``which='g_ema'`` (default) or ``'g'``) or ``part='discriminator'``."""
    source = str(path)
    part = part or "generator"
    if part in ("discriminator", "d"):
        if which not in (None, "d"):
            raise AsapError("which= only applies to part='generator'")
        if not isinstance(obj.get("d"), Mapping):
            raise AsapError(f"{source}: this file has no discriminator ('d'); it holds {', '.join(map(str, obj))}")
        sd = obj["d"]
        kwargs = _merge(infer_discriminator(sd, source), options, DISCRIMINATOR_OPTIONS, "discriminator")
        try:
            model = StyleGAN2Discriminator(**kwargs)
        except (ValueError, TypeError) as e:
            raise AsapError(f"{source}: {e}") from e
        load_state_strict(model, sd, source, discriminator_key_map(model))
        target = "asap.models.stylegan2.StyleGAN2Discriminator"
    elif part in ("generator", "g"):
        which = which or ("g_ema" if "g_ema" in obj else "g")
        if which not in ("g_ema", "g"):
            raise AsapError(f"which must be 'g_ema' or 'g', got {which!r}")
        if not _is_generator_state(obj.get(which)):
            raise AsapError(f"{source}: this file has no generator '{which}'; it holds {', '.join(map(str, obj))}")
        sd = dict(obj[which])
        kwargs = _merge(infer_generator(sd, source), options, GENERATOR_OPTIONS, "generator")
        try:
            model = StyleGAN2Generator(**kwargs)
        except (ValueError, TypeError) as e:
            raise AsapError(f"{source}: {e}") from e
        latent_avg = obj.get("latent_avg") if which == "g_ema" else None
        if isinstance(latent_avg, torch.Tensor):
            latent_avg = latent_avg.reshape(-1)
            if latent_avg.numel() != model.style_dim:
                raise AsapError(f"{source}: latent_avg has {latent_avg.numel()} values, style_dim is {model.style_dim}")
        else:
            latent_avg = torch.full((model.style_dim,), float("nan"))
        sd["latent_avg"] = latent_avg
        load_state_strict(model, sd, source, generator_key_map(model))
        target = "asap.models.stylegan2.StyleGAN2Generator"
    else:
        raise AsapError(f"part must be 'generator' or 'discriminator', got {part!r}")
    model.asap_config = {"_target_": target, **kwargs}
    return model


def to_rosinality(generator: StyleGAN2Generator | None = None, discriminator: StyleGAN2Discriminator | None = None,
                  g: StyleGAN2Generator | None = None) -> dict[str, Any]:
    """Our modules -> a rosinality-layout dict (``g_ema`` [+ ``latent_avg``], ``g``, ``d``), the exchange format
    that rosinality's tools and MobileStyleGAN's converter read."""
    out: dict[str, Any] = {}
    for name, model in (("g_ema", generator), ("g", g)):
        if model is None:
            continue
        key_map = generator_key_map(model)
        sd = {key_map[k]: v.detach().clone() for k, v in model.state_dict().items() if k != "w_avg"}
        out[name] = sd
        if name == "g_ema" and model.has_w_avg():
            out["latent_avg"] = model.w_avg.detach().clone()
    if discriminator is not None:
        key_map = discriminator_key_map(discriminator)
        out["d"] = {key_map[k]: v.detach().clone() for k, v in discriminator.state_dict().items()}
    return out
