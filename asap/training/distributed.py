"""Data-parallel training over several processes started by ``torchrun`` (torch.distributed; nccl on CUDA,
gloo on CPU).

Every process holds the same networks; after each phase's backward the gradients of the networks it trains are
averaged over processes with one all-reduce (the scheme of NVIDIA's StyleGAN3 training loop, which is what
DistributedDataParallel's reducer does, without its restriction that every parameter takes part in every backward:
GAN phases freeze whole networks and lazy regularisers leave some parameters unused).
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist
import torch.nn as nn

from asap.errors import AsapError


@dataclass(frozen=True)
class DistEnv:
    """This process's place: rank among world_size processes, local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_from_torchrun() -> DistEnv:
    """Read RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a plain run is rank 0 of 1)."""
    try:
        return DistEnv(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise AsapError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {e}") from e


def current() -> DistEnv:
    """The initialised process group's view, else rank 0 of 1."""
    if dist.is_available() and dist.is_initialized():
        return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistEnv()


def init(device_spec: str = "auto", timeout_min: float = 30.0) -> tuple[DistEnv, torch.device | None]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this process's device.

    Returns (env, device) where device is ``cuda:LOCAL_RANK`` on CUDA, ``cpu`` for gloo, or None for a plain run
    (the caller resolves trainer.device itself).
    """
    env = env_from_torchrun()
    if not env.enabled:
        return env, None
    spec = str(device_spec or "auto").lower()
    use_cuda = torch.cuda.is_available() and spec != "cpu"
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise AsapError(f"trainer.device={spec} but CUDA is not available on this machine")
    if use_cuda:
        if env.local_rank >= torch.cuda.device_count():
            raise AsapError(f"LOCAL_RANK={env.local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
                            f"use --nproc_per_node <= {torch.cuda.device_count()}")
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_min))
    return current(), device


def shutdown(clean: bool = False) -> None:
    """Leave the process group. ``clean`` (every rank got here normally): wait for the others first, so that no
    rank tears its connections down while a peer still talks on them (gloo then aborts the process)."""
    if dist.is_available() and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every process (no-op without a process group)."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    env = current()
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Make parameters and buffers equal to rank ``src``'s."""
    if not current().enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        if t.numel():
            dist.broadcast(t.data, src=src)


@torch.no_grad()
def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over processes with one flat all-reduce (None gradients count as 0
    and stay None where they were None)."""
    env = current()
    if not env.enabled:
        return
    params = [p for p in params if p.numel()]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(flat)
    flat /= env.world_size
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset:offset + n].view_as(p))
        offset += n


def all_reduce_max(values: list[float]) -> list[float]:
    """Element-wise maximum over processes (flags: stop, non-finite loss)."""
    if not current().enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum over processes (logged means)."""
    if not current().enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.tolist()
