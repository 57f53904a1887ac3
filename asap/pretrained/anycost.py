"""Reader/writer of the official Anycost GAN files (mit-han-lab/anycost-gan) into AnycostGenerator /
AnycostDiscriminator.

Two layouts: the trainer's ``ckpt.pt`` (``g``, ``d``, ``g_ema``, ``g_optim``, ``d_optim``, ``epoch``, ``fid``,
``best_fid``, ``mean_path_length``) and model-zoo generator files (``{"g_ema": ...}``). The generators use
rosinality's key layout, so a model-zoo file also reads as a StyleGAN2 file: ``family="anycost"`` picks this reader;
automatic detection picks it only for trainer files (multi-resolution ``d`` with ``blocks.*``, or ``fid`` keys).
The architecture comes from the tensor shapes (``channel_max`` is not stored: the widest layer is the cap).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.models.anycost import AnycostDiscriminator, AnycostGenerator
from asap.nn.stylegan import ConvLayer
from asap.pretrained import stylegan2 as sg2
from asap.pretrained.common import load_state_strict

FAMILY = "anycost"
GENERATOR_OPTIONS = ("lr_mlp", "blur_kernel")
DISCRIMINATOR_OPTIONS = ("blur_kernel", "stddev_group")
TRAINER_KEYS = ("fid", "best_fid")


def _is_multires_d(sd: Any) -> bool:
    return isinstance(sd, Mapping) and any(re.fullmatch(r"blocks\.\d+\.conv1\.0\.weight", str(k)) for k in sd) \
        and "convs.0.0.weight" in sd


def detect(obj: Any) -> bool:
    """An Anycost trainer checkpoint: a rosinality-layout generator plus a multi-resolution ``d`` or FID keys."""
    return sg2.detect(obj) and (_is_multires_d(obj.get("d")) or any(k in obj for k in TRAINER_KEYS))


def accepts(obj: Any) -> bool:
    """Readable when asked for by name: any file holding a rosinality-layout generator (model-zoo files)."""
    return sg2.detect(obj)


# -- key maps: ours -> official -----------------------------------------------------------------------------------
def _conv_layer_key(layer: ConvLayer, rest: str, prefix: str) -> str:
    part, _, param = rest.partition(".")
    return f"{prefix}.{layer.parts().index(part)}.{param}"


def discriminator_key_map(model: AnycostDiscriminator) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for ours in model.state_dict():
        head, _, rest = ours.partition(".")
        if head == "from_rgbs":
            i, rest2 = rest.split(".", 1)
            mapping[ours] = _conv_layer_key(model.from_rgbs[int(i)], rest2, f"convs.{i}")
        elif head == "blocks":
            j, sub, rest2 = rest.split(".", 2)
            mapping[ours] = _conv_layer_key(getattr(model.blocks[int(j)], sub), rest2, f"blocks.{j}.{sub}")
        elif head == "final_conv":
            mapping[ours] = _conv_layer_key(model.final_conv, rest, "final_conv")
        elif head == "fc":
            mapping[ours] = f"final_linear.0.{rest}"
        elif head == "out":
            mapping[ours] = f"final_linear.1.{rest}"
        else:
            raise AssertionError(f"unmapped discriminator key {ours}")
    return mapping


# -- architecture from shapes ------------------------------------------------------------------------------------
def infer_generator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """AnycostGenerator kwargs from an official generator state dict (explicit widths per resolution)."""
    kw = sg2.infer_generator(sd, source)
    return {"size": kw["size"], "style_dim": kw["style_dim"], "z_dim": kw["z_dim"], "n_mlp": kw["n_mlp"],
            "channels": kw["channels"], "lr_mlp": 0.01, "blur_kernel": [1, 3, 3, 1]}


def infer_discriminator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """AnycostDiscriminator kwargs from an official DiscriminatorMultiRes state dict."""
    if not _is_multires_d(sd):
        raise AsapError(f"{source}: 'd' is not an Anycost multi-resolution discriminator (no blocks.* / convs.0.0)")
    n_res = len([k for k in sd if re.fullmatch(r"convs\.\d+\.0\.weight", k)])
    n_blocks = len([k for k in sd if re.fullmatch(r"blocks\.\d+\.conv1\.0\.weight", k)])
    desc = [sg2._shape(sd, "convs.0.0.weight", source)[0]]
    desc += [sg2._shape(sd, f"blocks.{j}.conv2.1.weight", source)[0] for j in range(n_blocks)]
    maps = [k for k in sd if k.endswith("weight_mapping.weight")]
    final_in = sg2._shape(sd, "final_conv.0.weight", source)[1]
    kwargs: dict[str, Any] = {"size": 2 ** (n_blocks + 2), "channels": desc[::-1], "n_res": n_res,
                              "modulate": bool(maps), "blur_kernel": [1, 3, 3, 1], "stddev_group": 4,
                              "stddev_feat": final_in - desc[-1]}
    if maps:
        arch_len = sg2._shape(sd, maps[0], source)[1]
        if arch_len % 4:
            raise AsapError(f"{source}: g_arch length {arch_len} is not a multiple of 4")
        kwargs["num_ws"] = arch_len // 4
    return kwargs


def _merge(inferred: dict[str, Any], options: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise AsapError(f"unknown Anycost {what} option(s) {', '.join(unknown)} (known: {', '.join(allowed)}; the "
                        f"architecture is read from the file)")
    return {**inferred, **options}


def load_official(obj: Mapping[str, Any], path: str | os.PathLike, which: str | None = None,
                  part: str | None = None, **options: Any) -> nn.Module:
    """``part='generator'`` (default; ``which='g_ema'`` (default) or ``'g'``) or ``part='discriminator'``."""
    source = str(path)
    part = part or "generator"
    if part in ("discriminator", "d"):
        if which not in (None, "d"):
            raise AsapError("which= only applies to part='generator'")
        if not isinstance(obj.get("d"), Mapping):
            raise AsapError(f"{source}: this file has no discriminator ('d'); it holds {', '.join(map(str, obj))} "
                            f"(the published Anycost files carry only generators)")
        sd = obj["d"]
        kwargs = _merge(infer_discriminator(sd, source), options, DISCRIMINATOR_OPTIONS, "discriminator")
        try:
            model = AnycostDiscriminator(**kwargs)
        except (ValueError, TypeError) as e:
            raise AsapError(f"{source}: {e}") from e
        load_state_strict(model, sd, source, discriminator_key_map(model))
        target = "asap.models.anycost.AnycostDiscriminator"
    elif part in ("generator", "g"):
        which = which or ("g_ema" if "g_ema" in obj else "g")
        if which not in ("g_ema", "g"):
            raise AsapError(f"which must be 'g_ema' or 'g', got {which!r}")
        if not sg2._is_generator_state(obj.get(which)):
            raise AsapError(f"{source}: this file has no generator '{which}'; it holds {', '.join(map(str, obj))}")
        sd = dict(obj[which])
        kwargs = _merge(infer_generator(sd, source), options, GENERATOR_OPTIONS, "generator")
        try:
            model = AnycostGenerator(**kwargs)
        except (ValueError, TypeError) as e:
            raise AsapError(f"{source}: {e}") from e
        latent_avg = obj.get("latent_avg") if which == "g_ema" else None
        if isinstance(latent_avg, torch.Tensor) and latent_avg.numel() == model.style_dim:
            sd["latent_avg"] = latent_avg.reshape(-1)
        else:
            sd["latent_avg"] = torch.full((model.style_dim,), float("nan"))
        load_state_strict(model, sd, source, sg2.generator_key_map(model))
        target = "asap.models.anycost.AnycostGenerator"
    else:
        raise AsapError(f"part must be 'generator' or 'discriminator', got {part!r}")
    model.asap_config = {"_target_": target, **kwargs}
    return model


def to_official(generator: AnycostGenerator | None = None, discriminator: AnycostDiscriminator | None = None,
                g: AnycostGenerator | None = None) -> dict[str, Any]:
    """Our modules -> the official layout (``g_ema``, ``d``, ``g``; the tensors bit for bit), which the official
    ``Generator``/``DiscriminatorMultiRes`` load with ``load_state_dict``."""
    out: dict[str, Any] = {}
    for name, model in (("g_ema", generator), ("g", g)):
        if model is not None:
            key_map = sg2.generator_key_map(model)
            out[name] = {key_map[k]: v.detach().clone() for k, v in model.state_dict().items() if k != "w_avg"}
    if discriminator is not None:
        key_map = discriminator_key_map(discriminator)
        out["d"] = {key_map[k]: v.detach().clone() for k, v in discriminator.state_dict().items()}
    return out
