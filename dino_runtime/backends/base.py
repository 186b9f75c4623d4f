"""What every backend returns and accepts; no backend-specific imports here."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dino_core.metadata import ModelMetadata


@dataclass
class ModelOutputs:
    """One batch of model outputs, float32 numpy arrays on the host."""

    cls: np.ndarray                 # (B, D)
    attn: np.ndarray                # (B, heads, H/p, W/p)
    patch: np.ndarray | None = None  # (B, H/p * W/p, D), when the model exports patch tokens
    attn_registers: np.ndarray | None = None  # (B, heads, R), DINOv2 with registers, when asked

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


class Backend(Protocol):
    name: str
    metadata: ModelMetadata
    device: str                      # what actually runs, e.g. "CPUExecutionProvider"
    precision: str                   # what it computes in: the file's, or the one it resolved

    def run(self, images: np.ndarray) -> ModelOutputs:
        """Graph input (B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs for B frames."""
