"""DINO and DINOv2 backbones, the DINOv3 ConvNeXts and the DINO head, parameter-compatible with
facebookresearch/dino, dinov2 and dinov3."""
from .dinov2 import DinoVisionTransformer, build_dinov2
from .dinov3_convnext import ConvNeXt, build_convnext
from .head import DINOHead, WeightNormLinear
from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny

__all__ = ["ConvNeXt", "DINOHead", "DinoVisionTransformer", "VisionTransformer", "WeightNormLinear",
           "build_convnext", "build_dinov2", "vit_base", "vit_large", "vit_small", "vit_tiny"]
