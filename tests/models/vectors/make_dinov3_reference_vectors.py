"""Produce ``dinov3_reference_vectors.npz`` from the official facebookresearch/dinov3 code.

Usage (the official repository is NOT part of this project, and its code is under the DINOv3
License; fetch it separately and run it from outside this repository):

    git clone https://github.com/facebookresearch/dinov3 /tmp/dinov3_ref
    python tests/models/vectors/make_dinov3_reference_vectors.py /tmp/dinov3_ref

For each configuration and input size this builds the official ``DinoVisionTransformer`` with
the keywords ``dinov3/hub/backbones.py`` gives it (patch 16, RoPE base 100 with coordinates
normalised per side, fp32 RoPE, LayerNorm eps 1e-5, 4 storage tokens, LayerScale, masked key
bias), fills it with :func:`weights.deterministic_state` (the buffers as a released file holds
them, :func:`weights.dinov3_buffers`), runs it in fp32 on the CPU in eval mode (so the
training-time RoPE coordinate rescale is off) and stores a subset of what it computes:

  * ``cls``, ``storage``: ``forward_features(x)["x_norm_clstoken"]`` (B, D) and
    ``["x_storage_tokens"]`` (B, 4, D);
  * ``patch_subset``: every ``stride``-th token of ``["x_norm_patchtokens"]``;
  * ``attn_rows``: rows ``rows`` of the last block's attention probabilities over all tokens.
    The official model has no attention output, so they are computed from the official last
    block's own modules on its real input (captured by a forward pre-hook), with the official
    RoPE table and ``SelfAttention.apply_rope``, then ``softmax(q k^T * scale)``;
  * ``inter_patch_subset``, ``inter_cls``, ``inter_storage`` (224x224 only): the official
    ``get_intermediate_layers(x, n=[0], return_class_token=True, return_extra_tokens=True)``;
  * ``keys``, ``key_shapes``: the official state-dict keys and shapes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import deterministic_images, key_arrays, load_deterministic, name_seed  # noqa: E402

SIZES = [(224, 224), (512, 512), (384, 672)]
# The keywords every released ViT is built with (dinov3/hub/backbones.py, _make_dinov3_vit).
HUB = {"img_size": 224, "patch_size": 16, "pos_embed_rope_base": 100,
       "pos_embed_rope_normalize_coords": "separate", "pos_embed_rope_rescale_coords": 2,
       "pos_embed_rope_dtype": "fp32", "layerscale_init": 1.0e-05, "norm_layer": "layernormbf16",
       "n_storage_tokens": 4, "mask_k_bias": True, "ffn_bias": True, "proj_bias": True}
# name -> (official keywords beyond HUB, batch, sizes, token stride, attention rows).
# Our arch name is the part before "_d" (depth-reduced) or "_narrow"/"_untied" variants.
CONFIGS = {
    # the real ViT-S/16 and ViT-S+/16 (SwiGLU), all 12 blocks
    "dinov3_s16": ({"embed_dim": 384, "depth": 12, "num_heads": 6, "ffn_ratio": 4,
                    "ffn_layer": "mlp", "qkv_bias": True}, 1, SIZES, 53, [0, 100]),
    "dinov3_s16plus": ({"embed_dim": 384, "depth": 12, "num_heads": 6, "ffn_ratio": 6,
                        "ffn_layer": "swiglu", "qkv_bias": True}, 1, SIZES, 53, [0, 3, 150]),
    # ViT-L/16's width with the SAT-493M release's training-only local [CLS] norm, 2 blocks
    "dinov3_l16_sat_d2": ({"embed_dim": 1024, "depth": 2, "num_heads": 16, "ffn_ratio": 4,
                           "ffn_layer": "mlp", "qkv_bias": True,
                           "untie_global_and_local_cls_norm": True}, 1, SIZES, 97, [0, 300]),
    # ViT-7B/16's layout (no qkv bias, SwiGLU aligned to 64, ffn ratio 3, head width 128,
    # local [CLS] norm) at 512 wide and 2 blocks, and the untied [CLS]/patch norms of the
    # official code, which no release uses
    "dinov3_7b16_narrow_untied_d2": ({"embed_dim": 512, "depth": 2, "num_heads": 4,
                                      "ffn_ratio": 3, "ffn_layer": "swiglu64", "qkv_bias": False,
                                      "untie_global_and_local_cls_norm": True,
                                      "untie_cls_and_patch_norms": True},
                                     2, [(224, 224), (384, 672)], 67, [0, 200]),
}
INTERMEDIATE_BLOCK = 0


def build_official(vits, keywords: dict):
    return vits.DinoVisionTransformer(**HUB, **keywords).eval()


def last_block_probs(model, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) attention probabilities of the official last block on its real input."""
    seen = {}
    block = model.blocks[-1]
    hook = block.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model.forward_features(x)
    hook.remove()
    tokens = seen["x"][0] if isinstance(seen["x"], list) else seen["x"]   # the list op: [x]
    attn = block.attn
    B, N, C = tokens.shape
    qkv = attn.qkv(block.norm1(tokens)).reshape(B, N, 3, attn.num_heads, C // attn.num_heads)
    q, k, _ = (t.transpose(1, 2) for t in qkv.unbind(2))
    rope = model.rope_embed(H=x.shape[-2] // model.patch_size, W=x.shape[-1] // model.patch_size)
    q, k = attn.apply_rope(q, k, rope)
    return ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)


def main(official_repo: str) -> None:
    sys.path.insert(0, official_repo)
    from dinov3.models import vision_transformer as vits  # the official module

    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    for name, (keywords, batch, sizes, stride, rows) in CONFIGS.items():
        model = build_official(vits, keywords)
        arrays.update(key_arrays(name, load_deterministic(model, name)))
        seed = name_seed(name)
        for h, w in sizes:
            x = torch.from_numpy(deterministic_images(batch, h, w, seed + h + w))
            tag = f"{name}/{h}x{w}"
            features = model.forward_features(x)
            arrays[f"{tag}/cls"] = features["x_norm_clstoken"].numpy()
            arrays[f"{tag}/storage"] = features["x_storage_tokens"].numpy()
            arrays[f"{tag}/patch_subset"] = features["x_norm_patchtokens"][:, ::stride].numpy()
            probs = last_block_probs(model, x)
            arrays[f"{tag}/attn_rows"] = probs[:, :, [r for r in rows if r < probs.shape[-1]]].numpy()
            if (h, w) == (224, 224):
                ((patch, cls, storage),) = model.get_intermediate_layers(
                    x, n=[INTERMEDIATE_BLOCK], return_class_token=True,
                    return_extra_tokens=True)
                arrays[f"{tag}/inter_patch_subset"] = patch[:, ::stride].numpy()
                arrays[f"{tag}/inter_cls"] = cls.numpy()
                arrays[f"{tag}/inter_storage"] = storage.numpy()
    out = HERE / "dinov3_reference_vectors.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), torch {torch.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_dinov3_reference_vectors.py PATH_TO_OFFICIAL_DINOV3_REPO")
    main(sys.argv[1])
