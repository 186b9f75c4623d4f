"""SwiGLU feed-forward network, the FFN of DINOv2's ViT-g/14."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu_hidden_features(hidden_features: int) -> int:
    """DINOv2's width rule for a SwiGLU replacing an MLP of ``hidden_features`` units: 2/3 of it
    (same parameter count), rounded up to a multiple of 8. ViT-g/14: 4 * 1536 -> 4096."""
    return (int(hidden_features * 2 / 3) + 7) // 8 * 8


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
