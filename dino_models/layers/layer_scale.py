"""LayerScale (CaiT, DINOv2): a learned per-channel scale on each residual branch."""
from __future__ import annotations

import torch
from torch import nn


class LayerScale(nn.Module):
    """``x * gamma`` over the last dimension; ``gamma`` (D,) starts at ``init_values``.

    DINOv2's released backbones are built with ``init_values=1.0`` (then loaded), its training
    with 1e-5.
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.init_values = init_values
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma
