"""DINO projection head with the official parameter names (``mlp.*``, ``last_layer.weight_g/v``)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import trunc_normal_


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight = g * v / ||v|| (norm over the input dim).

    Same parameters as ``torch.nn.utils.weight_norm(nn.Linear(...))`` (``weight_g`` (out, 1),
    ``weight_v`` (out, in)), which the official head uses and which torch deprecates; keeping
    the names lets official checkpoints load strictly.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        v = torch.empty(out_features, in_features)
        nn.init.kaiming_uniform_(v, a=5 ** 0.5)  # nn.Linear's default init, as officially
        self.weight_v = nn.Parameter(v)
        self.weight_g = nn.Parameter(v.norm(dim=1, keepdim=True))

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1, eps=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x @ (g * v / ||v||)^T computed as (x @ v^T) * (g / ||v||): the (out, in) normalised
        # weight is never materialised (with out_dim 65536 that saves several passes over a
        # 64 MB tensor in every forward and backward); same value up to fp32 rounding.
        scale = self.weight_g / torch.linalg.vector_norm(self.weight_v, dim=1, keepdim=True)
        return F.linear(x, self.weight_v) * scale.squeeze(1)


class DINOHead(nn.Module):
    """MLP -> L2 normalise -> weight-normalised prototypes: (B, in_dim) -> (B, out_dim)."""

    def __init__(self, in_dim: int, out_dim: int, use_bn: bool = False,
                 norm_last_layer: bool = True, nlayers: int = 3, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        if nlayers == 1:
            self.mlp = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for d_in, d_out in zip(dims[:-1], dims[1:]):
                layers.append(nn.Linear(d_in, d_out))
                if use_bn:
                    layers.append(nn.BatchNorm1d(d_out))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.apply(_init_linear)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.data.fill_(1)
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


def _init_linear(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
