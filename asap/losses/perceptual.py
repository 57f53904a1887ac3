"""VGG19 perceptual loss of pix2pixHD / SPADE / ASAPNet.

L1 distances between VGG19 activations relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 of the generated and the
real image, weighted 1/32, 1/16, 1/8, 1/4, 1 (the real image's features are a constant target). As in the
official code, images go in as they are, in [-1, 1], without ImageNet mean/std normalisation.

ImageNet weights come through torchvision's weights API from the torch hub cache
(``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``, i.e. under ``TORCH_HOME``). A missing file is fetched
once with a stall timeout (never an unbounded wait); without network the error says where to put the file.
"""
from __future__ import annotations

import hashlib
import threading
import time
import urllib.request
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from asap.errors import AsapError
from asap.utils.io import atomic_path

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = "https://download.pytorch.org/models/" + VGG19_FILE
VGG19_SHA256_PREFIX = "dcbb9e9d"
# VGG19 'features' up to relu5_1: conv widths, "M" = 2x2 max pool
_VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# end index (exclusive) in vgg19.features of each returned activation: relu1_1, relu2_1, relu3_1, relu4_1, relu5_1
SLICE_ENDS = (2, 7, 12, 21, 30)
LAYER_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def vgg19_weights_path() -> Path:
    """Where torchvision keeps (and looks for) the ImageNet VGG19 weights: <torch hub dir>/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def _missing_message(path: Path, reason: str) -> str:
    return (f"the VGG19 perceptual loss needs the ImageNet weights file {path.name}: place it in {path.parent} "
            f"(from {VGG19_URL}; {reason}), or use pretrained=false for a random VGG19")


def _download(url: str, dest: Path, stall_timeout: float) -> None:
    """Fetch ``url`` to ``dest`` atomically, checking the sha256 prefix; gives up when nothing arrives for
    ``stall_timeout`` seconds (name resolution and connection included: the transfer runs in a daemon thread)."""
    received = [0]
    finished = threading.Event()
    cancel = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with urllib.request.urlopen(url, timeout=stall_timeout) as response:
                digest = hashlib.sha256()
                with atomic_path(dest) as tmp, open(tmp, "wb") as f:
                    while True:
                        if cancel.is_set():
                            raise TimeoutError("cancelled")
                        chunk = response.read(1 << 20)
                        if not chunk:
                            break
                        f.write(chunk)
                        digest.update(chunk)
                        received[0] += len(chunk)
                    f.close()
                    if not digest.hexdigest().startswith(VGG19_SHA256_PREFIX):
                        raise ValueError("downloaded file has the wrong checksum")
        except BaseException as e:  # reported by the waiting thread
            failure.append(e)
        finally:
            finished.set()

    threading.Thread(target=work, name="asap-vgg19-download", daemon=True).start()
    seen, last = 0, time.monotonic()
    while not finished.wait(0.1):
        if received[0] != seen:
            seen, last = received[0], time.monotonic()
        elif time.monotonic() - last > stall_timeout:
            cancel.set()
            raise TimeoutError(f"no data for {stall_timeout:g} s")
    if failure:
        raise failure[0]


def ensure_vgg19_weights(download: bool = True, timeout: float = 10.0) -> Path:
    """Return the cached VGG19 weights file, downloading it first if allowed; AsapError (one line) otherwise."""
    path = vgg19_weights_path()
    if path.is_file():
        return path
    if not download:
        raise AsapError(_missing_message(path, "downloading is off"))
    try:
        _download(VGG19_URL, path, timeout)
    except Exception as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise AsapError(_missing_message(path, f"download failed: {reason}")) from e
    return path


def vgg19_features() -> nn.Sequential:
    """VGG19's convolutional trunk up to relu5_1 (torchvision's layer indices, so its weights load by index)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in _VGG19_CFG:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(item)
    return nn.Sequential(*layers)


def _load_imagenet(features: nn.Sequential, path: Path) -> None:
    from torchvision.models import VGG19_Weights

    try:
        state = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True, weights_only=True,
                                                           map_location="cpu", model_dir=str(path.parent))
        ours = {f"features.{k}": v for k, v in features.state_dict().items()}
        picked = {k[len("features."):]: state[k] for k in ours}
        for k, v in picked.items():
            if tuple(v.shape) != tuple(ours["features." + k].shape):
                raise ValueError(f"'features.{k}' has shape {tuple(v.shape)}, expected "
                                 f"{tuple(ours['features.' + k].shape)}")
        features.load_state_dict(picked)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise AsapError(f"{path}: not a usable VGG19 ImageNet weights file ({first}); delete it to download "
                        f"again, or place a good copy there") from e


class VGGPerceptualLoss(nn.Module):
    """``sum_i w_i * L1(vgg_i(fake), vgg_i(real))`` over relu1_1..relu5_1 (weights 1/32..1), VGG19 frozen.

    ``pretrained=True`` loads the ImageNet weights (see module docstring: cache first, then a bounded download
    when ``download``); ``pretrained=False`` uses a random VGG19, seeded so that it is the same in every run —
    the ``pretrained`` attribute records which one this is.
    """

    def __init__(self, pretrained: bool = True, layer_weights: Sequence[float] = LAYER_WEIGHTS,
                 download: bool = True, download_timeout: float = 10.0) -> None:
        super().__init__()
        if len(layer_weights) != len(SLICE_ENDS):
            raise ValueError(f"layer_weights needs {len(SLICE_ENDS)} values, got {len(layer_weights)}")
        self.pretrained = bool(pretrained)
        self.layer_weights = tuple(float(w) for w in layer_weights)
        features = vgg19_features()
        if self.pretrained:
            _load_imagenet(features, ensure_vgg19_weights(download, download_timeout))
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                for m in features:
                    if isinstance(m, nn.Conv2d):  # torchvision's VGG initialisation
                        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                        nn.init.zeros_(m.bias)
        starts = (0,) + SLICE_ENDS[:-1]
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in zip(starts, SLICE_ENDS))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "VGGPerceptualLoss":
        return super().train(False)  # a fixed feature extractor

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five activations relu1_1 .. relu5_1 of x (images in [-1, 1], used as they are)."""
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake_features = self.features(fake)
        with torch.no_grad():
            real_features = self.features(real.detach())
        loss = fake.new_zeros(())
        for w, f, r in zip(self.layer_weights, fake_features, real_features):
            loss = loss + w * F.l1_loss(f, r)
        return loss
