"""torchrun / DistributedDataParallel helpers, in one place."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = [
    "DistributedContext",
    "ShardSampler",
    "all_reduce_sum",
    "get_world_size",
    "init_distributed_mode",
    "is_main_process",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, world size and its device."""

    enabled: bool
    rank: int
    world_size: int
    device: torch.device
    local_world_size: int = 1  # the processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed_mode(device: str = "cuda") -> DistributedContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or run alone.

    NCCL on CUDA, gloo on the CPU. Other ranks log warnings only.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistributedContext(False, 0, 1, torch.device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo", rank=rank, world_size=world_size)
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return DistributedContext(True, rank, world_size, torch.device(device), local_world_size)


def is_main_process() -> bool:
    """True outside DDP and on rank 0."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def get_world_size() -> int:
    """Number of processes (1 outside DDP)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (no-op outside DDP)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


class ShardSampler(Sampler[int]):
    """Evaluation sampler: rank r gets indices r, r + world, ... with no padding.

    Unlike DistributedSampler it repeats no sample, so a confusion matrix summed
    over the ranks equals the single-process one.
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
