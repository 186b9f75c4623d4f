"""Produce ``dinov3_convnext_reference_vectors.npz`` from the official facebookresearch/dinov3 code.

Usage (the official repository is NOT part of this project, and its code is under the DINOv3
License; fetch it separately and run it from outside this repository):

    git clone https://github.com/facebookresearch/dinov3 /tmp/dinov3_ref
    python tests/models/vectors/make_dinov3_convnext_reference_vectors.py /tmp/dinov3_ref

The models are built as ``dinov3/hub/backbones.py`` builds them (``dinov3_convnext_tiny``
... ``_large`` with ``pretrained=False``). The ConvNeXt-Tiny is filled with
:func:`convnext_state` (below) and run in fp32 on the CPU at 224x224, 384x672 and 200x328 (not a
multiple of 32: each stride-2 layer drops the odd row); stored per size, with every
:func:`token_stride`-th token of each map (about ``KEEP`` of them, the first one included):

  * ``cls``: ``model(x)``, (B, D);
  * ``patch_subset`` / ``prenorm_subset``: ``forward_features(x)["x_norm_patchtokens"]`` /
    ``["x_prenorm"]``;
  * ``stage{i}/cls``, ``stage{i}/patch_subset`` for stages 0-2:
    ``get_intermediate_layers(x, n=4, return_class_token=True)``, the pooled (B, C_i) and the
    tokens of each stage, unnormalised as officially (stage 3's entry is ``cls`` and
    ``patch_subset`` again, through the final norm);
  * ``keys``, ``key_shapes`` of all four sizes' state dicts (the Tiny's weights are the only
    ones drawn).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import deterministic_images, key_arrays, name_seed

NAME = "dinov3_convnext_tiny"
SIZES = ["tiny", "small", "base", "large"]
# (height, width) -> batch; 200x328 is not a multiple of 32
IMAGE_SIZES = {(224, 224): 2, (384, 672): 1, (200, 328): 1}
KEEP = 24    # about this many tokens of each map are stored (of 35 ... 16128)
COMMIT = "6876159a11b4df116f30f667f8c9888617df0751"


def _is_norm_weight(name: str) -> bool:
    """The LayerNorm weights: blocks' and final ``norm``, and the stem's and downsampling
    layers' channels-first norms (``downsample_layers.0.1``, ``downsample_layers.{1,2,3}.0``)."""
    parts = name.split(".")
    return name.endswith("norm.weight") or (
        parts[0] == "downsample_layers" and parts[-1] == "weight" and
        parts[2] == ("1" if parts[1] == "0" else "0"))


def convnext_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """One float32 array per key in sorted order from one ``RandomState(seed)`` stream, scaled
    so that every part of the network shapes the output: conv and Linear weights N(0, 1/fan_in)
    (the 0.02 init would leave the depthwise convs' spatial mixing buried under their biases),
    LayerNorm weights around 1, LayerScale gammas around 0.5 (the 1e-6 init would make every
    block the identity), biases N(0, 0.02^2). ``norms.3.*`` are the same tensors as
    ``norm.*``, as in the official module."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        if name.startswith("norms."):
            continue
        a = rng.standard_normal(shapes[name]).astype(np.float32)
        if len(shapes[name]) > 1:
            a *= np.float32(1.0 / np.sqrt(np.prod(shapes[name][1:])))
        elif _is_norm_weight(name):
            a = a * np.float32(0.1) + np.float32(1.0)
        elif name.endswith("gamma"):
            a = a * np.float32(0.1) + np.float32(0.5)
        else:
            a *= np.float32(0.02)
        out[name] = a
    for name in shapes:
        if name.startswith("norms."):
            out[name] = out["norm." + name.rsplit(".", 1)[1]]
    return out


def load_convnext_state(model, name: str) -> dict[str, tuple[int, ...]]:
    """Fill a torch ConvNeXt strictly with :func:`convnext_state` seeded by ``name``; returns
    its key -> shape map."""
    import torch
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = convnext_state(shapes, name_seed(name))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return shapes


def image_seed(height: int, width: int) -> int:
    return name_seed(NAME) + height + width


def token_stride(n: int) -> int:
    """An odd stride that keeps about ``KEEP`` of ``n`` tokens (odd: not aligned with rows)."""
    return max(1, n // KEEP) | 1


def subset(tokens) -> np.ndarray:
    """Every :func:`token_stride`-th token of (B, N, C)."""
    return tokens[:, ::token_stride(tokens.shape[1])].numpy()


def main(official_repo: str) -> None:
    import torch
    sys.path.insert(0, official_repo)
    from dinov3.hub import backbones  # the official builders

    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    for size in SIZES:
        with torch.device("meta"):  # shapes only
            model = getattr(backbones, f"dinov3_convnext_{size}")(pretrained=False)
        arrays.update(key_arrays(f"dinov3_convnext_{size}",
                                 {k: tuple(v.shape) for k, v in model.state_dict().items()}))
    model = backbones.dinov3_convnext_tiny(pretrained=False).eval()
    load_convnext_state(model, NAME)
    for (h, w), batch in IMAGE_SIZES.items():
        x = torch.from_numpy(deterministic_images(batch, h, w, image_seed(h, w)))
        tag = f"{NAME}/{h}x{w}"
        features = model.forward_features(x)
        arrays[f"{tag}/cls"] = model(x).numpy()
        arrays[f"{tag}/patch_subset"] = subset(features["x_norm_patchtokens"])
        arrays[f"{tag}/prenorm_subset"] = subset(features["x_prenorm"])
        stages = model.get_intermediate_layers(x, n=4, return_class_token=True)
        for i, (patches, cls) in enumerate(stages[:-1]):
            arrays[f"{tag}/stage{i}/cls"] = cls.numpy()
            arrays[f"{tag}/stage{i}/patch_subset"] = subset(patches)
    out = HERE / "dinov3_convnext_reference_vectors.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), torch {torch.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_dinov3_convnext_reference_vectors.py PATH_TO_OFFICIAL_DINOV3_REPO")
    main(sys.argv[1])
