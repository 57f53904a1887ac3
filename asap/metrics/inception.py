"""The FID Inception-v3 (pytorch-fid's port of the 2015-12-05 TensorFlow graph) loaded from a local file.

The network is pytorch-fid's own :class:`pytorch_fid.inception.InceptionV3` (FID blocks, pool3 features of 2048
dimensions, bilinear resize to 299x299 inside the network); only where its weights come from differs: a path from
the config, else ``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth`` (where pytorch-fid itself
caches them). Nothing is downloaded: without the file the error names it and where to put it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator
from unittest import mock

import numpy as np
import torch

from asap.errors import AsapError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
VARIANT = "pytorch-fid FID Inception-v3 (TF inception-2015-12-05)"
DIMS = (64, 192, 768, 2048)   # pytorch-fid's feature blocks; 2048 (pool3) is the standard FID
RESIZE = "uint8 RGB -> [0,1] -> bilinear 299x299 (align_corners=False, no antialias) inside the network"


def default_weights_path() -> Path:
    """Where pytorch-fid caches the weights: ``torch.hub.get_dir()/checkpoints/<WEIGHTS_FILE>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights(path: str | os.PathLike | None = None) -> Path:
    """The weights file to use: ``path`` when given, else the hub cache; a missing file is one AsapError line."""
    p = Path(path).expanduser() if path else default_weights_path()
    if not p.is_file():
        where = f"{p}" if path else f"{p.parent}/ (or set TORCH_HOME, or metrics.inception_weights=PATH)"
        raise AsapError(f"FID/KID need the Inception weights {WEIGHTS_FILE} (pytorch-fid's release file): "
                        f"{p} does not exist; put the file at {where}")
    return p


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build_inception(path: str | os.PathLike | None = None, dims: int = 2048) -> tuple[torch.nn.Module, Path]:
    """pytorch-fid's InceptionV3 with weights read from the local file (``weights_only=True``); ``dims`` picks
    pytorch-fid's feature block (2048 = pool3, the standard; smaller ones only for quick checks)."""
    from pytorch_fid import inception as pf

    if int(dims) not in DIMS:
        raise AsapError(f"inception_dims={dims} is not one of {', '.join(map(str, DIMS))}")
    weights = find_weights(path)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise AsapError(f"{weights}: cannot read the Inception weights ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise AsapError(f"{weights}: not the FID Inception weights (expected pytorch-fid's {WEIGHTS_FILE})")
    with mock.patch.object(pf, "load_state_dict_from_url", lambda *a, **k: state):
        try:
            net = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[int(dims)]], resize_input=True,
                                 normalize_input=True, use_fid_inception=True)
        except RuntimeError as e:
            raise AsapError(f"{weights}: the Inception weights do not fit the FID network "
                            f"({str(e).splitlines()[0]})") from None
    net.dims = int(dims)
    return net.eval(), weights


@torch.no_grad()
def features(net: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device | str = "cpu",
             total: int | None = None, progress: bool = False, desc: str = "inception") -> np.ndarray:
    """Features [N,dims] (float64) of image batches, each [B,3,H,W] uint8 (or float in [0,1]); blocks before pool3
    are averaged over space, as pytorch-fid does."""
    from tqdm import tqdm

    net = net.to(device)
    out = []
    with tqdm(total=total, disable=not progress, desc=desc, unit="img", leave=False) as bar:
        for b in batches:
            x = b.to(device)
            x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
            f = net(x)[0]
            if f.shape[2:] != (1, 1):
                f = torch.nn.functional.adaptive_avg_pool2d(f, (1, 1))
            out.append(f.reshape(f.shape[0], -1).double().cpu().numpy())
            bar.update(x.shape[0])
    if not out:
        raise AsapError("no images to compute Inception features of")
    return np.concatenate(out)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Generator output [B,3,H,W] in [-1,1] -> uint8, rounded as a saved PNG would be (the standard protocol
    scores images as files)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def folder_batches(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    """uint8 [B,3,H,W] batches of the files (read as RGB); a change of image size starts a new batch."""
    from asap.data.paired import read_rgb

    batch: list[np.ndarray] = []
    for f in files:
        arr = read_rgb(f)
        if batch and (len(batch) == batch_size or arr.shape != batch[0].shape):
            yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            batch = []
        batch.append(arr)
    if batch:
        yield torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
