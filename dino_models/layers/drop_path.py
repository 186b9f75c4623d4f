"""Stochastic depth: a residual branch dropped per sample during training."""
from __future__ import annotations

import torch
from torch import nn


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False) -> torch.Tensor:
    """Zero whole samples of ``x`` (B, ...) with probability ``drop_prob``, scale the rest by
    1 / (1 - drop_prob); the identity outside training."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    keep = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        keep.div_(keep_prob)
    return x * keep


class DropPath(nn.Module):
    """:func:`drop_path` as a module (``drop_prob`` is read by the tests of the decay rule)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"
