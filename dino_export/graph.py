"""The module that is traced into ONNX: :class:`ExportGraph`.

It wraps a backbone (:class:`dino_models.backbone.Backbone`: a DINO, DINOv2 or DINOv3 ViT, or a
DINOv3 ConvNeXt) for one input size:
  * the position term for that size is computed once and stored as a constant: the position
    embedding with the official bicubic interpolation of the model's family (no Resize in the
    graph), or DINOv3's rotary sin/cos table (no Range, Tile, Sin or Cos in the graph); no mask
    input: the mask tokens of DINOv2 and DINOv3 are training inputs only;
  * optionally, uint8 BGR (B, H, W, 3) input, its normalisation folded into the patch
    embedding (see :func:`fold_bgr_normalization`), or for a backbone without one (a ConvNeXt)
    done by a 1x1 convolution in front (:class:`BgrNormalize`);
  * one forward pass returns the requested outputs, always in the order cls, attn, patch,
    attn_registers: ``cls`` (B, D), ``attn`` (B, heads, H/p, W/p) over the patch tokens only,
    ``patch`` (B, H/p * W/p, D), ``attn_registers`` (B, heads, R); a backbone without
    attention has cls and patch only.
Every block's attention is one fused SDPA-shaped call (see ``dino_models.layers.attention``);
the last block's [CLS] probabilities are computed beside it for one query.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from dino_core.constants import IMAGENET_MEAN, IMAGENET_STD
from dino_models import VisionTransformer
from dino_models.backbone import Backbone, position_constant

from .config import ExportConfig, check_img_size, resolve_outputs


def fold_bgr_normalization(model: VisionTransformer, mean=IMAGENET_MEAN, std=IMAGENET_STD
                           ) -> VisionTransformer:
    """A copy of ``model`` whose patch embedding takes raw BGR pixel values (0..255).

    The patch-embedding Conv is linear and unpadded, so ``conv(W, (rgb / 255 - mean) / std)``
    equals ``conv(W', bgr) + b'`` with ``W'[:, c] = W[:, 2 - c] / (255 * std[2 - c])`` and
    ``b' = b - sum(W * mean / std)``. The baked preprocessing then costs one Cast and one
    Transpose instead of a channel flip, a multiply and an add over every pixel; and it keeps to
    ops that every importer reads (a negative-step Slice does not load in OpenCV 4.6).
    """
    folded = copy.deepcopy(model)
    conv = folded.patch_embed.proj
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float64)).view(1, 3, 1, 1)
    offset = (-torch.tensor(mean, dtype=torch.float64) / torch.tensor(std, dtype=torch.float64))
    with torch.no_grad():
        w = conv.weight.double()
        bias = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        conv.weight.copy_((w * scale).flip(1).float())
        new_bias = bias + (w * offset.view(1, 3, 1, 1)).sum(dim=(1, 2, 3))
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias.float())
        else:
            conv.bias.copy_(new_bias.float())
    return folded


class BgrNormalize(nn.Module):
    """Raw BGR pixel values (0..255) (B, 3, H, W) -> normalised RGB: one 1x1 convolution (the
    channel flip and the per-channel scale and offset in its weights), for backbones whose
    first layer is not a patch embedding to fold them into."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1)
        std_t, mean_t = torch.tensor(std, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64)
        weight = torch.zeros(3, 3, dtype=torch.float64)
        for c in range(3):          # RGB output c reads BGR input 2 - c
            weight[c, 2 - c] = 1.0 / (255.0 * std_t[c])
        with torch.no_grad():
            self.conv.weight.copy_(weight.view(3, 3, 1, 1).float())
            self.conv.bias.copy_((-mean_t / std_t).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ExportGraph(nn.Module):
    """Images -> tuple of the configured outputs, for one fixed (H, W)."""

    def __init__(self, model: Backbone, config: ExportConfig) -> None:
        super().__init__()
        check_img_size(config.img_size, model.patch_size)
        config = resolve_outputs(config, model)
        self.preprocess = config.preprocess
        foldable = hasattr(model, "patch_embed")
        self.normalize = BgrNormalize() if self.preprocess and not foldable else None
        self.model = (fold_bgr_normalization(model) if self.preprocess and foldable
                      else model).eval()
        self.outputs = config.outputs
        self.grid = (config.img_size[0] // model.patch_size, config.img_size[1] // model.patch_size)
        with torch.no_grad():
            pos = position_constant(model, *config.img_size)
        # (1, 1 + N, D) position embedding, (2, 1 + R + N, D/heads) rotary table, or None
        self.register_buffer("pos_embed", pos.detach().clone() if pos is not None else None)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # uint8 BGR (B, H, W, 3) -> float (B, 3, H, W); normalisation is in the folded Conv
        x = images.permute(0, 3, 1, 2).to(torch.float32) if self.preprocess else images
        if self.normalize is not None:
            x = self.normalize(x)
        # Without patch tokens the last block runs its projection and MLP on [CLS] only.
        out = self.model.forward_single_pass(x, self.pos_embed, patch="patch" in self.outputs)
        named = {"cls": out.cls, "patch": out.patch, "attn_registers": out.attn_registers,
                 "attn": out.attn.unflatten(-1, self.grid) if out.attn is not None else None}
        return tuple(named[name] for name in self.outputs)  # attn: (B, heads, h, w)

    def example_input(self, batch: int, img_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
        """A tracing input of the graph's input type: float NCHW or uint8 NHWC."""
        g = torch.Generator().manual_seed(seed)
        h, w = img_size
        if self.preprocess:
            return torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8)
        return torch.randn(batch, 3, h, w, generator=g)
