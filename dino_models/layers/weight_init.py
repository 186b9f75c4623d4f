"""Truncated-normal initialisation by inverse CDF, as DINO, DINOv2 and timm draw it.

``torch.nn.init.trunc_normal_`` switched to rejection sampling (torch 2.14), which consumes the
random stream differently; this one keeps a seeded model's initial weights identical to the
ones the official code and earlier releases of this project drew.
"""
from __future__ import annotations

import math

import torch


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0) -> torch.Tensor:
    """Fill ``tensor`` in place with N(mean, std^2) values truncated to [a, b]; returns it.

    One uniform draw per element, mapped through the inverse normal CDF (no redraws).
    """
    def norm_cdf(x: float) -> float:
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with torch.no_grad():
        low, high = norm_cdf((a - mean) / std), norm_cdf((b - mean) / std)
        tensor.uniform_(2 * low - 1, 2 * high - 1)
        tensor.erfinv_()
        tensor.mul_(std * math.sqrt(2.0))
        tensor.add_(mean)
        tensor.clamp_(min=a, max=b)
    return tensor
