"""Pre-norm transformer block: attention and feed-forward residual branches, with optional
LayerScale and stochastic depth; plus the last-block variants that also return the [CLS]
query's attention probabilities.

Parameter names (``norm1``, ``attn``, ``ls1``, ``norm2``, ``mlp``, ``ls2``) are those of the
official DINO, DINOv2 and DINOv3 checkpoints. Every method takes an optional ``rope`` table
(2, N, D/heads) for DINOv3's rotary positions; None (DINO, DINOv2) leaves attention as it was.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .attention import Attention
from .drop_path import DropPath
from .layer_scale import LayerScale
from .mlp import Mlp
from .swiglu_ffn import SplitSwiGLUFFN, SwiGLUFFN

# The feed-forward networks a block can hold: "swiglu" is DINOv2's packed layout (w12, w3),
# "swiglu_split" DINOv3's (w1, w2, w3).
FFN_LAYERS = {"mlp": Mlp, "swiglu": SwiGLUFFN, "swiglu_split": SplitSwiGLUFFN}


class Block(nn.Module):
    """Tokens (B, N, D) -> (B, N, D): ``x + ls1(attn(norm1(x)))``, then ``+ ls2(mlp(norm2(x)))``.

    ``ffn_hidden`` is the feed-forward width (for the SwiGLUs, the gate width). LayerScale is
    present when ``init_values`` is set (DINOv2, DINOv3), identity otherwise (DINO);
    ``mask_k_bias`` masks the key third of the qkv bias (DINOv3).
    """

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, qkv_bias: bool = False,
                 proj_bias: bool = True, ffn_bias: bool = True, ffn_layer: str = "mlp",
                 proj_drop: float = 0.0, attn_drop: float = 0.0,
                 init_values: float | None = None, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
                 mask_k_bias: bool = False) -> None:
        super().__init__()
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"ffn_layer {ffn_layer!r}: expected one of {', '.join(FFN_LAYERS)}")
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias,
                              attn_drop=attn_drop, proj_drop=proj_drop, mask_k_bias=mask_k_bias)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = (Mlp(dim, ffn_hidden, drop=proj_drop, bias=ffn_bias) if ffn_layer == "mlp"
                    else FFN_LAYERS[ffn_layer](dim, ffn_hidden, bias=ffn_bias))
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), rope)))
        return x + self._ffn(x)

    def _ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path2(self.ls2(self.mlp(self.norm2(x))))

    def forward_with_cls_attention(self, x: torch.Tensor, rope: torch.Tensor | None = None
                                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(x)`` (B, N, D) and the [CLS] query's attention probabilities (B, heads, N).

        The probabilities are computed for the first token's query alone (one row, not N), and
        the block's own attention stays one fused call.
        """
        attn = self.attn
        q, k, v = attn.split_qkv(self.norm1(x), rope)
        cls_probs = attn.probs(q[:, :, :1], k)[:, :, 0]
        x = x + self.drop_path1(self.ls1(attn.project(attn.attend(q, k, v))))
        return x + self._ffn(x), cls_probs

    def forward_cls(self, x: torch.Tensor, rope: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(x)[:, :1]`` (B, 1, D) computed for the [CLS] token only, and its attention
        probabilities (B, heads, N).

        Keys and values come from every token; the query, projection and feed-forward from
        [CLS] alone, which saves about 1/depth of a model's compute when only [CLS] is needed.
        """
        attn = self.attn
        q, k, v = attn.split_qkv(self.norm1(x), rope)
        probs = attn.probs(q[:, :, :1], k)                       # (B, heads, 1, N)
        y = attn.project(attn.attn_drop(probs) @ v)              # (B, 1, D)
        c = x[:, :1] + self.drop_path1(self.ls1(y))
        return c + self._ffn(c), probs[:, :, 0]
