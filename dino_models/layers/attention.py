"""Multi-head self-attention with the official parameter names (``qkv``, ``proj``).

Every block's attention is one ``scaled_dot_product_attention`` call (or, with
``fused_attn=False``, the same function as two batched products and a softmax). Exported with
the dynamo exporter, each call becomes one MatMul -> Softmax -> MatMul chain (or one ONNX
``Attention`` op at opset 23): the shape TensorRT and ONNX Runtime fuse into a single attention
kernel. The attention *probabilities* the toolkit shows are computed beside it, for the [CLS]
query only (:meth:`Attention.probs`), so they never break that fusion.

DINOv3's attention adds two things, both off by default: a rotary position table applied to the
queries and keys (:mod:`.rope`; passed per call, since it depends on the input size) and the
masked key bias (:class:`~.key_bias.KeyMaskedBiasLinear`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .key_bias import KeyMaskedBiasLinear
from .rope import rope_apply


def attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention (B, heads, Nq, Nk) of queries (B, heads, Nq, d) over keys (B, heads,
    Nk, d); the scale is applied after the product, as the official ``get_last_selfattention``."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                     dropout: nn.Module | None = None) -> torch.Tensor:
    """softmax(scale * q k^T) v for (B, heads, N, d) inputs, as batched products.

    The scale is applied inside the first product (``baddbmm``'s alpha), which saves a pass
    over q compared with scaling it first.
    """
    B, H, N, d = q.shape
    q3, k3, v3 = q.reshape(B * H, N, d), k.reshape(B * H, N, d), v.reshape(B * H, N, d)
    scores = torch.baddbmm(q3.new_zeros(()).expand(B * H, N, N), q3, k3.transpose(1, 2),
                           beta=0.0, alpha=scale)
    probs = scores.softmax(dim=-1)
    if dropout is not None:
        probs = dropout(probs)
    return torch.bmm(probs, v3).view(B, H, N, d)


class Attention(nn.Module):
    """Tokens (B, N, D) -> (B, N, D); ``fused_attn`` picks the kernel.

    Which kernel is faster depends on the device and dtype: on CPU in bf16 the flash kernel is
    1.7x slower in forward and 1.5x (224 px) to 6x (96 px) slower in forward + backward than
    two batched products and a softmax (measured on the project's CPU, ViT-Tiny shapes); on
    GPUs and in fp32 the fused kernel wins, so it is the default.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 proj_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 mask_k_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not a multiple of {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True
        linear = KeyMaskedBiasLinear if mask_k_bias else nn.Linear
        self.qkv = linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def split_qkv(self, x: torch.Tensor, rope: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens (B, N, D) -> q, k, v, each (B, heads, N, D/heads); with ``rope`` (2, N,
        D/heads), sin and cos per token, q and k rotated by it."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if rope is not None:
            q, k = rope_apply(q, rope), rope_apply(k, rope)
        return q, k, v

    def probs(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, heads, Nq, Nk), see :func:`attention_probs`."""
        return attention_probs(q, k, self.scale)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v, (B, heads, N, d), by the kernel ``fused_attn`` selects."""
        if self.fused_attn:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        return matmul_attention(q, k, v, self.scale, self.attn_drop)

    def project(self, y: torch.Tensor) -> torch.Tensor:
        """Per-head outputs (B, heads, N, d) -> tokens (B, N, D) through ``proj``."""
        return self.proj_drop(self.proj(y.transpose(1, 2).flatten(2)))

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        return self.project(self.attend(*self.split_qkv(x, rope)))
