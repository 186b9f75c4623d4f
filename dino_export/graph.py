"""The module that is traced into ONNX: :class:`ExportGraph`.

It wraps a :class:`~dino_train.models.VisionTransformer` for one input size:
  * the position embedding for that size is computed once, with the official bicubic
    interpolation, and stored as a constant (no Resize in the graph);
  * optionally, uint8 BGR (B, H, W, 3) -> RGB float (B, 3, H, W) normalised with mean/std;
  * one forward pass returns the requested outputs, always in the order cls, attn, patch:
    ``cls`` (B, D), ``attn`` (B, heads, H/p, W/p), ``patch`` (B, H/p * W/p, D).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from dino_runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from dino_train.models import VisionTransformer

from .config import ExportConfig, check_img_size


class BgrToNormalized(nn.Module):
    """uint8 BGR (B, H, W, 3) -> float RGB (B, 3, H, W), ``(x / 255 - mean) / std``.

    The scale and offset are folded into one multiply-add per channel.
    """

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> None:
        super().__init__()
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("offset", -mean_t / std_t)

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        rgb = bgr.flip(-1).permute(0, 3, 1, 2).to(torch.float32)  # flip: a Slice, not a Gather
        return rgb * self.scale + self.offset


class ExportGraph(nn.Module):
    """Images -> tuple of the configured outputs, for one fixed (H, W)."""

    def __init__(self, model: VisionTransformer, config: ExportConfig) -> None:
        super().__init__()
        check_img_size(config.img_size, model.patch_size)
        self.model = model.eval()
        self.outputs = config.outputs
        self.grid = (config.img_size[0] // model.patch_size, config.img_size[1] // model.patch_size)
        self.preprocess = BgrToNormalized() if config.preprocess else None
        with torch.no_grad():
            pos = model.pos_embed_for_size(*config.img_size).detach().clone()
        self.register_buffer("pos_embed", pos)  # (1, 1 + H/p * W/p, D), a graph constant

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.preprocess(images) if self.preprocess is not None else images
        if "patch" in self.outputs:
            cls, patch, attn = self.model.forward_features_and_attention(x, self.pos_embed)
        else:
            # The last block then runs its projection and MLP on the [CLS] token only.
            cls, attn = self.model.forward_cls_and_attention(x, self.pos_embed)
            patch = None
        attn = attn.unflatten(-1, self.grid)  # (B, heads, N) -> (B, heads, H/p, W/p)
        named = {"cls": cls, "attn": attn, "patch": patch}
        return tuple(named[name] for name in self.outputs)

    def example_input(self, batch: int, img_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
        """A tracing input of the graph's input type: float NCHW or uint8 NHWC."""
        g = torch.Generator().manual_seed(seed)
        h, w = img_size
        if self.preprocess is not None:
            return torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8)
        return torch.randn(batch, 3, h, w, generator=g)
