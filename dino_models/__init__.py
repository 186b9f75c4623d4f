"""DINO backbones and head, parameter-compatible with facebookresearch/dino."""
from .head import DINOHead, WeightNormLinear
from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny

__all__ = ["DINOHead", "VisionTransformer", "WeightNormLinear",
           "vit_base", "vit_large", "vit_small", "vit_tiny"]
