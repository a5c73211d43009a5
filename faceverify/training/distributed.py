"""Distributed data parallel through ``torchrun``: NCCL on GPUs, gloo on CPUs.

``torchrun --nproc_per_node N -m faceverify.cli train CONFIG`` (add ``--nnodes`` and a
rendezvous endpoint for several nodes) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; a plain
``faceverify train`` is a world of one. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from faceverify.config import ConfigError, check_device


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str  # "nccl", "gloo" or "none" (a plain single process)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend != "none"


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` -> a torch device;
    an unknown name or an absent CUDA is a ConfigError (a ValueError) saying what is valid."""
    check_device(preference)
    if preference in ("auto", ""):
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {preference!r} asked for, but CUDA is not available here; use cpu or auto")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    return device


def setup(preference: str = "auto") -> DistInfo:
    """Join the process group torchrun prepared (if any) and pick this process's device.

    Launched by torchrun (``MASTER_ADDR`` and ``WORLD_SIZE`` set) the process group is created
    even for a world of one, so a one-GPU ``torchrun`` exercises NCCL and DDP for real.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(preference, local_rank)
    launched = "MASTER_ADDR" in os.environ and "WORLD_SIZE" in os.environ
    backend = "none"
    if launched:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            else:
                # share the CPU cores between the processes instead of oversubscribing them
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
            dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local_rank, device, backend)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank if it is True on any (used to stop all ranks together)."""
    if not info.distributed:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def all_gather_objects(obj: object, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in one process)."""
    if not info.distributed:
        return [obj]
    gathered: list = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered
