"""DINO and DINOv2 backbones and the DINO head, parameter-compatible with facebookresearch/dino
and facebookresearch/dinov2."""
from .dinov2 import DinoVisionTransformer, build_dinov2
from .head import DINOHead, WeightNormLinear
from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny

__all__ = ["DINOHead", "DinoVisionTransformer", "VisionTransformer", "WeightNormLinear",
           "build_dinov2", "vit_base", "vit_large", "vit_small", "vit_tiny"]
