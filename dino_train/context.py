"""Where a run computes: the device, the precision and the process group (:class:`TrainContext`)."""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from dino_core.errors import UserError
from dino_core.precision import resolve_precision

from . import distributed as D
from .config import TRAIN_PRECISIONS, TrainConfig
from .cpu_tuning import keep_freed_memory


@dataclass
class TrainContext:
    device: torch.device      # with its index on CUDA: the process's own GPU
    precision: str            # resolved: fp32 | bf16 | fp16
    dist: D.DistInfo

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        dtype = self.autocast_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_train_precision(name: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA (the official default), bf16 on CPUs with native bf16, else fp32
    (:func:`dino_core.precision.resolve_precision`)."""
    cuda = device.type == "cuda"
    return resolve_precision(name, device.type, TRAIN_PRECISIONS, gpu_auto="fp16",
                             gpu_bf16=not cuda or torch.cuda.is_bf16_supported(),
                             what="dino-train")


def make_context(cfg: TrainConfig) -> TrainContext:
    """Resolve the device and precision, and join torchrun's process group if there is one."""
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    precision = resolve_train_precision(cfg.precision, device)
    dist = D.init_distributed(device.type, cfg.dist_url)
    return TrainContext(torch.device(dist.device), precision, dist)
