"""DINOv3 ViT export: any multiple of 16, RoPE baked as constants (no Range, Tile, If, Loop, Sin,
Cos or shape computation in the graph), no mask input, one fusable attention per block, storage
tokens kept out of ``attn`` (available as ``attn_registers``), every precision within the
verification bounds."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dino_export import ExportConfig, export_onnx, read_metadata
from dino_export.graph_checks import static_graph_problems
from dino_export.images import verification_sets
from dino_export.onnx_export import run_onnx
from dino_export.verify import TOLERANCES, verify_file
from dino_models.archs import resolve_arch
from dino_models.checkpoint import load_backbone

ALL = ("cls", "attn", "patch", "attn_registers")
# Ops that the RoPE code of other DINOv3 exports leaves in the graph and TensorRT's parser
# rejects (or that compute shapes at run time): none may appear in a fixed-batch graph.
NOT_STATIC = {"Range", "Tile", "If", "Loop", "Scan", "Sin", "Cos", "Shape", "Size",
              "ConstantOfShape", "NonZero", "Expand", "Resize", "Upsample"}


@pytest.fixture(scope="module")
def s16plus(tmp_path_factory) -> Path:
    """An official-layout DINOv3 ViT-S+/16 (SwiGLU), 2 blocks, random weights."""
    torch.manual_seed(16)
    path = tmp_path_factory.mktemp("v3") / "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth"
    torch.save(resolve_arch("dinov3_s16plus").build(depth=2).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def model(s16plus):
    return load_backbone(s16plus)[0]


@pytest.fixture(scope="module")
def all_onnx(s16plus, tmp_path_factory) -> Path:
    """s16plus exported at 64x112 (a 4x7 grid) with every output."""
    return export_onnx(s16plus, tmp_path_factory.mktemp("v3onnx") / "all.onnx",
                       ExportConfig(img_size=(64, 112), outputs=ALL))


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_onnx_matches_pytorch_at_a_multiple_of_16(all_onnx, model):
    # 64x112: a 4x7 grid (tests/runtime exports 96x176 and 96x160 through the CLI)
    size, path = (64, 112), all_onnx
    proto = onnx.load(str(path))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert not NOT_STATIC & set(ops), sorted(NOT_STATIC & set(ops))   # RoPE baked per size
    assert [i.name for i in proto.graph.input] == ["images"]          # no mask input
    assert [o.name for o in proto.graph.output] == list(ALL)
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    got = dict(zip(ALL, run_onnx(path, x)))
    with torch.no_grad():
        ref = model.forward_single_pass(torch.from_numpy(x))
    gh, gw = size[0] // 16, size[1] // 16
    expected = {"cls": ref.cls, "attn": ref.attn.unflatten(-1, (gh, gw)), "patch": ref.patch,
                "attn_registers": ref.attn_registers}
    for name in ALL:
        assert got[name].shape == tuple(expected[name].shape), name
        assert np.abs(got[name] - expected[name].numpy()).max() <= 1e-4, name
    # attn covers the patches, attn_registers the 4 storage tokens; with [CLS]'s own share
    # they are the whole row
    with torch.no_grad():
        to_self = model.get_last_selfattention(torch.from_numpy(x))[:, :, 0, 0].numpy()
    total = got["attn"].sum((-2, -1)) + got["attn_registers"].sum(-1) + to_self
    np.testing.assert_allclose(total, 1.0, atol=1e-5)


@pytest.mark.parametrize("opset,dynamic", [(18, None), (23, (1, 2, 4))])
def test_graph_is_static_with_one_fusable_attention_per_block(s16plus, all_onnx, tmp_path,
                                                              opset, dynamic):
    cfg = ExportConfig(img_size=(64, 112), opset=opset, dynamic_batch=dynamic,
                       outputs=("cls", "attn", "patch"))
    path = all_onnx if opset == 18 else export_onnx(s16plus, tmp_path / "m.onnx", cfg)
    ops = _ops(path)
    allowed = {"Shape", "Expand"} if dynamic else set()   # they read the symbolic batch
    assert not (NOT_STATIC - allowed) & set(ops), sorted(NOT_STATIC & set(ops))
    assert static_graph_problems(onnx.load(str(path))) == []
    # each block's attention is one chain TensorRT and ONNX Runtime fuse: the ONNX Attention
    # op at opset 23, MatMul -> Softmax -> MatMul at 18; one more Softmax for the [CLS] row
    if opset == 23:
        assert ops["Attention"] == 2 and ops["Softmax"] == 1
    else:
        assert ops["Softmax"] == 3 and "Attention" not in ops
    meta = read_metadata(path)
    assert (meta.family, meta.num_registers, meta.patch_size, meta.arch, meta.has_attention) == \
        ("dinov3", 4, 16, "vit_small_plus", True)
    assert meta.outputs["attn_registers" if opset == 18 else "attn"][1] == 6


def test_static_check_finds_computed_positions():
    # The check itself can fail: a graph that computes positions with Range and Sin.
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["r"]),
             helper.make_node("Sin", ["r"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [])
                     for n in ("start", "limit", "delta")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    problems = static_graph_problems(helper.make_model(graph))
    assert problems[:2] == ["1 Range node", "1 Sin node"]
    assert any("has shape" in p or "no inferred shape" in p for p in problems[2:])


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_pass_the_verification_bounds(s16plus, model, photos, tmp_path, precision):
    _, calib = photos
    cfg = ExportConfig(img_size=(64, 112), outputs=ALL, precision=precision,
                       calib_data=calib if precision == "int8" else None, calib_count=16)
    path = export_onnx(s16plus, tmp_path / f"{precision}.onnx", cfg)
    report = verify_file(path, model, verification_sets((64, 112), calib),
                         backend="onnxruntime")  # the file's own precision, not auto's bf16
    assert report.passed, report.table()
    assert report.tolerance == TOLERANCES[precision]
    assert static_graph_problems(onnx.load(str(path))) == []


def test_fp16_keeps_what_would_overflow_in_float32(tmp_path):
    # Large ViTs carry outlier channels in their residual stream. Random weights have none, so
    # one is made: block 0's MLP output scaled up past float16's 65504 (the fp32 model's norms
    # rescale it). A plain conversion leaves those tensors float16, which overflows on a GPU
    # (ONNX Runtime's CPU provider runs most float16 ops in float32, so verification here
    # cannot see it); the export keeps every node that touches them float32.
    from dino_export.fp16 import activation_peaks, overflowing_nodes, to_fp16
    from dino_export.images import check_feeds
    from dino_export.onnx_export import WeightsSource, export_fp32, finish
    torch.manual_seed(3)
    model = resolve_arch("dinov3_s16").build(depth=2, layerscale_init=1.0).eval()
    with torch.no_grad():
        model.blocks[0].mlp.fc2.weight.mul_(1e5)
    cfg = ExportConfig(img_size=(64, 112), outputs=("cls", "attn", "patch"))
    proto, _ = export_fp32(model, cfg)
    peaks = activation_peaks(proto, check_feeds((64, 112), False, 1))
    large = {name for name, peak in peaks.items() if peak > 65504}
    assert large and overflowing_nodes(proto, peaks)

    def kept_float32(graph: onnx.ModelProto, names: list[str]) -> bool:
        """The nodes ``names`` compute in float32 and read no value that went through float16."""
        inferred = onnx.shape_inference.infer_shapes(graph).graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.value_info,
                                                                *inferred.output]}
        producer = {o: n for n in graph.graph.node for o in n.output}
        nodes = [n for n in graph.graph.node if n.name in names]
        return len(nodes) == len(names) and all(
            types.get(o) == TensorProto.FLOAT for n in nodes for o in n.output) and not any(
            producer[i].op_type == "Cast" and producer[i].attribute[0].i == TensorProto.FLOAT
            and producer.get(producer[i].input[0]) is not None
            and producer[producer[i].input[0]].op_type == "Cast"
            for n in nodes for i in n.input if i in producer)

    keep = overflowing_nodes(proto, peaks)
    assert not kept_float32(to_fp16(onnx.ModelProto.FromString(proto.SerializeToString())),
                            keep)
    # the export's own fp16 step (target table, check images), on the same float32 graph
    half = finish(proto, model, WeightsSource("<in-memory model>", "vit_small", ""),
                  cfg.with_(precision="fp16"))
    assert kept_float32(half, keep)
    path = tmp_path / "h.onnx"
    onnx.save(half, str(path))
    report = verify_file(path, model, verification_sets((64, 112)), backend="onnxruntime")
    assert report.passed, report.table()
