"""torch.distributed set-up for ``torchrun``: gloo on the CPU, NCCL on GPUs.

``torchrun --nproc_per_node N -m dino_train.cli ...`` (or the ``dino-train`` script) sets
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; without them the run is a single process and no process
group is created.

Every tensor handed to a collective lives on the process's device (:attr:`DistInfo.device`):
NCCL only takes CUDA tensors, and gloo takes CPU ones. The helpers below create or move their
tensors there, so a caller cannot hand NCCL a CPU tensor by accident.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"       # this process's device: "cpu", or "cuda:N" (its own GPU)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str, dist_url: str = "env://") -> DistInfo:
    """Join the process group described by torchrun's environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=f"cuda:{torch.cuda.current_device()}"
                        if device_type == "cuda" else device_type)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    info = DistInfo(rank=int(os.environ["RANK"]), world_size=world, local_rank=local_rank,
                    device=f"cuda:{local_rank}" if device_type == "cuda" else device_type)
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                init_method=dist_url, rank=info.rank, world_size=world)
    return info


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of a tensor over processes (identity when not distributed)."""
    if not info.enabled:
        return value
    value = value.to(info.device, copy=True)
    dist.all_reduce(value)
    return value / info.world_size


def any_process(flag: bool, info: DistInfo) -> bool:
    """True on every process if ``flag`` is true on at least one (used to stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def gather_objects(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
