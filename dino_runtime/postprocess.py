"""Attention maps -> head selection, official mass-threshold masks, PCA colours; all vectorised.

Shapes: ``attn`` (B, heads, h, w) with (h, w) the patch grid; selected maps (B, k, h, w) with
k = 1 for ``mean`` or a single head and k = heads for ``all``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dino_core.errors import OptionError

HEAD_CHOICES = "mean|all|K"


@dataclass(frozen=True)
class HeadSelection:
    """``mean`` over heads, ``all`` heads, or one head by index."""

    mode: str = "mean"            # mean | all | index
    index: int = 0

    @classmethod
    def parse(cls, text: str | int) -> "HeadSelection":
        text = str(text).strip().lower()
        if text in ("mean", "all"):
            return cls(text)
        if text.isdigit():
            return cls("index", int(text))
        raise OptionError(f"--heads {text!r}: expected {HEAD_CHOICES} (K a head index)")

    def check(self, num_heads: int) -> None:
        if self.mode == "index" and self.index >= num_heads:
            raise OptionError(f"--heads {self.index}: the model has {num_heads} heads "
                             f"(0..{num_heads - 1})")

    def select(self, attn: np.ndarray) -> np.ndarray:
        """(B, heads, h, w) -> (B, k, h, w)."""
        if self.mode == "mean":
            return attn.mean(axis=1, keepdims=True)
        if self.mode == "all":
            return attn
        return attn[:, self.index:self.index + 1]


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Min-max each (h, w) map to [0, 1]; (..., h, w) -> same shape, float32."""
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return ((maps - low) / np.where(span > 0, span, 1.0)).astype(np.float32)


class PcaColors:
    """Patch tokens -> RGB through a 3-component PCA fitted once, so colours stay stable in video.

    The basis and the colour range are fitted on the first batch seen (or on ``fit`` data) and
    reused for every later frame; refitting per frame would flip component signs between frames.
    """

    def __init__(self) -> None:
        self.mean: np.ndarray | None = None   # (D,)
        self.basis: np.ndarray | None = None  # (D, 3)
        self.low = self.high = None           # (3,) 1st and 99th percentiles of projections

    def fit(self, patch: np.ndarray) -> None:
        """patch (..., N, D): any number of frames' tokens."""
        tokens = patch.reshape(-1, patch.shape[-1]).astype(np.float32)
        self.mean = tokens.mean(axis=0)
        _, _, vt = np.linalg.svd(tokens - self.mean, full_matrices=False)
        self.basis = vt[:3].T
        proj = (tokens - self.mean) @ self.basis
        self.low, self.high = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)

    def __call__(self, patch: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """patch (B, N, D) -> colours (B, h, w, 3) uint8 (BGR order, first component in red)."""
        if self.basis is None:
            self.fit(patch)
        proj = (patch.astype(np.float32) - self.mean) @ self.basis
        scaled = np.clip((proj - self.low) / np.maximum(self.high - self.low, 1e-6), 0, 1)
        rgb = (scaled * 255).astype(np.uint8).reshape(patch.shape[0], *grid, 3)
        return rgb[..., ::-1]
