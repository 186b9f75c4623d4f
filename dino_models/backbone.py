"""What export and runtime ask of a backbone, whatever its family: :class:`Backbone`.

Every ViT here (DINO, DINOv2, DINOv3) and DINOv3's ConvNeXts follow it. A ConvNeXt has no
attention: ``has_attention`` False, no heads, no register tokens, ``patch_size`` its output
stride (32), and :meth:`Backbone.forward_single_pass` gives ``attn=None`` with the pooled last
stage as ``cls`` and the last stage's tokens (row-major) as ``patch``.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Backbone(Protocol):
    family: str            # dino | dinov2 | dinov3: the exported metadata's family
    has_attention: bool
    embed_dim: int         # width of cls and patch
    patch_size: int        # pixels per output token (a ConvNeXt: its stride)

    @property
    def num_registers(self) -> int:
        """Tokens between [CLS] and the patches (registers, storage tokens); 0 for ConvNeXts."""

    def forward_single_pass(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None,
                            patch: bool = True):
        """Images (B, 3, H, W) -> ``SinglePass(cls, attn, attn_registers, patch)``."""

    def eval(self) -> "Backbone": ...


def position_constant(model: Backbone, height: int, width: int) -> torch.Tensor | None:
    """What ``forward_single_pass`` takes as ``pos_embed`` for this input size, computed once
    (a ViT's interpolated position embedding or DINOv3's rotary table; None for a backbone
    without positions). Export stores it as a graph constant."""
    size_fn = getattr(model, "pos_embed_for_size", None)
    return size_fn(height, width) if size_fn is not None else None


def num_heads(model: Backbone) -> int:
    """Attention heads of the last block; 0 without attention."""
    return int(model.num_heads) if model.has_attention else 0


def depth(model: Backbone) -> int:
    """Blocks (a ViT) or blocks over all stages (a ConvNeXt's ``stages``)."""
    if hasattr(model, "blocks"):
        return len(model.blocks)
    if hasattr(model, "stages"):
        return sum(len(stage) for stage in model.stages)
    return int(model.depth)


def arch_name(model: Backbone) -> str:
    """The arch table's family name for an in-memory model (``vit_small``, ``vit_small_plus``,
    ...); a model's own ``arch`` attribute when it has one; else a name from its width."""
    from .archs import family_for_width
    if isinstance(getattr(model, "arch", None), str):
        return model.arch
    ffn = None
    if model.has_attention and hasattr(model, "blocks"):
        ffn = "mlp" if hasattr(model.blocks[0].mlp, "fc1") else "swiglu"
    family = family_for_width(model.embed_dim, model.family, ffn) if model.has_attention else None
    return family.name if family else f"{'vit' if model.has_attention else model.family}_d{model.embed_dim}"
