"""DINO, DINOv2 and DINOv3 backbones (ViTs and ConvNeXts) and the DINO head,
parameter-compatible with facebookresearch/dino, facebookresearch/dinov2 and
facebookresearch/dinov3."""
from .dinov2 import DinoVisionTransformer, build_dinov2
from .dinov3 import Dinov3VisionTransformer, build_dinov3
from .dinov3_convnext import ConvNeXt, build_convnext
from .head import DINOHead, WeightNormLinear
from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny

__all__ = ["ConvNeXt", "DINOHead", "DinoVisionTransformer", "Dinov3VisionTransformer",
           "VisionTransformer", "WeightNormLinear", "build_convnext", "build_dinov2",
           "build_dinov3", "vit_base", "vit_large", "vit_small", "vit_tiny"]
