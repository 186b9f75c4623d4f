"""What every backend returns and accepts; no backend-specific imports here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dino_core.errors import BackendUnavailable
from dino_core.metadata import ModelMetadata


class BackendCannotRun(BackendUnavailable):
    """This backend cannot run this model here, though another may: its package is installed
    but does not import, or it cannot convert or compile the graph. ``--backend auto`` then
    says so and tries the next row of the table; a backend asked for by name stops with it."""


@dataclass
class ModelOutputs:
    """One batch of model outputs, float32 numpy arrays on the host."""

    cls: np.ndarray                 # (B, D)
    attn: np.ndarray                # (B, heads, H/p, W/p)
    patch: np.ndarray | None = None  # (B, H/p * W/p, D), when the model exports patch tokens

    def __len__(self) -> int:
        return self.cls.shape[0]


@dataclass(frozen=True)
class BackendOptions:
    """Backend settings that do not depend on the model file."""

    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "auto"         # auto, or what the backend's table row honours (fp32, bf16)
    input_size: tuple[int, int] | None = None  # torch backend: (H, W); exported files fix it
    frame_size: tuple[int, int] | None = None  # torch backend: source (H, W); without input_size
    short_side: int = 224                      # it runs at this short side, the frame's aspect
    threads: int | None = None      # CPU threads for inference; None = all cores of this process
    providers: tuple[str, ...] | None = None   # onnxruntime: explicit execution providers
    batch: int | None = None        # frames per call the caller plans; openvino compiles for it
    compile_cache: bool = True      # openvino: keep compiled models beside the model file


class Backend(Protocol):
    name: str
    metadata: ModelMetadata
    device: str                      # what actually runs, e.g. "CPUExecutionProvider"
    precision: str                   # what it computes in: the file's, or the one it resolved

    def run(self, images: np.ndarray) -> ModelOutputs:
        """Graph input (B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs for B frames."""


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
