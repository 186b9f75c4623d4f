"""The official DINO attention mask and the measures used to compare two models' outputs.

Shapes: attention maps ``(..., h, w)`` on the patch grid; embeddings ``(B, ...)``.
"""
from __future__ import annotations

import numpy as np

from .errors import OptionError

DEFAULT_MASS = 0.6   # the official visualize_attention.py --threshold


def mass_threshold_masks(maps: np.ndarray, threshold: float = DEFAULT_MASS) -> np.ndarray:
    """Per map, the most-attended patches holding ``threshold`` of its attention mass.

    (..., h, w) float -> (..., h, w) bool. As in the official ``visualize_attention.py``: sort
    each map ascending, normalise by its sum, and keep the patches whose cumulative mass exceeds
    ``1 - threshold``. Sums run in float64, so the mask does not depend on the output dtype.
    """
    if not 0.0 < threshold <= 1.0:
        raise OptionError(f"--threshold {threshold}: expected a mass fraction in (0, 1]")
    shape = maps.shape
    flat = maps.reshape(-1, shape[-2] * shape[-1]).astype(np.float64)
    order = np.argsort(flat, axis=1, kind="stable")
    ascending = np.take_along_axis(flat, order, axis=1)
    cumulative = np.cumsum(ascending / ascending.sum(axis=1, keepdims=True), axis=1)
    keep = np.empty_like(cumulative, dtype=bool)
    np.put_along_axis(keep, order, cumulative > (1.0 - threshold), axis=1)
    return keep.reshape(shape)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of two bool mask arrays (..., h, w) -> (...); two empty masks count as 1."""
    inter = (a & b).sum(axis=(-2, -1))
    union = (a | b).sum(axis=(-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (B, ...) arrays, each row flattened -> (B,), in float64."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
