"""SwiGLU feed-forward networks: DINOv2's (ViT-g/14; gate and value in one packed ``w12``) and
DINOv3's (ViT-S+, H+, 7B; separate ``w1`` and ``w2``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_features(hidden_features: int, align: int = 8) -> int:
    """The width rule for a SwiGLU replacing an MLP of ``hidden_features`` units: 2/3 of it
    (same parameter count), rounded up to a multiple of ``align`` (8; DINOv3's 7B: 64).
    DINOv2 ViT-g/14: 4 * 1536 -> 4096; DINOv3 ViT-S+/16: 6 * 384 -> 1536."""
    return (int(hidden_features * 2 / 3) + align - 1) // align * align


class SwiGLUFFN(nn.Module):
    """Tokens (..., D) -> (..., out_features or D): ``w3(silu(x1) * x2)``, (x1, x2) = w12(x).

    ``hidden_features`` is the gate width itself (apply :func:`swiglu_hidden_features` first
    for the official rule). Parameter names ``w12``/``w3`` are those of the official checkpoints
    (xFormers' fused SwiGLU keeps the same names and packing).
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.w12 = nn.Linear(in_features, 2 * hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class SplitSwiGLUFFN(nn.Module):
    """Tokens (..., D) -> (..., out_features or D): ``w3(silu(w1(x)) * w2(x))``.

    The same function as :class:`SwiGLUFFN` with the gate (``w1``) and value (``w2``)
    projections stored apart, as DINOv3's checkpoints hold them.
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w2 = nn.Linear(in_features, hidden_features, bias=bias)
        self.w3 = nn.Linear(hidden_features, out_features or in_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))
