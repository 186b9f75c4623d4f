"""Numerical parity with the official facebookresearch/dinov2 ViT (fp32, CPU, max abs <= 1e-5 at
the ViT-S/14 width, 1e-4 at the ViT-g/14 width: see ``TOL``).

The reference arrays were produced by running the official ``dinov2/models/
vision_transformer.py`` on deterministic weights and inputs (see
``vectors/make_dinov2_reference_vectors.py``); here our model is rebuilt from the same weights
and compared at 224x224, 518x518 (the native grid) and 336x602 (non-square, interpolated), for
ViT-S/14 with and without registers (real size) and the ViT-g/14 width with SwiGLU.
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
from make_dinov2_reference_vectors import CONFIGS
from weights import (
    deterministic_images,
    load_deterministic,
    recorded_key_shapes,
    state_key_shapes,
)

# Bounds on max |ours - reference| per configuration. The reference was made on one CPU
# (AVX-512) and the test runs on others, whose GEMM kernels sum in another order (AVX2 here):
# two correct fp32 computations then differ by up to the sum of their rounding errors.
# Measured on an AVX2 CPU (AMD EPYC, torch 2.14.1) on these inputs: the official code run there
# gives our outputs bit for bit, and differs from the stored vectors by <= 5.0e-6 (ViT-S/14) and
# <= 3.7e-5 (ViT-g/14 width); fp32's own rounding, max |fp32 - fp64| of the same model on the
# same input, is <= 5.2e-6 and <= 4.6e-5 (1536 wide, SwiGLU 4096 hidden: longer sums of larger
# terms). So 1e-5 holds for ViT-S/14 on both CPUs, at twice the spread, and no 1e-5 bound can
# hold across CPUs for ViT-g/14: 1e-4, about twice its rounding
# (test_the_giant_bound_is_twice_its_fp32_rounding keeps that premise checked).
TOL = {"dinov2_s14": 1e-5, "dinov2_s14_reg": 1e-5, "dinov2_g14_reg_d2": 1e-4}
REF = np.load(VECTORS / "dinov2_reference_vectors.npz")
CASES = [pytest.param(name, h, w, id=f"{name}-{h}x{w}",
                      marks=[pytest.mark.slow] if max(h, w) > 500 else [])
         for name, cfg in CONFIGS.items() for h, w in cfg[4]]


def _close(ours: np.ndarray, ref: np.ndarray, name: str) -> bool:
    """Same shape and max abs difference <= TOL[name] (an empty array, e.g. no registers, is
    equal)."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return ours.size == 0 or float(np.abs(ours - ref).max()) <= TOL[name]


def _arch_name(config: str) -> str:
    return config.rsplit("_d", 1)[0] if config.endswith(("_d2", "_d3")) else config


def _our_model(name: str):
    depth = CONFIGS[name][2]
    model = resolve_arch(_arch_name(name)).build(depth=depth).eval()
    load_deterministic(model, name)
    return model


@pytest.mark.parametrize("name", list(CONFIGS))
def test_state_dict_keys_and_shapes_match_official(name):
    assert state_key_shapes(_our_model(name)) == recorded_key_shapes(REF, name)


@pytest.mark.parametrize("name,h,w", CASES)
def test_outputs_match_official(name, h, w):
    _, registers, _, batch, _, stride, rows = CONFIGS[name]
    model = _our_model(name)
    x = torch.from_numpy(deterministic_images(batch, h, w, sum(map(ord, name)) + h + w))
    tag, r = f"{name}/{h}x{w}", 1 + registers
    with torch.no_grad():
        features = model.forward_features(x)
        full_attn = model.get_last_selfattention(x)
        rows = [i for i in rows if i < full_attn.shape[-1]]
        one = model.forward_single_pass(x)
        lean = model.forward_single_pass(x, patch=False)
    ref_cls, ref_attn = REF[f"{tag}/cls"], REF[f"{tag}/attn_rows"]
    ref_patch, ref_regs = REF[f"{tag}/patch_subset"], REF[f"{tag}/registers"]
    assert _close(features["x_norm_clstoken"].numpy(), ref_cls, name)
    assert _close(features["x_norm_patchtokens"].numpy()[:, ::stride], ref_patch, name)
    assert _close(features["x_norm_regtokens"].numpy(), ref_regs, name)
    assert _close(full_attn[:, :, rows].numpy(), ref_attn, name)
    # The single-pass outputs that export and runtime use agree with the reference too:
    # attention over the patches only, the registers' share apart.
    cls_row = ref_attn[:, :, 0]
    for out in (one, lean):
        assert _close(out.cls.numpy(), ref_cls, name)
        assert _close(out.attn.numpy(), cls_row[:, :, r:], name)
        assert _close(out.attn_registers.numpy(), cls_row[:, :, 1:r], name)
    assert _close(one.patch.numpy()[:, ::stride], ref_patch, name)
    # The reference is not vacuous: peaked probability rows, registers that take attention.
    np.testing.assert_allclose(ref_attn.sum(-1), 1.0, atol=1e-5)
    assert ref_attn.max() > 2.0 / ref_attn.shape[-1]
    assert ref_regs.shape == (batch, registers, ref_cls.shape[-1])


def test_register_models_interpolate_differently_from_plain_ones():
    # The same weights give different position embeddings under the two official rules at a
    # size that needs interpolation, and the same at the native 518 px grid.
    plain = resolve_arch("dinov2_s14").build(depth=1)
    reg = resolve_arch("dinov2_s14_reg").build(depth=1)
    reg.pos_embed.data.copy_(plain.pos_embed.data)
    assert torch.equal(plain.pos_embed_for_size(518, 518), reg.pos_embed_for_size(518, 518))
    a, b = plain.pos_embed_for_size(224, 224), reg.pos_embed_for_size(224, 224)
    assert a.shape == b.shape == (1, 257, 384)
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("name", list(CONFIGS))
def test_official_forward_and_intermediate_layers(name):
    # forward() and get_intermediate_layers() are the same computations as above, checked once
    # per model at 224x224 (each costs a full pass at every size).
    batch, stride = CONFIGS[name][3], CONFIGS[name][5]
    model = _our_model(name)
    x = torch.from_numpy(deterministic_images(batch, 224, 224, sum(map(ord, name)) + 448))
    with torch.no_grad():
        cls = model(x).numpy()
        (patch,) = model.get_intermediate_layers(x, 1)
        ((grid, cls2),) = model.get_intermediate_layers(x, [len(model.blocks) - 1], reshape=True,
                                                        return_class_token=True)
    assert _close(cls, REF[f"{name}/224x224/cls"], name)
    assert _close(patch.numpy()[:, ::stride], REF[f"{name}/224x224/patch_subset"], name)
    assert grid.shape == (batch, cls.shape[-1], 16, 16)
    assert torch.equal(grid.flatten(2).transpose(1, 2), patch) and _close(cls2.numpy(), cls, name)


def test_the_giant_bound_is_twice_its_fp32_rounding():
    # The premise of TOL for the ViT-g/14 width, on whatever CPU runs this: fp32's own rounding
    # (against the same model in float64) exceeds 1e-5, so another CPU's summation order can
    # move the outputs by more than 1e-5; twice it stays within the bound.
    name = "dinov2_g14_reg_d2"
    batch, stride = CONFIGS[name][3], CONFIGS[name][5]
    model = _our_model(name)
    x = torch.from_numpy(deterministic_images(batch, 224, 224, sum(map(ord, name)) + 448))
    with torch.no_grad():
        single = model.forward_features(x)
        double = model.double().forward_features(x.double())  # the same weights, widened
    rounding = max(float((single[k][:, ::stride].double() - double[k][:, ::stride]).abs().max())
                   for k in ("x_norm_clstoken", "x_norm_patchtokens", "x_norm_regtokens"))
    assert 1e-5 < rounding and 2 * rounding <= TOL[name], rounding
