"""Label map (+ instance map) -> the tensor a semantic generator receives, exactly as the official SPADE/ASAPNet code builds it.

Shared by datasets, tools/translate.py and the checkpoint parity tests, so that training and inference
see identical inputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asap.errors import AsapError


@dataclass(frozen=True)
class SemanticSpec:
    """What the generator's input holds, in the official option names' meaning."""

    label_nc: int
    contain_dontcare_label: bool = False
    instance_edge: bool = True     # official: not no_instance_edge
    instance_dist: bool = False    # official: not no_instance_dist

    @property
    def num_label_channels(self) -> int:
        return self.label_nc + (1 if self.contain_dontcare_label else 0)

    @property
    def num_channels(self) -> int:
        return self.num_label_channels + int(self.instance_edge) + int(self.instance_dist)

    @property
    def uses_instance(self) -> bool:
        return self.instance_edge or self.instance_dist


def check_label_ids(label: torch.Tensor, spec: SemanticSpec, source: str = "label map") -> None:
    """Raise AsapError naming ``source`` when a label id is outside [0, num_label_channels)."""
    if label.numel() == 0:
        raise AsapError(f"{source}: empty label map")
    lo, hi = int(label.min()), int(label.max())
    if lo < 0 or hi >= spec.num_label_channels:
        dc = " (dontcare id %d included)" % spec.label_nc if spec.contain_dontcare_label else ""
        bad = hi if hi >= spec.num_label_channels else lo
        raise AsapError(
            f"{source}: label id {bad} is outside 0..{spec.num_label_channels - 1} "
            f"(label_nc={spec.label_nc}{dc})")


def one_hot(label: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Integer labels [B,1,H,W] -> float one-hot [B,num_channels,H,W] (scatter of 1.0, as the official code)."""
    b, _, h, w = label.shape
    out = torch.zeros(b, num_channels, h, w, device=label.device)
    return out.scatter_(1, label.long(), 1.0)


def instance_edges(instance: torch.Tensor) -> torch.Tensor:
    """1 where a pixel's instance id differs from its left/right/up/down neighbour, else 0 (float [B,1,H,W])."""
    t = instance
    edge = torch.zeros(t.shape, dtype=torch.bool, device=t.device)
    dx = t[..., :, 1:] != t[..., :, :-1]
    dy = t[..., 1:, :] != t[..., :-1, :]
    edge[..., :, 1:] |= dx
    edge[..., :, :-1] |= dx
    edge[..., 1:, :] |= dy
    edge[..., :-1, :] |= dy
    return edge.float()


def instance_distance(instance: torch.Tensor) -> torch.Tensor:
    """Official 'instance_dist' channel: Euclidean distance transform of the instance-edge map."""
    from scipy.ndimage import distance_transform_edt

    edge = instance_edges(instance).bool().cpu().numpy()
    dist = distance_transform_edt(edge)
    return torch.from_numpy(np.asarray(dist)).float().to(instance.device)


def semantic_input(label: torch.Tensor, instance: torch.Tensor | None, spec: SemanticSpec,
                   check: bool = True) -> torch.Tensor:
    """Build the generator input: one-hot labels (+dontcare), then the instance edge / distance channels."""
    if label.dim() == 3:
        label = label.unsqueeze(1)
    if check:
        check_label_ids(label, spec)
    parts = [one_hot(label, spec.num_label_channels)]
    if spec.uses_instance:
        if instance is None:
            raise AsapError("this model needs an instance map (instance edges are part of its input)")
        if instance.dim() == 3:
            instance = instance.unsqueeze(1)
        if instance.shape[-2:] != label.shape[-2:]:
            raise AsapError(f"instance map size {tuple(instance.shape[-2:])} differs from label map size "
                            f"{tuple(label.shape[-2:])}")
        if spec.instance_edge:
            parts.append(instance_edges(instance).to(label.device))
        if spec.instance_dist:
            parts.append(instance_distance(instance).to(label.device))
    return torch.cat(parts, dim=1)


def dontcare_to_index(label: torch.Tensor, spec: SemanticSpec, dontcare_id: int = 255) -> torch.Tensor:
    """Map the dataset's dontcare id (255) to label_nc, as the official datasets do."""
    return torch.where(label == dontcare_id, torch.full_like(label, spec.label_nc), label)
