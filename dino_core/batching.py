"""Chunk-and-pad batching: how any number of frames goes through a graph with a batch limit.

A dynamic-batch graph takes up to its largest batch per call; a fixed-batch graph takes exactly
its batch, so the last call is padded by repeating its last frame and the padded rows of the
outputs are dropped.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def stack_padded(items: Sequence[np.ndarray], size: int | None = None) -> np.ndarray:
    """Per-frame arrays -> one batch (N, ...), padded to ``size`` rows by repeating the last."""
    items = list(items)
    if size is not None and len(items) < size:
        items += [items[-1]] * (size - len(items))
    return np.stack(items)


def chunks(count: int, size: int) -> Iterator[slice]:
    """Slices of at most ``size`` covering ``range(count)`` in order."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))
