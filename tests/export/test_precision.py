"""fp16 and int8 files: structure (what stays float32) and accuracy within the written bounds."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from dino_core.errors import UserError
from dino_export import ExportConfig, export_onnx, read_metadata
from dino_export.images import verification_sets
from dino_export.verify import TOLERANCES, verify_file
from dino_models.checkpoint import load_backbone

from .conftest import int8_weights

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


def value_types(proto: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(proto)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def test_fp16_structure_and_accuracy(tiny_pretrained, tmp_path):
    path = export_onnx(tiny_pretrained, tmp_path / "h.onnx", ExportConfig(precision="fp16"))
    proto = onnx.load(str(path))
    types = value_types(proto)
    # inputs and outputs stay float32, so a runtime feeds the same tensors as for fp32
    assert [types[v.name] for v in (*proto.graph.input, *proto.graph.output)] == [FLOAT] * 3
    nodes = proto.graph.node
    matmul_weights = [n.input[1] for n in nodes if n.op_type == "MatMul" and n.input[1] in
                      {i.name for i in proto.graph.initializer}]
    assert matmul_weights and all(types[w] == HALF for w in matmul_weights)
    kept = [n for n in nodes if n.op_type in ("LayerNormalization", "Softmax")]
    assert len(kept) == 7 and all(types[n.output[0]] == FLOAT for n in kept)
    assert all(types[i] == FLOAT for n in kept for i in n.input if i)
    assert read_metadata(path).precision == "fp16"
    model, _ = load_backbone(tiny_pretrained)
    report = verify_file(path, model, backend="onnxruntime")  # ORT's CPU EP runs fp16 graphs
    assert report.passed, report.table()
    assert min(r.cls_cosine for r in report.rows) >= TOLERANCES["fp16"].min_cosine


@pytest.fixture(scope="module")
def int8_file(tiny_pretrained, photos, tmp_path_factory):
    """tiny_pretrained as a --precision int8 file calibrated on 16 photos."""
    cfg = ExportConfig(precision="int8", calib_data=photos[1], calib_count=16)
    return export_onnx(tiny_pretrained, tmp_path_factory.mktemp("int8") / "q.onnx", cfg)


def test_int8_qdq_keeps_norms_softmax_and_residuals_float(int8_file, tiny_pretrained, photos):
    label, calib_dir = photos
    path = int8_file
    proto = onnx.load(str(path))
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    quantized = [n for n in proto.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
                 and producer.get(n.input[0]) == "DequantizeLinear"]
    # patch embedding + 4 weight products per block
    assert len(quantized) == 1 + 4 * 2
    float_ops = [n for n in proto.graph.node if n.op_type in ("LayerNormalization", "Softmax", "Add")]
    assert float_ops and all(producer.get(i) != "DequantizeLinear"
                             for n in float_ops for i in n.input)
    meta = read_metadata(path)
    assert meta.precision == "int8"
    model, _ = load_backbone(tiny_pretrained)
    report = verify_file(path, model, verification_sets(meta.img_size, calib_dir),
                         backend="onnxruntime")
    assert report.passed, report.table()
    assert report.rows[0].inputs == "verify-data", f"{label} photos are verified on"
    tol = TOLERANCES["int8"]
    assert all(r.cls_cosine >= tol.min_cosine and r.mask_iou >= tol.min_mask_iou for r in report.rows)


def test_int8_cpu_weights_are_7_bit_so_cpus_without_vnni_cannot_saturate(int8_file):
    # x86 without VNNI adds u8 x s8 product pairs into int16 with saturation: 2 * 255 * 64 fits
    # in 32767, 2 * 255 * 127 does not. The check reads the file, so it holds on any CPU.
    weights = int8_weights(onnx.load(str(int8_file)))
    assert len(weights) == 1 + 4 * 2
    peaks = [int(np.abs(w.astype(np.int16)).max()) for w in weights]
    assert max(peaks) == 64, peaks  # the whole reduced range is used, and no more
    assert 2 * 255 * max(peaks) <= np.iinfo(np.int16).max
    assert read_metadata(int8_file).weight_bits == 7


def test_int8_without_calibration_is_an_error():
    with pytest.raises(UserError, match="--calib-data"):
        ExportConfig(precision="int8")


def test_int8_with_an_empty_calibration_folder(tiny_pretrained, tmp_path):
    (tmp_path / "empty").mkdir()
    cfg = ExportConfig(precision="int8", calib_data=tmp_path / "empty")
    with pytest.raises(UserError, match="no readable images"):
        export_onnx(tiny_pretrained, tmp_path / "q.onnx", cfg)
    assert not (tmp_path / "q.onnx").exists()
