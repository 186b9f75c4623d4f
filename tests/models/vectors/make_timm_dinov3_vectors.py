"""Produce ``timm_dinov3_vectors.npz``: timm's DINOv3 ViTs on deterministic weights.

Usage (timm is not a dependency of this project; any environment with timm >= 1.0.20):

    pip install --target /tmp/timm timm==1.0.20 --no-deps
    PYTHONPATH=/tmp/timm python tests/models/vectors/make_timm_dinov3_vectors.py

For each configuration this builds timm's model (``eva.py``), fills its state dict with
:func:`weights.deterministic_state` (timm's own keys: ``reg_token``, ``gamma_1``, ``q_bias`` ...),
runs it in fp32 on the CPU and stores its normalised tokens ``forward_features(x)`` (B, 1 + 4 +
N, D) and the keys and shapes of its state dict, so that the test can rebuild the same file,
load it through ``load_backbone`` (timm's layout mapped to the official one) and compare.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from weights import deterministic_images, deterministic_state, key_arrays, name_seed  # noqa: E402

# name -> (timm model name, depth, input (H, W))
CONFIGS = {
    "timm_s16plus_qkvb_d1": ("vit_small_plus_patch16_dinov3_qkvb", 1, (64, 96)),
    "timm_s16_d1": ("vit_small_patch16_dinov3", 1, (96, 64)),
}


def main() -> None:
    import timm

    torch.set_grad_enabled(False)
    arrays: dict[str, np.ndarray] = {}
    for name, (model_name, depth, (h, w)) in CONFIGS.items():
        model = timm.create_model(model_name, pretrained=False, depth=depth, num_classes=0).eval()
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = deterministic_state(shapes, name_seed(name))
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
        arrays.update(key_arrays(name, shapes))
        x = torch.from_numpy(deterministic_images(2, h, w, name_seed(name)))
        arrays[f"{name}/tokens"] = model.forward_features(x).numpy()
    out = HERE / "timm_dinov3_vectors.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB), timm {timm.__version__}")


if __name__ == "__main__":
    main()
