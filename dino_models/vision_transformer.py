"""Vision Transformer with the parameter names and numerics of the official DINO backbone.

The transformer blocks, MLP and patch embedding are timm's; what is DINO-specific lives here:
the official bicubic position-embedding interpolation (scale factor with a +0.1 offset), the
last block's self-attention probabilities, and the single-pass method that export and runtime use.
Official state dicts (``facebookresearch/dino`` ``vision_transformer.py``) load with ``strict=True``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.layers.attention import Attention as TimmAttention
from timm.models.vision_transformer import Block

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class Attention(TimmAttention):
    """timm's attention (same parameters) with a choice of kernel: ``fused_attn`` True runs
    ``scaled_dot_product_attention``; False runs :func:`matmul_attention`.

    Which is faster depends on the device and dtype: on CPU in bf16 the flash kernel is
    1.7x slower in forward and 1.5x (224 px) to 6x (96 px) slower in forward + backward than
    two batched products and a softmax (measured on the project's CPU, ViT-Tiny shapes); on
    GPUs and in fp32 the fused kernel wins. :meth:`VisionTransformer.set_fused_attention`
    switches every block.
    """

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None,
                is_causal: bool = False) -> torch.Tensor:
        if self.fused_attn or attn_mask is not None or is_causal or self.gate is not None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = matmul_attention(self.q_norm(q), self.k_norm(k), v, self.scale, self.attn_drop)
        y = y.transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj_drop(self.proj(self.norm(y)))


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


class VisionTransformer(nn.Module):
    """ViT backbone: ``forward`` returns the [CLS] token after the final norm, shape (B, D).

    The constructor mirrors the official signature. ``img_size`` only sets the size of the
    stored position-embedding grid; any input whose sides are multiples of ``patch_size`` works.
    """

    def __init__(
        self,
        img_size: list[int] | int = (224,),
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
        **kwargs,
    ) -> None:
        super().__init__()
        if qk_scale is not None and qk_scale != (embed_dim // num_heads) ** -0.5:
            # timm's fused attention uses head_dim ** -0.5; no official DINO model sets another.
            raise ValueError(f"qk_scale={qk_scale} is not supported: only head_dim ** -0.5")
        grid_side = (img_size[0] if isinstance(img_size, (list, tuple)) else img_size) // patch_size
        self.num_features = self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        # strict_img_size=False: the grid size only sizes pos_embed, inputs may be any multiple.
        self.patch_embed = PatchEmbed(
            img_size=grid_side * patch_size, patch_size=patch_size, in_chans=in_chans,
            embed_dim=embed_dim, strict_img_size=False)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_side * grid_side + 1, embed_dim))
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # official decay rule
        self.blocks = nn.ModuleList([
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  proj_drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i],
                  norm_layer=norm_layer, attn_layer=Attention)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    def set_fused_attention(self, fused: bool) -> None:
        """Every block's attention kernel: fused (default) or batched products (see
        :class:`Attention`); the result is the same function up to rounding."""
        for blk in self.blocks:
            blk.attn.fused_attn = fused

    # -- position embedding ---------------------------------------------------------------
    def pos_embed_for_size(self, height: int, width: int) -> torch.Tensor:
        """Position embedding for an input of ``height`` x ``width`` pixels.

        Returns shape (1, 1 + height/p * width/p, D), computed exactly as the official
        ``interpolate_pos_encoding``: bicubic with ``scale_factor`` (not ``size``) and the +0.1
        offset of facebookresearch/dino issue #8, so outputs match it at every size.
        """
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {p}")
        n_stored = self.pos_embed.shape[1] - 1
        rows, cols = height // p, width // p
        if rows * cols == n_stored and rows == cols:
            return self.pos_embed
        side = math.sqrt(n_stored)
        dim = self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].reshape(1, int(side), int(side), dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side),
                             mode="bicubic")
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position grid {tuple(grid.shape[-2:])} != {(rows, cols)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim)
        return torch.cat((self.pos_embed[:, :1], grid), dim=1)

    def interpolate_pos_encoding(self, x: torch.Tensor, w: int, h: int) -> torch.Tensor:
        """Official name and argument order: ``w`` is the input height, ``h`` its width."""
        return self.pos_embed_for_size(w, h)

    def prepare_tokens(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> tokens (B, 1 + H/p * W/p, D) with [CLS] first.

        ``pos_embed`` (1, 1 + N, D) replaces the interpolated one; export passes a precomputed
        constant so that no bicubic resize ends up in the graph. ``mask`` (B, N) bool and
        ``mask_token`` (D,): the patch embeddings at the True positions are replaced by the
        mask token before the position embedding is added (iBOT's masked student input).
        """
        if pos_embed is None:
            pos_embed = self.pos_embed_for_size(x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(x)
        if mask is not None:
            tokens = torch.where(mask.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        return self.pos_drop(tokens + pos_embed)

    # -- official public methods ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> [CLS] after the final norm (B, D).

        The official result; only the last block differs in how it gets there: its output is
        needed at the [CLS] position alone, so its projection and MLP run on one token (and, in
        training, its backward does too): about 6% of a ViT-Tiny/16 step saved.
        """
        x = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            x = blk(x)
        cls, _ = _last_block_cls(self.blocks[-1], x)
        return self.norm(cls)[:, 0]

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> every token after the final norm (B, 1 + N, D), [CLS] first.

        With ``mask`` and ``mask_token`` the masked patches are hidden from the input (see
        :meth:`prepare_tokens`); iBOT's student predicts them from the rest.
        """
        x = self.prepare_tokens(x, mask=mask, mask_token=mask_token)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> last block's attention probabilities (B, heads, N+1, N+1)."""
        x = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            x = blk(x)
        last = self.blocks[-1]
        q, k, _ = _split_qkv(last, last.norm1(x))
        return _attention_probs(q, k, last.attn.scale)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """Normalised tokens (B, N+1, D) of the last ``n`` blocks, oldest first."""
        x = self.prepare_tokens(x)
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if len(self.blocks) - i <= n:
                out.append(self.norm(x))
        return out

    # -- single-pass methods for export and runtime ---------------------------------------
    def forward_features_and_attention(
        self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass: CLS (B, D), normalised patch tokens (B, N, D), CLS attention (B, heads, N).

        The attention is the last block's [CLS] row over the patch tokens, i.e.
        ``get_last_selfattention(x)[:, :, 0, 1:]``. Every block uses fused attention; the CLS
        row's probabilities are computed on their own, which costs one query instead of N+1.
        """
        x = self.prepare_tokens(x, pos_embed)
        for blk in self.blocks[:-1]:
            x = blk(x)
        last = self.blocks[-1]
        h = last.norm1(x)
        q, k, v = _split_qkv(last, h)
        cls_attn = _attention_probs(q[:, :, :1], k, last.attn.scale)[:, :, 0, 1:]
        y = F.scaled_dot_product_attention(q, k, v)
        x = x + last.drop_path1(last.attn.proj(y.transpose(1, 2).flatten(2)))
        x = x + last.drop_path2(last.mlp(last.norm2(x)))
        x = self.norm(x)
        return x[:, 0], x[:, 1:], cls_attn

    def forward_cls_and_attention(
        self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS (B, D) and CLS attention (B, heads, N), without the last block's patch tokens.

        The last block's output is needed only at the [CLS] position, so its projection and MLP
        run on one token instead of N+1 (about 1/depth of the model's compute saved).
        """
        x = self.prepare_tokens(x, pos_embed)
        for blk in self.blocks[:-1]:
            x = blk(x)
        cls, probs = _last_block_cls(self.blocks[-1], x)
        return self.norm(cls)[:, 0], probs[:, :, 0, 1:]


def _last_block_cls(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``block(x)[:, :1]`` computed for the [CLS] token only, and its attention probabilities.

    Keys and values come from every token; the query, projection and MLP from [CLS] alone.
    Returns the token (B, 1, D) and the probabilities (B, heads, 1, N+1).
    """
    attn = block.attn
    q, k, v = _split_qkv(block, block.norm1(x))
    probs = _attention_probs(q[:, :, :1], k, attn.scale)        # (B, heads, 1, N+1)
    y = (attn.attn_drop(probs) @ v).transpose(1, 2).flatten(2)  # (B, 1, D)
    y = attn.proj_drop(attn.proj(attn.norm(y)))
    c = x[:, :1] + block.drop_path1(block.ls1(y))
    c = c + block.drop_path2(block.ls2(block.mlp(block.norm2(c))))
    return c, probs


def _split_qkv(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised tokens (B, N, D) -> q, k, v, each (B, heads, N, D/heads)."""
    attn = block.attn
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    return qkv.unbind(0)


def _attention_probs(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """Softmax attention (B, heads, Nq, Nk); scale applied after the product, as officially."""
    return ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, nn.LayerNorm):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)


def _vit(patch_size: int, embed_dim: int, num_heads: int, **kwargs) -> VisionTransformer:
    """The official ViT recipe: MLP ratio 4, qkv bias, LayerNorm eps 1e-6; ``depth`` overridable."""
    return VisionTransformer(patch_size=patch_size, embed_dim=embed_dim, num_heads=num_heads,
                             mlp_ratio=4, qkv_bias=True, norm_layer=LayerNorm6, **kwargs)


def vit_tiny(patch_size: int = 16, **kwargs) -> VisionTransformer:
    return _vit(patch_size, 192, 3, **{"depth": 12, **kwargs})


def vit_small(patch_size: int = 16, **kwargs) -> VisionTransformer:
    return _vit(patch_size, 384, 6, **{"depth": 12, **kwargs})


def vit_base(patch_size: int = 16, **kwargs) -> VisionTransformer:
    return _vit(patch_size, 768, 12, **{"depth": 12, **kwargs})


def vit_large(patch_size: int = 16, **kwargs) -> VisionTransformer:
    """Not released by DINO; ViT-L/16 as in timm and DINOv2 (1024 wide, 24 deep, 16 heads)."""
    return _vit(patch_size, 1024, 16, **{"depth": 24, **kwargs})
