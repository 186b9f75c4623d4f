"""Numerical parity with the official facebookresearch/dino ViT (fp32, CPU, max abs <= 1e-5).

The reference arrays were produced by running the official ``vision_transformer.py`` on
deterministic weights and inputs (see ``vectors/make_reference_vectors.py`` and
``vectors/README.md``); here our model is rebuilt from the same weights and compared.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dino_models.archs import resolve_arch

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
from make_reference_vectors import CONFIGS  # noqa: E402
from weights import (
    deterministic_images,
    load_deterministic,
    recorded_key_shapes,
    state_key_shapes,  # noqa: E402
)

# The reference was made on an AVX-512 CPU; on an AVX2 one (other GEMM summation orders) the
# official code differs from it by <= 4.2e-6 and ours by <= 4.2e-6 (widths 192 and 384; fp32's own
# rounding, |fp32 - fp64|, is <= 4.9e-6 there): 1e-5 holds across both. See
# test_dinov2_parity.TOL for the wider model, where it does not.
TOL = 1e-5
LARGE_GRID = 2000   # patches above which a case checks the single-pass method only
REF = np.load(VECTORS / "reference_vectors.npz")
CASES = [(name, h, w) for name, cfg in CONFIGS.items() for h, w in cfg[4]]


def _our_model(name: str):
    builder, patch, depth, *_ = CONFIGS[name]
    model = resolve_arch(builder, patch).build(depth=depth).eval()
    load_deterministic(model, name)
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_and_shapes_match_official(name):
    assert state_key_shapes(_our_model(name)) == recorded_key_shapes(REF, name)


@pytest.mark.parametrize("name,h,w", CASES, ids=[f"{n}-{h}x{w}" for n, h, w in CASES])
def test_outputs_match_official(name, h, w):
    _, _, _, batch, _, stride, rows = CONFIGS[name]
    model = _our_model(name)
    x = torch.from_numpy(deterministic_images(batch, h, w, sum(map(ord, name)) + h + w))
    tag = f"{name}/{h}x{w}"
    ref_cls, ref_attn = REF[f"{tag}/cls"], REF[f"{tag}/attn_rows"]
    ref_patch = REF[f"{tag}/patch_subset"]
    if (h // model.patch_size) * (w // model.patch_size) > LARGE_GRID:
        # ViT-S/8 at 480x640 (4,800 tokens, 12 blocks): one forward pass costs ~6 s on two
        # cores, so only the single-pass method export and runtime use; every method is checked
        # at this size on tiny16_d2 and on ViT-S/8 at 224x224.
        with torch.no_grad():
            one_cls, one_patch, one_attn = (t.numpy()
                                            for t in model.forward_features_and_attention(x))
        assert np.abs(one_cls - ref_cls).max() <= TOL
        assert np.abs(one_patch[:, ::stride] - ref_patch).max() <= TOL
        assert np.abs(one_attn - ref_attn[:, :, 0, 1:]).max() <= TOL
        return
    with torch.no_grad():
        cls = model(x).numpy()
        full_attn = model.get_last_selfattention(x)
        rows = [r for r in rows if r < full_attn.shape[-1]]
        attn = full_attn[:, :, rows].numpy()
        patch = model.get_intermediate_layers(x, 1)[0][:, 1:].numpy()
        one_cls, one_patch, one_attn = (t.numpy() for t in model.forward_features_and_attention(x))
        lean_cls, lean_attn = (t.numpy() for t in model.forward_cls_and_attention(x))
    assert np.abs(cls - ref_cls).max() <= TOL
    assert np.abs(attn - ref_attn).max() <= TOL
    assert np.abs(patch[:, ::stride] - ref_patch).max() <= TOL
    # The single-pass methods used by export and runtime agree with the official reference too.
    assert np.abs(one_cls - ref_cls).max() <= TOL
    assert np.abs(one_patch[:, ::stride] - ref_patch).max() <= TOL
    assert np.abs(one_attn - ref_attn[:, :, 0, 1:]).max() <= TOL
    assert np.abs(lean_cls - ref_cls).max() <= TOL
    assert np.abs(lean_attn - ref_attn[:, :, 0, 1:]).max() <= TOL
    # The reference attention rows are real probability distributions (guards a vacuous file).
    np.testing.assert_allclose(ref_attn.sum(-1), 1.0, atol=1e-5)
    assert ref_attn.max() > 2.0 / ref_attn.shape[-1]
