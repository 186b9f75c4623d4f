"""Produce ``dinov2_reference_vectors.npz`` from the official facebookresearch/dinov2 code.

Usage (the official repository is NOT part of this project; fetch it separately):

    git clone https://github.com/facebookresearch/dinov2 /tmp/dinov2_ref
    XFORMERS_DISABLED=1 python tests/models/vectors/make_dinov2_reference_vectors.py /tmp/dinov2_ref

For each configuration and input size this builds the official ``DinoVisionTransformer``
exactly as ``dinov2/hub/backbones.py`` does (patch 14, 518 px grid, ``init_values=1.0``,
``block_chunks=0``; the register models with ``interpolate_antialias=True,
interpolate_offset=0.0``), fills it with :func:`weights.deterministic_state`, runs it in fp32 on
the CPU (xFormers off: the PyTorch attention path) and stores a subset of what it computes:

  * ``cls``: ``model(x)``, (B, D);
  * ``patch_subset``: every ``stride``-th token of ``forward_features(x)["x_norm_patchtokens"]``;
  * ``registers``: ``forward_features(x)["x_norm_regtokens"]`` (register models);
  * ``attn_rows``: rows ``rows`` of the last block's attention probabilities over all tokens.
    The official model has no attention output, so they are computed from the official last
    block's own modules on its real input (captured by a forward pre-hook), with the formula
    of the official ``Attention.forward`` before it switched to ``scaled_dot_product_attention``
    (``q * scale``, ``q @ k^T``, softmax);
  * ``keys``, ``key_shapes``: the official state-dict keys and shapes.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import deterministic_images, key_arrays, load_deterministic, name_seed

SIZES = [(224, 224), (518, 518), (336, 602)]
# name -> (official builder, registers, depth, batch, sizes, token stride, attention rows)
CONFIGS = {
    "dinov2_s14": ("vit_small", 0, 12, 1, SIZES, 37, [0, 1, 200]),
    "dinov2_s14_reg": ("vit_small", 4, 12, 1, SIZES, 37, [0, 3, 5, 300]),
    # the giant width and its SwiGLU feed-forward, with registers, at 2 blocks
    "dinov2_g14_reg_d2": ("vit_giant2", 4, 2, 1, [(224, 224), (182, 322)], 31, [0, 4, 100]),
}
COMMIT = "b8931f7bf91576930313be2c6d6af376033b35f0"


def build_official(vits, builder: str, registers: int, depth: int):
    kwargs = {"patch_size": 14, "img_size": 518, "init_values": 1.0, "block_chunks": 0,
              "num_register_tokens": registers, "depth": depth,
              "ffn_layer": "swiglufused" if builder == "vit_giant2" else "mlp"}
    if registers:
        kwargs.update(interpolate_antialias=True, interpolate_offset=0.0)
    # The official builders fix depth; DinoVisionTransformer takes it, with the builder's sizes.
    dims = {"vit_small": (384, 6), "vit_giant2": (1536, 24)}
    dim, heads = dims[builder]
    from functools import partial
    return vits.DinoVisionTransformer(
        embed_dim=dim, num_heads=heads, mlp_ratio=4,
        block_fn=partial(vits.Block, attn_class=vits.MemEffAttention), **kwargs).eval()


def last_block_probs(model, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, T, T) attention probabilities of the official last block on its real input."""
    seen = {}
    hook = model.blocks[-1].register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    model(x)
    hook.remove()
    block = model.blocks[-1]
    tokens = block.norm1(seen["x"])
    B, N, C = tokens.shape
    heads = block.attn.num_heads
    qkv = block.attn.qkv(tokens).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k = qkv[0] * block.attn.scale, qkv[1]
    return (q @ k.transpose(-2, -1)).softmax(dim=-1)


def main(official_repo: str) -> None:
    if os.environ.get("XFORMERS_DISABLED") is None:
        sys.exit("set XFORMERS_DISABLED=1: the reference is the PyTorch attention path")
    sys.path.insert(0, official_repo)
    from dinov2.models import vision_transformer as vits  # the official module

    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    for name, (builder, registers, depth, batch, sizes, stride, rows) in CONFIGS.items():
        model = build_official(vits, builder, registers, depth)
        arrays.update(key_arrays(name, load_deterministic(model, name)))
        seed = name_seed(name)
        for h, w in sizes:
            x = torch.from_numpy(deterministic_images(batch, h, w, seed + h + w))
            tag = f"{name}/{h}x{w}"
            features = model.forward_features(x)
            arrays[f"{tag}/cls"] = model(x).numpy()
            arrays[f"{tag}/patch_subset"] = features["x_norm_patchtokens"][:, ::stride].numpy()
            arrays[f"{tag}/registers"] = features["x_norm_regtokens"].numpy()
            probs = last_block_probs(model, x)
            arrays[f"{tag}/attn_rows"] = probs[:, :, [r for r in rows if r < probs.shape[-1]]].numpy()
    out = HERE / "dinov2_reference_vectors.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), torch {torch.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_dinov2_reference_vectors.py PATH_TO_OFFICIAL_DINOV2_REPO")
    main(sys.argv[1])
