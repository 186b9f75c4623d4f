"""Image to patch tokens: one strided convolution."""
from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Images (B, C, H, W) -> tokens (B, H/p * W/p, D), row-major over the patch grid.

    Any H and W that are multiples of ``patch_size`` work; the stored position embedding is
    what fixes a model's native size, not this layer.
    """

    def __init__(self, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"input {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)
