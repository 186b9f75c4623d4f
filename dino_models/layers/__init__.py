"""Building blocks of the DINO and DINOv2 Vision Transformers, one idea per module."""
from .attention import Attention, attention_probs, matmul_attention
from .block import FFN_LAYERS, Block
from .drop_path import DropPath, drop_path
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .swiglu_ffn import SwiGLUFFN, swiglu_hidden_features
from .weight_init import trunc_normal_

__all__ = ["FFN_LAYERS", "Attention", "Block", "DropPath", "LayerScale", "Mlp", "PatchEmbed",
           "SwiGLUFFN", "attention_probs", "drop_path", "matmul_attention",
           "swiglu_hidden_features", "trunc_normal_"]
