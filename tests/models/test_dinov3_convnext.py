"""DINOv3 ConvNeXt surface: arch table rows, the attributes and single pass that export and runtime
rely on, the official methods' shapes, and a static ONNX graph (torch dynamo exporter). Models are
depth-reduced and narrow: blocks (1, 1, 2, 1), widths (16, 32, 48, 64)."""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

from dino_models.archs import resolve_arch, valid_names
from dino_models.vision_transformer import SinglePass

NAMES = [f"dinov3_convnext_{s}" for s in ("tiny", "small", "base", "large")]
WIDTHS = (16, 32, 48, 64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = resolve_arch("dinov3_convnext_tiny").build(depths=(1, 1, 2, 1), dims=WIDTHS).eval()
    with torch.no_grad():  # LayerScale away from 1e-6 so that the blocks count
        for blk in (b for stage in m.stages for b in stage):
            blk.gamma.fill_(0.5)
    return m


def test_arch_table_rows():
    assert set(NAMES) <= set(valid_names())
    widths = [resolve_arch(n).family.embed_dim for n in NAMES]
    depths = [resolve_arch(n).family.depth for n in NAMES]
    assert widths == [768, 768, 1024, 1536] and depths == [18, 36, 36, 36]
    arch = resolve_arch("dinov3_convnext_small", 32)
    assert (arch.short_name, arch.patch_size, arch.family.kind) == \
        ("dinov3_convnext_small", 32, "dinov3")
    with pytest.raises(ValueError, match="output stride 32"):
        resolve_arch("dinov3_convnext_tiny", 16)
    with torch.device("meta"):  # shapes only
        assert [resolve_arch(n).build().arch for n in NAMES] == NAMES


def test_contract_attributes(model):
    assert (model.family, model.has_attention, model.embed_dim, model.patch_size,
            model.num_registers, model.arch) == ("dinov3", False, 64, 32, 0, "dinov3_convnext_w64")


@pytest.mark.parametrize("h,w", [(64, 64), (96, 160), (100, 70)])
def test_single_pass_is_the_official_features(model, h, w):
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        full, lean = model.forward_single_pass(x), model.forward_single_pass(x, patch=False)
        features = model.forward_features(x)
        pooled = model(x)
    assert isinstance(full, SinglePass) and full.attn is None and full.attn_registers is None
    assert full.cls.shape == (2, 64) and full.patch.shape == (2, (h // 32) * (w // 32), 64)
    assert lean.patch is None
    for cls in (full.cls, lean.cls, pooled):
        torch.testing.assert_close(cls, features["x_norm_clstoken"], atol=1e-6, rtol=0)
    torch.testing.assert_close(full.patch, features["x_norm_patchtokens"], atol=1e-6, rtol=0)


def test_patch_tokens_are_row_major_over_the_grid(model):
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        fmap = model.stage_maps(x)[0]                      # (1, 64, 3, 5)
        patch = model.forward_single_pass(x).patch         # (1, 15, 64)
    assert fmap.shape == (1, 64, 3, 5)
    torch.testing.assert_close(patch[0, 1 * 5 + 3], model.norm(fmap[0, :, 1, 3]), atol=1e-6,
                               rtol=0)


def test_a_position_embedding_is_refused(model):
    with pytest.raises(ValueError, match="no position embedding"):
        model.forward_single_pass(torch.randn(1, 3, 64, 64), pos_embed=torch.zeros(1, 5, 64))


def test_intermediate_layers_are_per_stage(model):
    x = torch.randn(2, 3, 128, 96)
    with torch.no_grad():
        out = model.get_intermediate_layers(x, n=4, reshape=True, return_class_token=True)
        last = model.get_intermediate_layers(x)
        raw = model.get_intermediate_layers(x, n=[0, 3], norm=False)
    grids = [(32, 24), (16, 12), (8, 6), (4, 3)]
    assert [tuple(p.shape) for p, _ in out] == [(2, c, *g) for c, g in zip(WIDTHS, grids)]
    assert [tuple(c.shape) for _, c in out] == [(2, c) for c in WIDTHS]
    assert len(last) == 1 and last[0].shape == (2, 12, 64)
    torch.testing.assert_close(last[0], model.forward_features(x)["x_norm_patchtokens"])
    assert raw[0].shape == (2, 32 * 24, 16)  # stage 0 has no norm; tokens (B, N, C)
    torch.testing.assert_close(raw[1], model.forward_features(x)["x_prenorm"])
    with pytest.raises(ValueError, match="stages 0..3"):
        model.get_intermediate_layers(x, n=5)


def test_drop_path_follows_the_official_linear_rule_and_is_off_in_eval():
    m = resolve_arch("dinov3_convnext_tiny").build(depths=(1, 1, 1, 1), dims=WIDTHS,
                                                   drop_path_rate=0.3)
    rates = [getattr(b.drop_path, "drop_prob", 0.0) for stage in m.stages for b in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    m.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m(x), atol=0, rtol=0)


# Ops that compute shapes or branch: none may be left in a graph exported at a fixed size.
SHAPE_OR_CONTROL_OPS = {"Shape", "Size", "Range", "If", "Loop", "Scan", "ConstantOfShape",
                        "Tile", "Expand", "NonZero", "Where", "Gather", "Slice", "Squeeze",
                        "Unsqueeze", "Concat"}


class _Outputs(torch.nn.Module):
    """cls and patch of the single pass, as the exporter's graph takes them."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.forward_single_pass(x)
        return out.cls, out.patch


def test_onnx_export_is_static_and_matches(model):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the export extra) runs the graph")
    x = torch.randn(2, 3, 96, 160)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(_Outputs(model), (x,), dynamo=True, opset_version=18,
                                  input_names=["images"], output_names=["cls", "patch"]
                                  ).model_proto
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & SHAPE_OR_CONTROL_OPS, sorted(ops & SHAPE_OR_CONTROL_OPS)
    assert {"Conv", "LayerNormalization", "MatMul"} <= ops
    constants = {i.name for i in proto.graph.initializer} | {
        o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    assert all(n.input[1] in constants for n in proto.graph.node if n.op_type == "Reshape")
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in proto.graph.output]
    assert shapes == [[2, 64], [2, 15, 64]]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    cls, patch = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model.forward_single_pass(x)
    assert np.abs(cls - ref.cls.numpy()).max() <= 1e-5
    assert np.abs(patch - ref.patch.numpy()).max() <= 1e-5
