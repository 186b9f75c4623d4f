"""Results handed to users: one per batch (:class:`BatchResult`) or per frame (:class:`FrameResult`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .sources import Frame

if TYPE_CHECKING:
    from .tracking import TrackFrame


@dataclass
class BatchResult:
    """What ``Runtime(...)(frames)`` returns for B frames."""

    cls: np.ndarray                  # (B, D) [CLS] embeddings (a ConvNeXt: the pooled last stage)
    attn: np.ndarray | None          # (B, heads, h, w) last block's [CLS] attention, every head;
    #                                  None for a model without attention
    masks: np.ndarray | None = None  # (B, k, h, w) bool mass-threshold masks of the selected heads
    patch: np.ndarray | None = None  # (B, h*w, D) patch tokens, when the model exports them
    attn_registers: np.ndarray | None = None  # (B, heads, R) [CLS] attention over registers


@dataclass
class FrameResult:
    """One frame through the pipeline, in source order."""

    frame: Frame
    cls: np.ndarray                     # (D,)
    attn: np.ndarray | None             # (heads, h, w); None without attention
    maps: np.ndarray | None             # (k, h, w) the selected heads (mean, all or one)
    masks: np.ndarray | None = None     # (k, h, w) bool
    patch: np.ndarray | None = None     # (h*w, D)
    rendered: np.ndarray | None = None  # (H, W, 3) uint8 frame with overlays, when rendering
    track: TrackFrame | None = None     # tracked objects, when tracking (dino_runtime.tracking)

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def timestamp(self) -> float:
        return self.frame.timestamp

    @property
    def stream(self) -> str:
        """The name of the stream it came from (runs of several sources)."""
        return self.frame.stream
