"""DINOv2 backbones with the parameter names and numerics of facebookresearch/dinov2.

:class:`DinoVisionTransformer` is :class:`~dino_models.vision_transformer.VisionTransformer`
with DINOv2's parts switched on: LayerScale, optional register tokens, the SwiGLU feed-forward
of ViT-g, a ``mask_token``, and each variant's position-embedding interpolation:

  * plain models: bicubic with ``scale_factor`` (rows + 0.1) / 37, no antialias;
  * register models: bicubic to the target ``size``, with antialias, no offset
    (``dinov2/hub/backbones.py`` builds them with ``interpolate_antialias=True,
    interpolate_offset=0.0``).

:func:`build_dinov2` gives the official hub entries' architectures (``dinov2_vits14`` ...
``dinov2_vitg14_reg``; arch names ``dinov2_s14`` ... ``dinov2_g14_reg`` in
:mod:`dino_models.archs`) with random weights: 518 px grid, patch 14, ``init_values=1.0``,
``block_chunks=0``. ``dino_models.checkpoint.load_backbone("dinov2_vits14")`` loads the
released weights into them. Official state dicts load with ``strict=True``.
"""
from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from .layers import trunc_normal_
from .vision_transformer import VisionTransformer, blocks_taken, intermediate_patches

# The official ffn_layer names, mapped to this project's layers.
FFN_NAMES = {"mlp": "mlp", "swiglu": "swiglu", "swiglufused": "swiglu"}
NUM_REGISTERS = 4           # every released register model has 4


class DinoVisionTransformer(VisionTransformer):
    """DINOv2 ViT: ``forward`` returns the normalised [CLS] token (B, D).

    The constructor mirrors the official ``DinoVisionTransformer`` (without ``block_chunks``,
    ``drop_path_uniform`` and the xFormers paths, which do not change a released model's
    function or parameter names).
    """

    family = "dinov2"

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, ffn_bias: bool = True,
                 proj_bias: bool = True, drop_path_rate: float = 0.0,
                 init_values: float | None = None, ffn_layer: str = "mlp",
                 num_register_tokens: int = 0, interpolate_antialias: bool = False,
                 interpolate_offset: float = 0.1, ffn_hidden: int | None = None,
                 layer_norm_eps: float = 1e-6) -> None:
        if ffn_layer not in FFN_NAMES:
            raise ValueError(f"ffn_layer {ffn_layer!r}: expected one of {', '.join(FFN_NAMES)}")
        super().__init__(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
            drop_path_rate=drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=layer_norm_eps),
            proj_bias=proj_bias, ffn_bias=ffn_bias, ffn_layer=FFN_NAMES[ffn_layer],
            ffn_hidden=ffn_hidden, init_values=init_values, num_register_tokens=num_register_tokens,
            interpolate_offset=interpolate_offset, interpolate_antialias=interpolate_antialias)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def init_weights(self) -> None:
        """DINOv2's initialisation: truncated normal (0.02) position embedding and Linear
        weights, zero biases, [CLS] and registers N(0, 1e-6)."""
        trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None
                         ) -> dict[str, Any]:
        """The official dictionary: ``x_norm_clstoken`` (B, D), ``x_norm_regtokens`` (B, R, D),
        ``x_norm_patchtokens`` (B, N, D), ``x_prenorm`` (B, 1 + R + N, D), ``masks``."""
        x = self.prepare_tokens(x, mask=masks, mask_token=self.mask_token)
        for blk in self.blocks:
            x = blk(x)
        x_norm, r = self.norm(x), self.num_prefix_tokens
        return {"x_norm_clstoken": x_norm[:, 0], "x_norm_regtokens": x_norm[:, 1:r],
                "x_norm_patchtokens": x_norm[:, r:], "x_prenorm": x, "masks": masks}

    def get_intermediate_layers(self, x: torch.Tensor, n: int | list[int] = 1,
                                reshape: bool = False, return_class_token: bool = False,
                                norm: bool = True) -> tuple:
        """The official DINOv2 method (its signature and results differ from DINO's, and DINOv2
        users call it this way): patch tokens (B, N, D), or (B, D, H/p, W/p) with ``reshape``,
        of the last ``n`` blocks (or of the blocks listed in ``n``); with
        ``return_class_token`` each entry is (patch tokens, [CLS] (B, D))."""
        take = blocks_taken(n, len(self.blocks))
        tokens, out = self.prepare_tokens(x), []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i in take:
                out.append(self.norm(tokens) if norm else tokens)
        patches = intermediate_patches(out, take, self, x, reshape)
        if return_class_token:
            return tuple(zip(patches, [o[:, 0] for o in out]))
        return tuple(patches)


# name -> (embed_dim, depth, num_heads, ffn_layer): dinov2/models/vision_transformer.py
SIZES: dict[str, tuple[int, int, int, str]] = {
    "vit_small": (384, 12, 6, "mlp"),
    "vit_base": (768, 12, 12, "mlp"),
    "vit_large": (1024, 24, 16, "mlp"),
    "vit_giant2": (1536, 40, 24, "swiglu"),
}


def build_dinov2(size: str, patch_size: int = 14, num_register_tokens: int = 0,
                 **kwargs) -> DinoVisionTransformer:
    """A released DINOv2 architecture (``size`` a key of :data:`SIZES`) with random weights.

    The hub settings: 518 px grid, LayerScale ``init_values=1.0``; register models interpolate
    to ``size`` with antialias and no offset. ``kwargs`` override any of them (e.g. ``depth``).
    """
    dim, depth, heads, ffn = SIZES[size]
    interpolation = ({"interpolate_antialias": True, "interpolate_offset": 0.0}
                     if num_register_tokens else {})
    settings = {"img_size": 518, "embed_dim": dim, "depth": depth, "num_heads": heads,
                "mlp_ratio": 4, "init_values": 1.0, "ffn_layer": ffn, **interpolation}
    return DinoVisionTransformer(patch_size=patch_size, num_register_tokens=num_register_tokens,
                                 **{**settings, **kwargs})

