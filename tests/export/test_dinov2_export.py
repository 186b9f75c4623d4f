"""DINOv2 export: any size that is a multiple of 14, registers kept out of ``attn`` (and
available as ``attn_registers``), one fusable attention per block, every precision within the
verification bounds."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from dino_core.errors import OptionError
from dino_export import ExportConfig, export_onnx, read_metadata
from dino_export.images import verification_sets
from dino_export.onnx_export import run_onnx
from dino_export.pipeline import ExportRequest, run_export
from dino_export.verify import TOLERANCES, verify_file
from dino_models.archs import resolve_arch

ALL = ("cls", "attn", "patch", "attn_registers")


def _checkpoint(tmp_path_factory, name: str, depth: int = 2) -> Path:
    torch.manual_seed(14)
    path = tmp_path_factory.mktemp("v2") / f"{name}.pth"
    torch.save(resolve_arch(name).build(depth=depth).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def s14_reg(tmp_path_factory) -> Path:
    """An official-layout ViT-S/14 with 4 registers, 2 blocks, random weights."""
    return _checkpoint(tmp_path_factory, "dinov2_s14_reg")


@pytest.fixture(scope="module")
def s14(tmp_path_factory) -> Path:
    return _checkpoint(tmp_path_factory, "dinov2_s14")


@pytest.fixture(scope="module")
def reg_onnx(s14_reg, tmp_path_factory) -> Path:
    """s14_reg exported at 126x224 (a 9x16 grid) with every output."""
    return export_onnx(s14_reg, tmp_path_factory.mktemp("v2onnx") / "r.onnx",
                       ExportConfig(img_size=(126, 224), outputs=ALL))


def _model(path: Path):
    from dino_models.checkpoint import load_backbone
    return load_backbone(path)[0]


@pytest.mark.parametrize("size", [(126, 224), (518, 518)])
def test_onnx_matches_pytorch_at_any_multiple_of_14(s14_reg, reg_onnx, tmp_path, size):
    path = reg_onnx if size == (126, 224) else \
        export_onnx(s14_reg, tmp_path / "m.onnx", ExportConfig(img_size=size, outputs=ALL))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert not {"Resize", "Upsample"} & set(ops)                   # pos-embed baked per size
    assert [i.name for i in proto.graph.input] == ["images"]        # no mask input
    assert [o.name for o in proto.graph.output] == list(ALL)
    model = _model(s14_reg)
    x = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    got = dict(zip(ALL, run_onnx(path, x)))
    with torch.no_grad():
        ref = model.forward_single_pass(torch.from_numpy(x))
    gh, gw = size[0] // 14, size[1] // 14
    expected = {"cls": ref.cls, "attn": ref.attn.unflatten(-1, (gh, gw)), "patch": ref.patch,
                "attn_registers": ref.attn_registers}
    for name in ALL:
        assert got[name].shape == tuple(expected[name].shape), name
        assert np.abs(got[name] - expected[name].numpy()).max() <= 1e-4, name
    # attn covers the patches only; with the registers' and [CLS]'s own share it is the row
    with torch.no_grad():
        to_self = model.get_last_selfattention(torch.from_numpy(x))[:, :, 0, 0].numpy()
    total = got["attn"].sum((-2, -1)) + got["attn_registers"].sum(-1) + to_self
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert got["attn_registers"].sum(-1).max() > 1e-3


def test_metadata_says_family_and_registers(reg_onnx):
    meta = read_metadata(reg_onnx)
    assert (meta.family, meta.num_registers, meta.patch_size, meta.arch) == \
        ("dinov2", 4, 14, "vit_small")
    assert meta.outputs["attn_registers"] == ["B", 6, 4]
    assert meta.outputs["attn"] == ["B", 6, 9, 16]


def test_size_not_a_multiple_of_14_names_the_nearest(s14, tmp_path):
    with pytest.raises(OptionError, match=r"multiples of the patch size 14; nearest valid: "
                                          r"H 224 or 238, W 224"):
        export_onnx(s14, tmp_path / "m.onnx", ExportConfig(img_size=(230, 224)))
    assert not (tmp_path / "m.onnx").exists()


def test_attn_registers_needs_registers(s14, tmp_path):
    with pytest.raises(OptionError, match="attn_registers needs a model with register tokens"):
        export_onnx(s14, tmp_path / "m.onnx", ExportConfig(outputs=ALL))


def _softmax_chains(proto: onnx.ModelProto) -> list[tuple[str, list[str]]]:
    """For each Softmax: the op feeding it (through one Mul at most) and its consumers."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    chains = []
    for n in proto.graph.node:
        if n.op_type == "Softmax":
            src = producer[n.input[0]]
            if src.op_type == "Mul":
                src = producer.get(src.input[0], src)
            chains.append((src.op_type, consumers[n.output[0]]))
    return chains


@pytest.mark.parametrize("plain", [True, False], ids=["plain-cls-attn", "registers-all"])
def test_each_block_is_one_fusable_attention(s14, s14_reg, tmp_path, plain):
    # TensorRT and ONNX Runtime fuse MatMul -> Softmax -> MatMul (opset 18) and the ONNX
    # Attention op (opset 23) into one attention kernel. Each block has exactly one such
    # chain; with patch tokens the last block also computes its [CLS] row beside it (without
    # them the last block attends for [CLS] alone, with that row's probabilities).
    depth, extra = 2, 0 if plain else 1
    checkpoint = s14 if plain else s14_reg
    cfg = ExportConfig(img_size=(126, 224), outputs=("cls", "attn") if plain else ALL)
    path18 = export_onnx(checkpoint, tmp_path / "a.onnx", cfg)
    chains = _softmax_chains(onnx.load(str(path18)))
    assert len(chains) == depth + extra
    assert all(src == "MatMul" for src, _ in chains)
    assert sum("MatMul" in used for _, used in chains) == depth
    proto23 = onnx.load(str(export_onnx(checkpoint, tmp_path / "b.onnx", cfg.with_(opset=23))))
    ops = Counter(n.op_type for n in proto23.graph.node)
    assert ops["Attention"] == depth - 1 + extra and ops["Softmax"] == 1
    assert verify_file(tmp_path / "b.onnx", _model(checkpoint)).passed
    meta = read_metadata(path18)
    assert (meta.family, meta.num_registers) == ("dinov2", 0 if plain else 4)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_fp16_and_int8_pass_the_verification_bounds(s14_reg, photos, tmp_path, precision):
    _, calib = photos
    cfg = ExportConfig(img_size=(126, 224), outputs=ALL, precision=precision,
                       calib_data=calib if precision == "int8" else None, calib_count=16)
    path = export_onnx(s14_reg, tmp_path / f"{precision}.onnx", cfg)
    report = verify_file(path, _model(s14_reg), verification_sets((126, 224), calib),
                         backend="onnxruntime")  # the file's own precision, not auto's bf16
    assert report.passed, report.table()
    assert report.tolerance == TOLERANCES[precision]
    assert all(r.attn_registers_max_abs is not None for r in report.rows)


def test_pipeline_exports_and_verifies_a_dinov2_checkpoint(s14_reg, tmp_path):
    cfg = ExportConfig(img_size=(126, 224), dynamic_batch=(1, 2, 4), outputs=ALL)
    lines: list[str] = []
    result = run_export(ExportRequest(str(s14_reg), tmp_path / "v2.onnx", cfg), log=lines.append)
    assert result.onnx_path.is_file() and result.report.passed
    assert any("PASS" in line for line in lines)
    assert "vit_small/14" in lines[0]


def test_verification_compares_the_register_attention(s14_reg):
    # A file whose attn_registers output is off by 1e-3 fails the fp32 bound (1e-4).
    from dino_export.verify import VerifyReport, compare, torch_reference
    x = np.random.default_rng(1).standard_normal((2, 3, 126, 224)).astype(np.float32)
    ref = torch_reference(_model(s14_reg), x)
    got = {name: ref[name].copy() for name in ALL}
    report = VerifyReport("fp32", TOLERANCES["fp32"], [compare("same", ref, got)])
    assert report.passed
    got["attn_registers"] += 1e-3
    report.rows.append(compare("shifted", ref, got))
    assert report.failures == ["shifted: max abs error 1.00e-03 > 1e-04"]
