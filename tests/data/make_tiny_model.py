"""Writes ``tiny_vit.onnx``: the committed model that the base-install test runs without torch.

A seeded random ViT (32 wide, 1 block, 2 heads, patch 16) exported by ``dino-export``'s Python
API at 64x96 with a dynamic batch (1..4) and all three outputs; about 150 kB. Regenerate it
after a change to the exported graph or its metadata:

    python tests/data/make_tiny_model.py
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
import torch.nn as nn

from dino_export import ExportConfig, export_onnx
from dino_models import VisionTransformer

OUT = Path(__file__).resolve().parent / "tiny_vit.onnx"


def main() -> None:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=[64], patch_size=16, embed_dim=32, depth=1, num_heads=2,
                              mlp_ratio=2, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
    export_onnx(model.eval(), OUT, ExportConfig(img_size=(64, 96), dynamic_batch=(1, 2, 4),
                                                outputs=("cls", "attn", "patch")))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
