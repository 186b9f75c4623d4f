"""DINOv3 ViT backbones with the parameter names and numerics of facebookresearch/dinov3.

:class:`Dinov3VisionTransformer` is a :class:`~dino_models.vision_transformer.VisionTransformer`
(every method export and runtime call is the base's) with DINOv3's parts:

  * no learned position embedding: 2D rotary positions (:mod:`.layers.rope`) on the queries and
    keys of the patch tokens in every block, base 100, coordinates normalised per side;
  * 4 storage tokens after [CLS] (DINOv2's registers by another name), without positions;
  * LayerScale, LayerNorm eps 1e-5 (the official ``"layernormbf16"``), the key third of the qkv
    bias masked (``mask_k_bias``), an MLP or a SwiGLU with separate ``w1``/``w2``;
  * untied final norms where a checkpoint has them: ``cls_norm`` normalises [CLS] and the
    storage tokens (``untie_cls_and_patch_norms``); ``local_cls_norm``
    (``untie_global_and_local_cls_norm``: ViT-7B, ViT-L SAT-493M) is a training-only norm of the
    local crops' [CLS], held so that the official files load strictly, and never used here, as
    the official model never uses it at inference.

The sizes (:data:`SIZES`) are those of ``dinov3/hub/backbones.py``. The official code and its
weights are under the DINOv3 License; this is the toolkit's own implementation, checked against
the official model through reference vectors (tests/models/vectors).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from .layers import Block, PatchEmbed, RopePositionEmbedding, swiglu_hidden_features, trunc_normal_
from .layers.key_bias import KeyMaskedBiasLinear
from .layers.layer_scale import LayerScale
from .vision_transformer import VisionTransformer, blocks_taken, intermediate_patches

NUM_STORAGE_TOKENS = 4      # every released DINOv3 ViT has 4
# The official norm names: "layernormbf16" (every release) is a LayerNorm with eps 1e-5.
NORM_EPS = {"layernorm": 1e-6, "layernormbf16": 1e-5}
# The official ffn_layer names: the SwiGLUs differ in the rounding of their width.
SWIGLU_ALIGN = {"swiglu": 8, "swiglu32": 32, "swiglu64": 64, "swiglu128": 128}


class Dinov3VisionTransformer(VisionTransformer):
    """DINOv3 ViT: ``forward`` returns the normalised [CLS] token (B, D).

    The keywords are the official ``DinoVisionTransformer``'s, and two of this toolkit's for
    checkpoints that say more than a name: ``ffn_hidden`` (the feed-forward width itself) and
    ``layer_norm_eps`` (instead of the norm name's). The RoPE coordinate augmentations
    (``pos_embed_rope_shift/jitter/rescale_coords``) are training-time only, off at inference in
    the official model too; they are accepted for the official signature and have no effect.
    """

    family = "dinov3"

    def __init__(self, *, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 pos_embed_rope_base: float = 100.0,
                 pos_embed_rope_normalize_coords: str = "separate",
                 pos_embed_rope_shift_coords: float | None = None,
                 pos_embed_rope_jitter_coords: float | None = None,
                 pos_embed_rope_rescale_coords: float | None = None,
                 pos_embed_rope_dtype: str = "fp32", embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, ffn_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path_rate: float = 0.0, layerscale_init: float | None = 1e-5,
                 norm_layer: str = "layernormbf16", ffn_layer: str = "mlp",
                 ffn_bias: bool = True, proj_bias: bool = True,
                 n_storage_tokens: int = NUM_STORAGE_TOKENS, mask_k_bias: bool = True,
                 untie_cls_and_patch_norms: bool = False,
                 untie_global_and_local_cls_norm: bool = False,
                 ffn_hidden: int | None = None, layer_norm_eps: float | None = None) -> None:
        # The base constructor builds a learned position embedding and DINO's blocks; the parts
        # differ here, and the methods are the base's (they reach the parts through the hooks).
        nn.Module.__init__(self)
        if norm_layer not in NORM_EPS:
            raise ValueError(f"norm_layer {norm_layer!r}: expected one of {', '.join(NORM_EPS)}")
        if ffn_layer != "mlp" and ffn_layer not in SWIGLU_ALIGN:
            raise ValueError(f"ffn_layer {ffn_layer!r}: expected mlp or one of "
                             f"{', '.join(SWIGLU_ALIGN)}")
        if pos_embed_rope_dtype != "fp32":
            raise ValueError(f"pos_embed_rope_dtype {pos_embed_rope_dtype!r}: only fp32, the "
                             "setting of every released backbone, is supported")
        if embed_dim % (4 * num_heads):
            raise ValueError(f"RoPE needs a head width divisible by 4: {embed_dim} / {num_heads}")
        norm = partial(nn.LayerNorm, eps=NORM_EPS[norm_layer] if layer_norm_eps is None
                       else layer_norm_eps)
        self.num_features = self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_size = patch_size
        self.img_size = img_size   # the training size; any multiple of patch_size runs
        self.num_register_tokens = n_storage_tokens
        self.train_rope_augmentation = (pos_embed_rope_shift_coords, pos_embed_rope_jitter_coords,
                                        pos_embed_rope_rescale_coords)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.storage_tokens = (nn.Parameter(torch.zeros(1, n_storage_tokens, embed_dim))
                               if n_storage_tokens else None)
        self.rope_embed = RopePositionEmbedding(embed_dim // num_heads, pos_embed_rope_base,
                                                pos_embed_rope_normalize_coords)
        if ffn_hidden is None:
            ffn_hidden = int(embed_dim * ffn_ratio)
            if ffn_layer != "mlp":
                ffn_hidden = swiglu_hidden_features(ffn_hidden, SWIGLU_ALIGN[ffn_layer])
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, ffn_hidden, qkv_bias=qkv_bias, proj_bias=proj_bias,
                  ffn_bias=ffn_bias, ffn_layer="mlp" if ffn_layer == "mlp" else "swiglu_split",
                  init_values=layerscale_init, drop_path=drop_path_rate, norm_layer=norm,
                  mask_k_bias=mask_k_bias)
            for _ in range(depth)])
        self.norm = norm(embed_dim)
        self.cls_norm = norm(embed_dim) if untie_cls_and_patch_norms else None
        self.local_cls_norm = norm(embed_dim) if untie_global_and_local_cls_norm else None
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.init_weights()

    def init_weights(self) -> None:
        """DINOv3's initialisation: [CLS] and storage tokens N(0, 0.02), mask token 0, Linear
        weights truncated normal (0.02) with zero biases, the patch embedding uniform in
        +-1/sqrt(fan_in), norms 1 and 0, LayerScale at its initial value."""
        nn.init.normal_(self.cls_token, std=0.02)
        if self.storage_tokens is not None:
            nn.init.normal_(self.storage_tokens, std=0.02)
        nn.init.zeros_(self.mask_token)
        bound = (self.patch_embed.proj.in_channels * self.patch_size ** 2) ** -0.5
        nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound)
        with torch.no_grad():
            self.rope_embed.periods.copy_(self.rope_embed.default_periods())
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            if isinstance(m, KeyMaskedBiasLinear):
                m.reset_bias_mask()
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
            elif isinstance(m, LayerScale):
                nn.init.constant_(m.gamma, m.init_values)

    # -- positions: the rotary table ------------------------------------------------------
    def pos_embed_for_size(self, height: int, width: int) -> torch.Tensor:
        """The rotary table for a ``height`` x ``width`` input: (2, 1 + R + N, D/heads), the
        sin and cos of every token's angles, [CLS] and storage tokens first with sin 0 and
        cos 1 (they are not rotated: the identity, exactly). Export stores it as a constant."""
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {p}")
        table = self.rope_embed(height // p, width // p)                  # (2, N, d)
        prefix = torch.zeros(2, self.num_prefix_tokens, table.shape[-1], device=table.device)
        prefix[1] = 1.0
        return torch.cat((prefix, table), dim=1)

    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, mask_token: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) -> ([CLS], storage tokens, patches (B, 1 + R + N, D), the rotary
        table (2, 1 + R + N, D/heads)). ``pos_embed``: a precomputed table for this size;
        ``mask`` (B, N) bool: those patch embeddings replaced by ``mask_token`` (default the
        model's)."""
        rope = self.pos_embed_for_size(*x.shape[-2:]) if pos_embed is None else pos_embed
        tokens = self.patch_embed(x)
        if mask is not None:
            token = self.mask_token if mask_token is None else mask_token
            tokens = torch.where(mask.unsqueeze(-1), token.to(tokens.dtype), tokens)
        parts = [self.cls_token.expand(tokens.shape[0], -1, -1)]
        if self.storage_tokens is not None:
            parts.append(self.storage_tokens.expand(tokens.shape[0], -1, -1))
        return torch.cat((*parts, tokens), dim=1), rope

    def prepare_tokens(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None) -> torch.Tensor:
        """The tokens of :meth:`embed` (positions are applied inside attention, not here)."""
        return self.embed(x, pos_embed, mask, mask_token)[0]

    # -- final norms ----------------------------------------------------------------------
    def norm_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1 + R + N, D): [CLS] and storage tokens by ``cls_norm`` when untied."""
        if self.cls_norm is None:
            return self.norm(x)
        r = self.num_prefix_tokens
        return torch.cat((self.cls_norm(x[:, :r]), self.norm(x[:, r:])), dim=1)

    def norm_cls(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.cls_norm is None else self.cls_norm(x)

    # -- official public methods ------------------------------------------------------------
    def forward(self, x: torch.Tensor, is_training: bool = False) -> torch.Tensor | dict:
        """[CLS] after the final norm (B, D); the :meth:`forward_features` dictionary with
        ``is_training`` (the official signature)."""
        return self.forward_features(x) if is_training else super().forward(x)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None
                         ) -> dict[str, Any]:
        """The official dictionary: ``x_norm_clstoken`` (B, D), ``x_storage_tokens`` (B, R, D),
        ``x_norm_patchtokens`` (B, N, D), ``x_prenorm`` (B, 1 + R + N, D), ``masks``."""
        tokens, rope = self.embed(x, mask=masks)
        for blk in self.blocks:
            tokens = blk(tokens, rope)
        normed, r = self.norm_tokens(tokens), self.num_prefix_tokens
        return {"x_norm_clstoken": normed[:, 0], "x_storage_tokens": normed[:, 1:r],
                "x_norm_patchtokens": normed[:, r:], "x_prenorm": tokens, "masks": masks}

    def get_intermediate_layers(self, x: torch.Tensor, *, n: int | list[int] = 1,
                                reshape: bool = False, return_class_token: bool = False,
                                return_extra_tokens: bool = False, norm: bool = True) -> tuple:
        """The official DINOv3 method: patch tokens (B, N, D), or (B, D, H/p, W/p) with
        ``reshape``, of the last ``n`` blocks (or of the blocks listed in ``n``); with
        ``return_class_token`` / ``return_extra_tokens`` each entry is a tuple that adds [CLS]
        (B, D) and/or the storage tokens (B, R, D), in that order."""
        take = blocks_taken(n, len(self.blocks))
        tokens, rope = self.embed(x)
        out = []
        for i, blk in enumerate(self.blocks[:max(take, default=-1) + 1]):  # none after the last
            tokens = blk(tokens, rope)
            if i in take:
                out.append(self.norm_tokens(tokens) if norm else tokens)
        patches = intermediate_patches(out, take, self, x, reshape)
        r = self.num_prefix_tokens
        extras = [[o[:, 0] for o in out] if return_class_token else None,
                  [o[:, 1:r] for o in out] if return_extra_tokens else None]
        columns = [patches] + [e for e in extras if e is not None]
        return tuple(patches) if len(columns) == 1 else tuple(zip(*columns))


@dataclass(frozen=True)
class Dinov3Size:
    """One released ViT width (``dinov3/hub/backbones.py``)."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn_ratio: float
    ffn_layer: str = "mlp"     # mlp | swiglu | swiglu64 (the official names)
    qkv_bias: bool = True

    @property
    def ffn_hidden(self) -> int:
        hidden = int(self.embed_dim * self.ffn_ratio)
        return hidden if self.ffn_layer == "mlp" else swiglu_hidden_features(
            hidden, SWIGLU_ALIGN[self.ffn_layer])


# name -> size. "plus" sizes have a SwiGLU 6x wide (2/3 of it after the SwiGLU rule).
SIZES: dict[str, Dinov3Size] = {
    "vit_small": Dinov3Size(384, 12, 6, 4.0),
    "vit_small_plus": Dinov3Size(384, 12, 6, 6.0, "swiglu"),
    "vit_base": Dinov3Size(768, 12, 12, 4.0),
    "vit_large": Dinov3Size(1024, 24, 16, 4.0),
    "vit_large_plus": Dinov3Size(1024, 24, 16, 6.0, "swiglu"),
    "vit_huge_plus": Dinov3Size(1280, 32, 20, 6.0, "swiglu"),
    "vit_7b": Dinov3Size(4096, 40, 32, 3.0, "swiglu64", qkv_bias=False),
}
# Sizes whose every release has the training-only local [CLS] norm (ViT-7B, both datasets).
LOCAL_CLS_NORM = ("vit_7b",)


def build_dinov3(size: str, patch_size: int = 16, **kwargs) -> Dinov3VisionTransformer:
    """A released DINOv3 ViT architecture (``size`` a key of :data:`SIZES`) with random weights:
    the hub settings (4 storage tokens, LayerScale 1e-5, LayerNorm eps 1e-5, masked key bias,
    RoPE base 100). ``kwargs`` override any of them (e.g. ``depth``)."""
    spec = SIZES[size]
    settings = {"embed_dim": spec.embed_dim, "depth": spec.depth, "num_heads": spec.num_heads,
                "ffn_ratio": spec.ffn_ratio, "ffn_layer": spec.ffn_layer,
                "qkv_bias": spec.qkv_bias,
                "untie_global_and_local_cls_norm": size in LOCAL_CLS_NORM}
    return Dinov3VisionTransformer(patch_size=patch_size, **{**settings, **kwargs})
