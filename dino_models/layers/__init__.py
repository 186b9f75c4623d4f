"""Building blocks of the DINO, DINOv2 and DINOv3 Vision Transformers, one idea per module."""
from .attention import Attention, attention_probs, matmul_attention
from .block import FFN_LAYERS, Block
from .drop_path import DropPath, drop_path
from .key_bias import KeyMaskedBiasLinear
from .layer_scale import LayerScale
from .mlp import Mlp
from .patch_embed import PatchEmbed
from .rope import RopePositionEmbedding, rope_apply, rotate_half
from .swiglu_ffn import SplitSwiGLUFFN, SwiGLUFFN, swiglu_hidden_features
from .weight_init import trunc_normal_

__all__ = ["FFN_LAYERS", "Attention", "Block", "DropPath", "KeyMaskedBiasLinear", "LayerScale",
           "Mlp", "PatchEmbed", "RopePositionEmbedding", "SplitSwiGLUFFN", "SwiGLUFFN",
           "attention_probs", "drop_path", "matmul_attention", "rope_apply", "rotate_half",
           "swiglu_hidden_features", "trunc_normal_"]
