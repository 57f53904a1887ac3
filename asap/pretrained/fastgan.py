"""Reader and writer of the official FastGAN-pytorch checkpoints (odegeasslbc/FastGAN-pytorch ``train.py``).

Two formats, both dicts of plain tensors (``weights_only=True`` reads them):

* ``all_N.pth`` = {``g``: the raw generator's state dict, ``d``, ``g_ema``: a **list** of tensors in
  ``G.parameters()`` order, ``opt_g``, ``opt_d``}: the EMA generator is those parameters plus the buffers of ``g``
  (BatchNorm statistics, spectral-norm vectors), exactly what the official code does before it samples or saves.
  The published pre-trained files are of this kind.
* ``N.pth`` = {``g``, ``d``} where ``g`` already holds the EMA parameters (what the official ``eval.py`` reads).

Keys may carry the ``module.`` prefix of ``nn.DataParallel`` (the official trainer always writes it). Spectral
norm is the old layout ``<conv>.weight_orig/_u/_v``; the layout of ``torch.nn.utils.parametrizations``
(``<conv>.parametrizations.weight.original``, ``...weight.0._u/_v``) is converted to it. ``nz``, ``im_size``,
``nc`` and every width (also the decoders') are read from the tensor shapes.
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn

from asap.errors import AsapError
from asap.models.fastgan import FastGANDiscriminator, FastGANGenerator
from asap.pretrained.common import load_state_strict

FAMILY = "fastgan"
GENERATOR_KEYS = ("init.init.0.weight_orig", "to_big.weight_orig", "to_128.weight_orig")
DISCRIMINATOR_KEYS = ("down_4.main.0.weight_orig", "rf_big.3.weight_orig", "decoder_big.main.5.weight_orig")
_NEW_SN = re.compile(r"^(.*)\.parametrizations\.weight\.(original|0\._u|0\._v)$")
_NEW_SN_SUFFIX = {"original": "weight_orig", "0._u": "weight_u", "0._v": "weight_v"}


def normalize_keys(sd: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Strip ``module.`` prefixes and convert the parametrization spectral-norm layout to the old one."""
    out: OrderedDict[str, Any] = OrderedDict()
    for key, value in sd.items():
        k = str(key)
        while k.startswith("module."):
            k = k[len("module."):]
        m = _NEW_SN.match(k)
        if m:
            k = f"{m.group(1)}.{_NEW_SN_SUFFIX[m.group(2)]}"
        out[k] = value
    return out


def _has(sd: Any, keys: Sequence[str]) -> bool:
    return isinstance(sd, Mapping) and all(k in sd for k in keys)


def detect(obj: Any) -> bool:
    """An official FastGAN file: a dict whose ``g`` (or ``d``) is a FastGAN generator (discriminator) state."""
    if not isinstance(obj, Mapping):
        return False
    g, d = obj.get("g"), obj.get("d")
    return ((isinstance(g, Mapping) and _has(normalize_keys(g), GENERATOR_KEYS))
            or (isinstance(d, Mapping) and _has(normalize_keys(d), DISCRIMINATOR_KEYS)))


# -- architecture from shapes -----------------------------------------------------------------------------------
def _shape(sd: Mapping[str, Any], key: str, source: str, what: str) -> tuple[int, ...]:
    v = sd.get(key)
    if not isinstance(v, torch.Tensor):
        raise AsapError(f"{source}: missing key '{key}' - not a complete FastGAN {what} state")
    return tuple(v.shape)


def infer_generator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """FastGANGenerator kwargs (nz, nc, im_size, channels) read from a state dict without prefixes."""
    im_size = 1024 if "feat_1024.1.weight_orig" in sd else 512 if "feat_512.1.weight_orig" in sd else 256
    nz, init_out = _shape(sd, "init.init.0.weight_orig", source, "generator")[:2]
    channels = [init_out // 2]
    r = 8
    while r <= im_size:
        channels.append(_shape(sd, f"feat_{r}.1.weight_orig", source, "generator")[0] // 2)
        r *= 2
    nc = _shape(sd, "to_big.weight_orig", source, "generator")[0]
    return {"nz": nz, "nc": nc, "im_size": im_size, "channels": channels}


def infer_discriminator(sd: Mapping[str, Any], source: str) -> dict[str, Any]:
    """FastGANDiscriminator kwargs (nc, im_size, channels, decoder_channels) read from a state dict."""
    first = _shape(sd, "down_from_big.0.weight_orig", source, "discriminator")
    nc = first[1]
    if "down_from_big.2.weight_orig" in sd:
        im_size = 1024
    else:
        im_size = 256 if first[2] == 3 else 512
    w = lambda key: _shape(sd, key, source, "discriminator")[0]  # noqa: E731
    table = {512: w("down_from_big.2.weight_orig") if im_size == 1024 else first[0],
             256: w("down_4.main.0.weight_orig"), 128: w("down_8.main.0.weight_orig"),
             64: w("down_16.main.0.weight_orig"), 32: w("down_32.main.0.weight_orig"),
             16: w("down_64.main.0.weight_orig"), 8: w("rf_big.0.weight_orig")}
    if im_size == 1024:
        table[1024] = first[0]
    resolutions = [8, 16, 32, 64, 128, 256, 512] + ([1024] if im_size == 1024 else [])
    decoder = [w(f"decoder_big.main.{i}.1.weight_orig") // 2 for i in range(1, 5)]
    return {"nc": nc, "im_size": im_size, "channels": [table[r] for r in resolutions], "decoder_channels": decoder}


def _build(cls: type, kwargs: Mapping[str, Any], source: str) -> nn.Module:
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, RuntimeError) as e:
        raise AsapError(f"{source}: cannot build a {cls.__name__} from this file ({str(e).splitlines()[0]})") from e


def _set_parameters(model: nn.Module, tensors: Sequence[Any], source: str) -> None:
    """Overwrite ``model``'s parameters, in order, with the official ``g_ema`` list."""
    params = list(model.parameters())
    if not isinstance(tensors, (list, tuple)) or len(tensors) != len(params):
        n = len(tensors) if isinstance(tensors, (list, tuple)) else type(tensors).__name__
        raise AsapError(f"{source}: g_ema holds {n} tensors, the generator has {len(params)} parameters")
    with torch.no_grad():
        for i, (p, t) in enumerate(zip(params, tensors)):
            if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(p.shape):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise AsapError(f"{source}: g_ema[{i}] has shape {got}, the generator expects {tuple(p.shape)}")
            p.copy_(t)


def load_official(obj: Mapping[str, Any], path: str | os.PathLike, which: str | None = None,
                  part: str | None = None, **options: Any) -> nn.Module:
    """``part='generator'`` (default; ``which='g_ema'`` (default) or ``'g'``, the raw generator of ``all_N.pth``)
    or ``part='discriminator'``."""
    source = str(path)
    if options:
        raise AsapError(f"{source}: FastGAN files record their architecture; unexpected option(s) "
                        f"{', '.join(sorted(options))} (known: part, which)")
    part = part or "generator"
    if part in ("discriminator", "d"):
        if which not in (None, "d"):
            raise AsapError("which= only applies to part='generator'")
        if not isinstance(obj.get("d"), Mapping):
            raise AsapError(f"{source}: this file has no discriminator ('d'); it holds {', '.join(map(str, obj))}")
        sd = normalize_keys(obj["d"])
        kwargs = infer_discriminator(sd, source)
        model = _build(FastGANDiscriminator, kwargs, source)
        load_state_strict(model, sd, source)
        target = "asap.models.fastgan.FastGANDiscriminator"
    elif part in ("generator", "g"):
        has_list = "g_ema" in obj
        which = which or "g_ema"
        if which not in ("g_ema", "g"):
            raise AsapError(f"which must be 'g_ema' or 'g', got {which!r}")
        if which == "g" and not has_list:
            raise AsapError(f"{source}: an N.pth file holds only the EMA generator (its 'g' has the EMA weights); "
                            f"which='g' needs an all_N.pth file")
        if not isinstance(obj.get("g"), Mapping):
            raise AsapError(f"{source}: this file has no generator ('g'); it holds {', '.join(map(str, obj))}")
        sd = normalize_keys(obj["g"])
        kwargs = infer_generator(sd, source)
        model = _build(FastGANGenerator, kwargs, source)
        load_state_strict(model, sd, source)
        if which == "g_ema" and has_list:
            _set_parameters(model, obj["g_ema"], source)
        target = "asap.models.fastgan.FastGANGenerator"
    else:
        raise AsapError(f"part must be 'generator' or 'discriminator', got {part!r}")
    model.asap_config = {"_target_": target, **kwargs}
    return model


def load_training_state(path: str | os.PathLike) -> dict[str, Any]:
    """Everything an ``all_N.pth`` file holds as our modules: ``generator`` (raw), ``g_ema``, ``discriminator``
    (train mode as built; load them with ``load_official`` for eval mode) and the optimiser states as stored."""
    from asap.pretrained import read_file, safe_globals

    obj = read_file(path, safe_globals())
    if not detect(obj) or "g_ema" not in obj:
        raise AsapError(f"{path}: not an official FastGAN all_N.pth file (needs g, d, g_ema)")
    out = {"generator": load_official(obj, path, which="g"), "g_ema": load_official(obj, path),
           "discriminator": load_official(obj, path, part="discriminator")}
    for k in ("opt_g", "opt_d"):
        if k in obj:
            out[k] = obj[k]
    return out


def _official_state(model: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """``model``'s state dict as ``nn.DataParallel`` writes it (``module.`` keys and module metadata)."""
    sd = model.state_dict()
    out: OrderedDict[str, torch.Tensor] = OrderedDict(("module." + k, v) for k, v in sd.items())
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        new_meta: OrderedDict[str, Any] = OrderedDict()
        new_meta[""] = {"version": 1}
        for k, v in meta.items():
            # a new string object per key, as DataParallel makes them (pickle would otherwise share the 'module'
            # string between the g and d dicts by reference, and the bytes would differ from official files)
            new_meta["".join(("module", "." + k if k else ""))] = v
        out._metadata = new_meta  # type: ignore[attr-defined]
    return out


def to_official(path: str | os.PathLike, generator: FastGANGenerator, discriminator: FastGANDiscriminator,
                g_ema: FastGANGenerator | None = None, opt_g: Mapping[str, Any] | None = None,
                opt_d: Mapping[str, Any] | None = None) -> Path:
    """Write an official ``all_N.pth`` (atomically): ``g`` (raw), ``d``, ``g_ema`` (the EMA parameters as a list),
    ``opt_g``, ``opt_d`` (optimiser state dicts; empty Adam states when not given). Name the file ``all_<N>.pth``:
    the official trainer resumes at the N in the name. An official file read with :func:`load_training_state` and
    written back under its own name is byte-identical."""
    g_ema = g_ema if g_ema is not None else generator
    if [tuple(p.shape) for p in g_ema.parameters()] != [tuple(p.shape) for p in generator.parameters()]:
        raise AsapError("to_official: g_ema and generator have different architectures")
    obj = {"g": _official_state(generator), "d": _official_state(discriminator),
           "g_ema": [p.detach().clone() for p in g_ema.parameters()],
           "opt_g": opt_g if opt_g is not None else torch.optim.Adam(generator.parameters()).state_dict(),
           "opt_d": opt_d if opt_d is not None else torch.optim.Adam(discriminator.parameters()).state_dict()}
    return _save_named(obj, Path(path))


def _save_named(obj: Any, path: Path) -> Path:
    """``torch.save`` to a temporary folder under the final file name (torch names the archive's inner folder after
    the file, so this keeps files byte-identical to the official ones), then rename into place."""
    import shutil
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        torch.save(obj, tmp_dir / path.name)
        os.replace(tmp_dir / path.name, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path
