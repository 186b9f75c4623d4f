"""Produce ``reference_vectors.npz`` from the official facebookresearch/dino code.

Usage (the official repository is NOT part of this project; fetch it separately):

    git clone https://github.com/facebookresearch/dino /tmp/dino_ref
    python tests/foundation/vectors/make_reference_vectors.py /tmp/dino_ref

For each configuration and input size this builds the official ``VisionTransformer`` (from
``vision_transformer.py``), fills it with :func:`weights.deterministic_state`, runs it in fp32
on the CPU and stores: the [CLS] output of ``forward``, a strided subset of the patch tokens of
``get_intermediate_layers(x, 1)``, and selected rows of ``get_last_selfattention``. The test
rebuilds the same weights and inputs and compares our model against these arrays.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import deterministic_images, key_arrays, load_deterministic, name_seed  # noqa: E402

# name -> (official builder, patch, depth, batch, [(H, W)], token stride, attention rows)
CONFIGS = {
    "tiny16_d2": ("vit_tiny", 16, 2, 2, [(224, 224), (480, 640)], 3, [0, 1, 57, 150]),
    "small8": ("vit_small", 8, 12, 1, [(224, 224), (480, 640)], 7, [0, 1, 777, 2400]),
}


def main(official_repo: str) -> None:
    sys.path.insert(0, official_repo)
    import vision_transformer as official  # the official module, run only to make vectors

    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    for name, (builder, patch, depth, batch, sizes, stride, rows) in CONFIGS.items():
        kwargs = {"depth": depth} if depth != 12 else {}
        model = _build(official, builder, patch, kwargs).eval()
        arrays.update(key_arrays(name, load_deterministic(model, name)))
        seed = name_seed(name)
        for h, w in sizes:
            x = torch.from_numpy(deterministic_images(batch, h, w, seed + h + w))
            tag = f"{name}/{h}x{w}"
            arrays[f"{tag}/cls"] = model(x).numpy()
            tokens = model.get_intermediate_layers(x, 1)[0][:, 1:]
            arrays[f"{tag}/patch_subset"] = tokens[:, ::stride].numpy()
            attn = model.get_last_selfattention(x)
            arrays[f"{tag}/attn_rows"] = attn[:, :, [r for r in rows if r < attn.shape[-1]]].numpy()
    out = HERE / "reference_vectors.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), torch {torch.__version__}")


def _build(official, builder: str, patch: int, kwargs: dict):
    if not kwargs:
        return getattr(official, builder)(patch_size=patch)
    # The official builders fix depth=12; build the same family with fewer blocks directly.
    from functools import partial
    widths = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}
    dim, heads = widths[builder]
    return official.VisionTransformer(
        patch_size=patch, embed_dim=dim, num_heads=heads, mlp_ratio=4, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), **kwargs)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_reference_vectors.py PATH_TO_OFFICIAL_DINO_REPO")
    main(sys.argv[1])
