"""The qkv projection of DINOv3 with its key bias masked out (``mask_k_bias``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KeyMaskedBiasLinear(nn.Linear):
    """``Linear(dim, 3 * dim)`` whose bias is multiplied by ``bias_mask`` (3 * dim,): 1 over the
    query and value thirds, 0 over the key third when built.

    A bias on the keys adds the same term to every score of a query, which the softmax cancels;
    DINOv3 trains with it masked. ``bias_mask`` is a persistent buffer because the official
    checkpoints store it (``blocks.N.attn.qkv.bias_mask``): the loaded values are the ones used.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if out_features % 3:
            raise ValueError(f"a qkv projection has 3 * dim outputs, got {out_features}")
        if bias:
            self.register_buffer("bias_mask", torch.ones(out_features), persistent=True)
            self.reset_bias_mask()
        else:
            self.bias_mask = None

    def reset_bias_mask(self) -> None:
        """1 over the query and value thirds, 0 over the keys."""
        if self.bias_mask is not None:
            third = self.out_features // 3
            with torch.no_grad():
                self.bias_mask.fill_(1.0)
                self.bias_mask[third: 2 * third] = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.bias_mask.to(self.bias.dtype) if self.bias is not None else None
        return F.linear(x, self.weight, bias)
