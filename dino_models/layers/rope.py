"""2D rotary position embedding (RoPE) of the DINOv3 ViTs: axial, no learned weights.

Each head's query and key channels are rotated by angles that depend on the patch's row (the
first half of the frequencies) and column (the second half). Patch centres are placed on
[-1, 1] per side (``normalize_coords="separate"``, DINOv3's setting; ``"min"``/``"max"`` divide
both sides by the shorter/longer one), so any grid, square or not, spans the same range. The
periods are ``base ** (4 i / head_dim)`` for ``i < head_dim / 4`` (base 100 in every release).
The training-time shift, jitter and rescale of the coordinates are not implemented: they are
off at inference, and these backbones are loaded, exported and run here, not trained.

The table a model computes for one input size is a plain tensor (sin and cos stacked), so export
stores it as a constant per size: no trigonometry, ``Range`` or ``Tile`` in the graph.
"""
from __future__ import annotations

import math

import torch
from torch import nn

NORMALIZE_COORDS = ("separate", "min", "max")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d): the halves (a, b) of the last dimension become (-b, a)."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def rope_apply(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate queries or keys ``x`` (B, heads, T, d) by ``table`` (2, T, d) = (sin, cos).

    Computed in the table's type (float32, as officially) and returned in ``x``'s, so that
    reduced-precision runs (bf16 autocast) keep q, k and v in one type."""
    sin, cos = table.unbind(0)
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class RopePositionEmbedding(nn.Module):
    """Grid (rows, cols) -> (2, rows * cols, head_dim): sin and cos of each patch's angles,
    row-major over the grid.

    ``periods`` (head_dim / 4,) is a persistent buffer, as in the official checkpoints, which
    store it (rounded to bfloat16 precision by their training; loading the file keeps those
    values, so outputs match the official model loaded from the same file).
    """

    def __init__(self, head_dim: int, base: float = 100.0,
                 normalize_coords: str = "separate") -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"RoPE needs a head width divisible by 4, got {head_dim}")
        if normalize_coords not in NORMALIZE_COORDS:
            raise ValueError(f"normalize_coords {normalize_coords!r}: expected one of "
                             f"{', '.join(NORMALIZE_COORDS)}")
        self.head_dim = head_dim
        self.base = base
        self.normalize_coords = normalize_coords
        self.register_buffer("periods", self.default_periods(), persistent=True)

    def default_periods(self) -> torch.Tensor:
        """``base ** (2 i / (head_dim / 2))``, float32, as the official code computes them."""
        quarter = self.head_dim // 4
        return self.base ** (2 * torch.arange(quarter, dtype=torch.float32) / (self.head_dim // 2))

    def coords(self, rows: int, cols: int) -> torch.Tensor:
        """Patch centres (rows * cols, 2) as (y, x) in [-1, 1], float32."""
        if self.normalize_coords == "separate":
            h_div, w_div = rows, cols
        else:
            h_div = w_div = (min if self.normalize_coords == "min" else max)(rows, cols)
        ys = torch.arange(0.5, rows, dtype=torch.float32) / h_div
        xs = torch.arange(0.5, cols, dtype=torch.float32) / w_div
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1).flatten(0, 1)
        return 2.0 * grid - 1.0

    def forward(self, rows: int, cols: int) -> torch.Tensor:
        """(2, rows * cols, head_dim) float32 on the periods' device."""
        coords = self.coords(rows, cols).to(self.periods.device)
        periods = self.periods.float()
        angles = 2 * math.pi * coords[:, :, None] / periods[None, None, :]  # (N, 2, d/4)
        angles = angles.flatten(1, 2).tile(2)                                 # (N, d)
        return torch.stack((torch.sin(angles), torch.cos(angles)))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, base={self.base}, normalize_coords={self.normalize_coords}"
