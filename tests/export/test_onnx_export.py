"""ONNX export: graph structure, metadata, and ONNX Runtime vs PyTorch at several sizes."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from dino_core.constants import INPUT_BGR, INPUT_FLOAT
from dino_export import ExportConfig, export_onnx, read_metadata
from dino_export.images import verification_sets
from dino_export.onnx_export import run_onnx
from dino_export.verify import verify_file
from dino_models.checkpoint import file_sha256, load_backbone
from dino_runtime.preprocess import InputSpec, Preprocessor

from .conftest import rng_images


def ops(path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def check_graph(path, depth: int) -> None:
    """Checker passes; one LayerNormalization per norm; no Resize; no exporter clutter."""
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    counts = ops(path)
    assert counts["LayerNormalization"] == 2 * depth + 1
    assert not {"Resize", "Upsample", "Identity", "ReduceMean", "Pow", "Sqrt", "Squeeze"} & set(counts)
    # no exporter stack traces (local paths) left on the nodes
    assert not any(n.metadata_props or n.doc_string for n in proto.graph.node)


@pytest.mark.parametrize("size", [(224, 224), (160, 224), (480, 640)])
def test_tiny_matches_pytorch(tiny_pretrained, tmp_path, size):
    path = export_onnx(tiny_pretrained, tmp_path / "m.onnx", ExportConfig(img_size=size))
    check_graph(path, depth=2)
    model, _ = load_backbone(tiny_pretrained)
    report = verify_file(path, model, backend="onnxruntime")  # the graph's fp32 accuracy
    assert report.passed, report.table()
    assert all(r.cls_max_abs <= 1e-4 and r.attn_max_abs <= 1e-4 for r in report.rows)


def test_metadata(tiny_pretrained, tiny_onnx):
    meta = read_metadata(tiny_onnx)
    assert (meta.arch, meta.patch_size, meta.embed_dim, meta.num_heads, meta.depth) == \
        ("vit_tiny", 16, 192, 3, 2)
    assert meta.img_size == (224, 224) and str(meta.batch) == "1" and meta.precision == "fp32"
    assert meta.outputs == {"cls": ["B", 192], "attn": ["B", 3, 14, 14]}
    assert meta.input_name == INPUT_FLOAT and meta.input_format == "float_nchw_rgb_normalized"
    assert meta.checkpoint_sha256 == file_sha256(tiny_pretrained)
    assert meta.toolkit_version
    proto = onnx.load(str(tiny_onnx))
    assert [o.name for o in proto.graph.output] == ["cls", "attn"]
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]


def test_position_embedding_is_a_constant_of_the_official_interpolation(tiny_pretrained, tmp_path):
    """At 160x224 the stored 14x14 grid is resized at export time; the graph holds the result."""
    path = export_onnx(tiny_pretrained, tmp_path / "m.onnx", ExportConfig(img_size=(160, 224)))
    model, _ = load_backbone(tiny_pretrained)
    expected = model.pos_embed_for_size(160, 224).detach().numpy()
    inits = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]
    assert any(a.shape == expected.shape and np.array_equal(a, expected) for a in inits)


def test_training_checkpoint_exports_the_teacher(tiny_training_checkpoint, tmp_path):
    path = export_onnx(tiny_training_checkpoint, tmp_path / "t.onnx")
    teacher, _ = load_backbone(tiny_training_checkpoint, checkpoint_key="teacher")
    x = torch.randn(1, 3, 224, 224)
    cls, attn = run_onnx(path, x.numpy())
    with torch.no_grad():
        ref_cls, ref_attn = teacher.forward_cls_and_attention(x)
    np.testing.assert_allclose(cls, ref_cls.numpy(), atol=1e-4)
    np.testing.assert_allclose(attn.reshape(1, 3, -1), ref_attn.numpy(), atol=1e-5)


def test_dynamic_batch_and_patch_output(tiny_pretrained, tmp_path):
    cfg = ExportConfig(dynamic_batch=(1, 2, 8), outputs=("patch", "cls", "attn"))
    path = export_onnx(tiny_pretrained, tmp_path / "d.onnx", cfg)
    meta = read_metadata(path)
    assert str(meta.batch) == "dynamic:1,2,8"
    assert list(meta.outputs) == ["cls", "attn", "patch"]
    model, _ = load_backbone(tiny_pretrained)
    for batch in (1, 3, 8):
        x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        cls, attn, patch = run_onnx(path, x.numpy())
        with torch.no_grad():
            r_cls, r_patch, r_attn = model.forward_features_and_attention(x)
        assert attn.shape == (batch, 3, 14, 14) and patch.shape == (batch, 196, 192)
        np.testing.assert_allclose(cls, r_cls.numpy(), atol=1e-4)
        np.testing.assert_allclose(patch, r_patch.numpy(), atol=1e-4)
        np.testing.assert_allclose(attn.reshape(batch, 3, -1), r_attn.numpy(), atol=1e-5)


def test_preprocess_graph_equals_python_preprocessing(tiny_pretrained, tiny_onnx, tmp_path):
    """uint8 BGR into the baked graph == Python normalisation into the float graph."""
    cfg = ExportConfig(preprocess=True, batch=2, img_size=(224, 224))
    path = export_onnx(tiny_pretrained, tmp_path / "p.onnx", cfg)
    meta = read_metadata(path)
    assert meta.input_name == INPUT_BGR and meta.input_format == "uint8_nhwc_bgr"
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    bgr = rng_images(2, (224, 224), seed=5)
    baked = run_onnx(path, bgr)
    # the runtime's own preprocessing gives (x / 255 - mean) / std in RGB order
    float_in = np.stack([Preprocessor(InputSpec((224, 224))).normalize(b) for b in bgr])
    rgb = bgr[..., ::-1].astype(np.float32) / 255
    expected = (rgb - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225])
    np.testing.assert_allclose(float_in, expected.transpose(0, 3, 1, 2), atol=1e-5)
    for i in range(2):
        ref = run_onnx(tiny_onnx, float_in[i:i + 1])
        np.testing.assert_allclose(baked[0][i:i + 1], ref[0], atol=1e-4)
        np.testing.assert_allclose(baked[1][i:i + 1], ref[1], atol=1e-5)


def test_opset_23_has_fused_attention_except_the_last_block(tiny_pretrained, tmp_path):
    """The model's fused attention becomes ONNX Attention ops; only the last block's CLS row
    is computed with an explicit Softmax (its probabilities are an output)."""
    path = export_onnx(tiny_pretrained, tmp_path / "a.onnx", ExportConfig(opset=23))
    counts = ops(path)
    assert counts["Attention"] == 1 and counts["Softmax"] == 1  # depth 2: block 0 fused
    model, _ = load_backbone(tiny_pretrained)
    assert verify_file(path, model, backend="onnxruntime").passed


@pytest.mark.slow
def test_vits8_matches_pytorch(vits8_pretrained, tmp_path):
    """The released architecture (ViT-S/8, 12 blocks) at a non-square size."""
    cfg = ExportConfig(img_size=(224, 288), outputs=("cls", "attn", "patch"))
    path = export_onnx(vits8_pretrained, tmp_path / "s8.onnx", cfg)
    check_graph(path, depth=12)
    model, _ = load_backbone(vits8_pretrained)
    meta = read_metadata(path)
    assert meta.outputs["attn"] == ["B", 6, 28, 36] and meta.arch == "vit_small"
    # 4 synthetic + 2 random images: the full default set costs ~30 s more on 2 shared cores
    report = verify_file(path, model, verification_sets((224, 288), count=4, noise=2),
                         backend="onnxruntime")
    assert report.passed, report.table()
