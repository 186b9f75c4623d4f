"""The module that is traced into ONNX: :class:`ExportGraph`.

It wraps a DINO or DINOv2 :class:`~dino_models.VisionTransformer` for one input size:
  * the position embedding for that size is computed once, with the official bicubic
    interpolation of the model's family, and stored as a constant (no Resize in the graph,
    whatever the size; no mask input: DINOv2's mask token is a training input only);
  * optionally, uint8 BGR (B, H, W, 3) input, its normalisation folded into the patch
    embedding (see :func:`fold_bgr_normalization`);
  * one forward pass returns the requested outputs, always in the order cls, attn, patch,
    attn_registers: ``cls`` (B, D), ``attn`` (B, heads, H/p, W/p) over the patch tokens only,
    ``patch`` (B, H/p * W/p, D), ``attn_registers`` (B, heads, R).
Every block's attention is one fused SDPA-shaped call (see ``dino_models.layers.attention``);
the last block's [CLS] probabilities are computed beside it for one query.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

from dino_core.constants import IMAGENET_MEAN, IMAGENET_STD
from dino_core.errors import OptionError
from dino_models import VisionTransformer

from .config import ExportConfig, check_img_size


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


class ExportGraph(nn.Module):
    """Images -> tuple of the configured outputs, for one fixed (H, W)."""

    def __init__(self, model: VisionTransformer, config: ExportConfig) -> None:
        super().__init__()
        check_img_size(config.img_size, model.patch_size)
        if "attn_registers" in config.outputs and not model.num_register_tokens:
            raise OptionError("--outputs attn_registers needs a model with register tokens "
                              "(DINOv2 ..._reg); this one has none")
        self.preprocess = config.preprocess
        self.model = (fold_bgr_normalization(model) if self.preprocess else model).eval()
        self.outputs = config.outputs
        self.grid = (config.img_size[0] // model.patch_size, config.img_size[1] // model.patch_size)
        with torch.no_grad():
            pos = model.pos_embed_for_size(*config.img_size).detach().clone()
        self.register_buffer("pos_embed", pos)  # (1, 1 + H/p * W/p, D), a graph constant

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # uint8 BGR (B, H, W, 3) -> float (B, 3, H, W); normalisation is in the folded Conv
        x = images.permute(0, 3, 1, 2).to(torch.float32) if self.preprocess else images
        # Without patch tokens the last block runs its projection and MLP on [CLS] only.
        out = self.model.forward_single_pass(x, self.pos_embed, patch="patch" in self.outputs)
        named = {"cls": out.cls, "attn": out.attn.unflatten(-1, self.grid),  # (B, heads, h, w)
                 "patch": out.patch, "attn_registers": out.attn_registers}
        return tuple(named[name] for name in self.outputs)

    def example_input(self, batch: int, img_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
        """A tracing input of the graph's input type: float NCHW or uint8 NHWC."""
        g = torch.Generator().manual_seed(seed)
        h, w = img_size
        if self.preprocess:
            return torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8)
        return torch.randn(batch, 3, h, w, generator=g)
