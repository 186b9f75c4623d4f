"""Vision Transformer with the parameter names and numerics of the official DINO backbone.

The building blocks live in :mod:`dino_models.layers` (shared with DINOv2); what is specific to
this model family lives here: the official bicubic position-embedding interpolation, the last
block's self-attention probabilities, and the single-pass method that export and runtime use.
Official state dicts (``facebookresearch/dino`` ``vision_transformer.py``) load with
``strict=True``. The DINOv2 models (:mod:`dino_models.dinov2`) are this class with registers,
LayerScale and their own defaults; the DINOv3 ViTs (:mod:`dino_models.dinov3`) change what
three hooks do (:meth:`VisionTransformer.embed`: rotary positions instead of an added embedding;
:meth:`~VisionTransformer.norm_tokens` and :meth:`~VisionTransformer.norm_cls`: untied final
norms) and share every method that export and runtime call.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import FFN_LAYERS, Block, PatchEmbed, swiglu_hidden_features, trunc_normal_

LayerNorm6 = partial(nn.LayerNorm, eps=1e-6)


class SinglePass(NamedTuple):
    """What one pass computes for export and runtime (B images, N patches, R registers).

    cls (B, D) and patch (B, N, D) after the final norm (patch is None when not asked for);
    attn (B, heads, N): the last block's [CLS] attention over the patch tokens;
    attn_registers (B, heads, R): the same row over the register (DINOv3: storage) tokens
    (R = 0 without them). Backbones without attention (DINOv3's ConvNeXts) give None for both:
    their cls is the pooled last stage, patch its (B, N, D) tokens, row-major.
    """

    cls: torch.Tensor
    attn: torch.Tensor | None
    attn_registers: torch.Tensor | None
    patch: torch.Tensor | None


class VisionTransformer(nn.Module):
    """ViT backbone: ``forward`` returns the [CLS] token after the final norm, shape (B, D).

    The constructor mirrors the official DINO signature; the keywords after ``norm_layer`` are
    DINOv2's (LayerScale ``init_values``, ``ffn_layer`` "mlp" or "swiglu", register tokens,
    position-embedding interpolation), off by default. ``img_size`` only sets the size of the
    stored position-embedding grid; any input whose sides are multiples of ``patch_size`` works.
    """

    family = "dino"
    has_attention = True     # a last-block [CLS] attention to export and show (ConvNeXts: False)

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
        *,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        ffn_layer: str = "mlp",
        ffn_hidden: int | None = None,
        init_values: float | None = None,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
        **kwargs,
    ) -> None:
        super().__init__()
        if qk_scale is not None and qk_scale != (embed_dim // num_heads) ** -0.5:
            # fused attention uses head_dim ** -0.5; no official DINO model sets another.
            raise ValueError(f"qk_scale={qk_scale} is not supported: only head_dim ** -0.5")
        if ffn_layer not in FFN_LAYERS:
            raise ValueError(f"ffn_layer {ffn_layer!r}: expected one of {', '.join(FFN_LAYERS)}")
        grid_side = (img_size[0] if isinstance(img_size, (list, tuple)) else img_size) // patch_size
        self.num_features = self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.num_register_tokens = num_register_tokens
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid_side * grid_side + 1, embed_dim))
        self.register_tokens = (nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
                                if num_register_tokens else None)
        self.pos_drop = nn.Dropout(p=drop_rate)
        if ffn_hidden is None:
            ffn_hidden = int(embed_dim * mlp_ratio)
            ffn_hidden = swiglu_hidden_features(ffn_hidden) if ffn_layer == "swiglu" else ffn_hidden
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # official decay rule
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, ffn_hidden, qkv_bias=qkv_bias, proj_bias=proj_bias,
                  ffn_bias=ffn_bias, ffn_layer=ffn_layer, proj_drop=drop_rate,
                  attn_drop=attn_drop_rate, init_values=init_values, drop_path=dpr[i],
                  norm_layer=norm_layer)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """The official DINO initialisation: truncated normal (std 0.02) for the position
        embedding, [CLS] and every Linear (zero bias), LayerNorm 1 and 0. The order of the
        random draws is part of the contract: a seeded model is the same on every release."""
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            trunc_normal_(self.register_tokens, std=0.02)
        self.apply(_init_weights)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: [CLS] and the registers."""
        return 1 + self.num_register_tokens

    @property
    def num_registers(self) -> int:
        """Tokens between [CLS] and the patches: DINOv2's registers, DINOv3's storage tokens
        (the name export and runtime use for every backbone)."""
        return self.num_register_tokens

    def set_fused_attention(self, fused: bool) -> None:
        """Every block's attention kernel: fused (default) or batched products (see
        :class:`~dino_models.layers.Attention`); the result is the same function up to rounding."""
        for blk in self.blocks:
            blk.attn.fused_attn = fused

    # -- position embedding ---------------------------------------------------------------
    def pos_embed_for_size(self, height: int, width: int) -> torch.Tensor:
        """Position embedding for an input of ``height`` x ``width`` pixels.

        Returns shape (1, 1 + height/p * width/p, D), computed exactly as the official
        ``interpolate_pos_encoding``: bicubic with ``scale_factor`` and the +0.1 offset of
        facebookresearch/dino issue #8 (DINO, DINOv2); or, with ``interpolate_offset`` 0, to the
        target ``size`` (DINOv2 with registers, with ``interpolate_antialias``); so outputs
        match the official code at every size.
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
        if self.interpolate_offset:
            resize = {"scale_factor": ((rows + self.interpolate_offset) / side,
                                       (cols + self.interpolate_offset) / side)}
        else:
            resize = {"size": (rows, cols)}
        grid = F.interpolate(grid, mode="bicubic", antialias=self.interpolate_antialias, **resize)
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
        """Images (B, 3, H, W) -> tokens (B, 1 + R + H/p * W/p, D): [CLS], R registers, patches.

        ``pos_embed`` (1, 1 + N, D) replaces the interpolated one; export passes a precomputed
        constant so that no bicubic resize ends up in the graph. ``mask`` (B, N) bool and
        ``mask_token`` (D,): the patch embeddings at the True positions are replaced by the
        mask token before the position embedding is added (iBOT's masked student input).
        Registers get no position embedding, as officially.
        """
        if pos_embed is None:
            pos_embed = self.pos_embed_for_size(x.shape[-2], x.shape[-1])
        tokens = self.patch_embed(x)
        if mask is not None:
            tokens = torch.where(mask.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = self.pos_drop(tokens + pos_embed)
        if self.register_tokens is None:
            return tokens
        registers = self.register_tokens.expand(tokens.shape[0], -1, -1)
        return torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)

    # -- hooks a family may change (DINOv3: rotary positions, untied norms) -------------
    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images (B, 3, H, W) -> (tokens entering the first block (B, T, D), the rotary
        table every block's attention takes, or None).

        Here the position embedding is added to the tokens (:meth:`prepare_tokens`), so there
        is no table; ``pos_embed`` is what :meth:`pos_embed_for_size` gives.
        """
        return self.prepare_tokens(x, pos_embed, mask, mask_token), None

    def norm_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm of whole sequences (B, 1 + R + N, D)."""
        return self.norm(x)

    def norm_cls(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm of [CLS] alone, (B, 1, D)."""
        return self.norm(x)

    def _run_blocks(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens entering the last block (B, T, D), and the rotary table (or None)."""
        x, rope = self.embed(x, pos_embed)
        for blk in self.blocks[:-1]:
            x = blk(x, rope)
        return x, rope

    # -- official public methods ------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> [CLS] after the final norm (B, D).

        The official result; only the last block differs in how it gets there: its output is
        needed at the [CLS] position alone, so its projection and MLP run on one token (and, in
        training, its backward does too): about 6% of a ViT-Tiny/16 step saved.
        """
        cls, _ = self.blocks[-1].forward_cls(*self._run_blocks(x))
        return self.norm_cls(cls)[:, 0]

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """Images (B, 3, H, W) -> every token after the final norm (B, 1 + R + N, D), [CLS]
        first, then the registers.

        With ``mask`` and ``mask_token`` the masked patches are hidden from the input (see
        :meth:`prepare_tokens`); iBOT's student predicts them from the rest.
        """
        x, rope = self.embed(x, mask=mask, mask_token=mask_token)
        for blk in self.blocks:
            x = blk(x, rope)
        return self.norm_tokens(x)

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> last block's attention probabilities (B, heads, T, T) over all
        T = 1 + R + N tokens ([CLS], registers, patches)."""
        last = self.blocks[-1]
        x, rope = self._run_blocks(x)
        q, k, _ = last.attn.split_qkv(last.norm1(x), rope)
        return last.attn.probs(q, k)

    def get_intermediate_layers(self, x: torch.Tensor, n: int = 1) -> list[torch.Tensor]:
        """Normalised tokens (B, 1 + N, D) of the last ``n`` blocks, oldest first."""
        x, rope = self.embed(x)
        out = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope)
            if len(self.blocks) - i <= n:
                out.append(self.norm_tokens(x))
        return out

    # -- single-pass methods for export and runtime ---------------------------------------
    def forward_single_pass(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
                            patch: bool = True) -> SinglePass:
        """Images (B, 3, H, W) -> :class:`SinglePass` in one pass through the blocks.

        Every block runs its fused attention; the last block's [CLS] row of probabilities is
        computed beside it, for one query. Without ``patch`` the last block's projection and
        feed-forward run on [CLS] alone (about 1/depth of the model's compute saved).
        """
        x, rope = self._run_blocks(x, pos_embed)
        last, r = self.blocks[-1], self.num_prefix_tokens
        if patch:
            tokens, probs = last.forward_with_cls_attention(x, rope)
            tokens = self.norm_tokens(tokens)
            return SinglePass(tokens[:, 0], probs[:, :, r:], probs[:, :, 1:r], tokens[:, r:])
        cls, probs = last.forward_cls(x, rope)
        return SinglePass(self.norm_cls(cls)[:, 0], probs[:, :, r:], probs[:, :, 1:r], None)

    def forward_features_and_attention(
        self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass: CLS (B, D), normalised patch tokens (B, N, D), CLS attention (B, heads, N).

        The attention is the last block's [CLS] row over the patch tokens, i.e.
        ``get_last_selfattention(x)[:, :, 0, 1 + R:]``.
        """
        out = self.forward_single_pass(x, pos_embed, patch=True)
        return out.cls, out.patch, out.attn

    def forward_cls_and_attention(
        self, x: torch.Tensor, pos_embed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """CLS (B, D) and CLS attention (B, heads, N), without the last block's patch tokens."""
        out = self.forward_single_pass(x, pos_embed, patch=False)
        return out.cls, out.attn


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


def blocks_taken(n, count: int):
    """``get_intermediate_layers``' ``n`` (the last n blocks, or a list of indices) -> indices."""
    return range(count - n, count) if isinstance(n, int) else n


def intermediate_patches(out: list, take, model, x: torch.Tensor, reshape: bool) -> list:
    """The patch tokens of the blocks ``out`` holds (one per index of ``take``, else a
    ValueError as the official methods raise): (B, N, D), or (B, D, H/p, W/p) with
    ``reshape``; the prefix ([CLS], registers or storage tokens) dropped."""
    if len(out) != len(take):
        raise ValueError(f"blocks {list(take)} asked, the model has {len(model.blocks)}")
    patches = [o[:, model.num_prefix_tokens:] for o in out]
    if reshape:
        gh, gw = x.shape[-2] // model.patch_size, x.shape[-1] // model.patch_size
        patches = [p.reshape(x.shape[0], gh, gw, -1).permute(0, 3, 1, 2).contiguous()
                   for p in patches]
    return patches
