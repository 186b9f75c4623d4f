"""Attention maps -> head selection, official mass-threshold masks, PCA colours; all vectorised.

The PCA colours live in :mod:`dino_runtime.pca` (re-exported here).

Shapes: ``attn`` (B, heads, h, w) with (h, w) the patch grid; selected maps (B, k, h, w) with
k = 1 for ``mean`` or a single head and k = heads for ``all``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dino_core.errors import OptionError

from .pca import PcaBasis, PcaColors, PcaOptions

__all__ = ["HEAD_CHOICES", "HeadSelection", "PcaBasis", "PcaColors", "PcaOptions",
           "normalize_maps"]

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
        if self.mode == "index" and num_heads == 0:
            raise OptionError(f"--heads {self.index}: the model has no attention heads")
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
