"""DINO, DINOv2 and DINOv3 backbones and the DINO head, parameter-compatible with
facebookresearch/dino, facebookresearch/dinov2 and facebookresearch/dinov3."""
from .dinov2 import DinoVisionTransformer, build_dinov2
from .dinov3 import Dinov3VisionTransformer, build_dinov3
from .head import DINOHead, WeightNormLinear
from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny

__all__ = ["DINOHead", "DinoVisionTransformer", "Dinov3VisionTransformer", "VisionTransformer",
           "WeightNormLinear", "build_dinov2", "build_dinov3", "vit_base", "vit_large",
           "vit_small", "vit_tiny"]
