"""dino-export's TensorRT path on a CPU, with TensorRT faked by modules that have exactly the API
of each supported release (tests/fake_tensorrt.py): a removed API raises AttributeError here as
it does there. Strongly typed networks, no precision flags, one profile, the timing cache, the
version floor, the trtexec line; and whole --trt exports, whose engines are verified through
the runtime's TensorRT backend. TensorRT's own parsing and kernels run only on a GPU
(scripts/gpu_check.sh)."""
from __future__ import annotations

import json
import shlex
import types
from pathlib import Path

import onnx
import pytest

from dino_core.errors import UserError
from dino_export import tensorrt as trt_export
from dino_export.config import ExportConfig
from dino_export.onnx_export import read_metadata
from dino_export.pipeline import ExportRequest, run_export
from dino_export.tensorrt import (
    GIB,
    EngineConfig,
    build_engine,
    check_version,
    trtexec_command,
)
from tests.fake_tensorrt import install

from .conftest import int8_weights

WEAK_TYPING_FLAGS = ("--fp16", "--int8", "--bf16", "--best", "--precisionConstraints",
                     "--layerPrecisions", "--layerOutputTypes", "--calib")


@pytest.fixture(params=["10.3", "10.x", "11.x"])
def release(request, monkeypatch):
    return install(monkeypatch, request.param)


@pytest.fixture
def gpu_here(monkeypatch):
    """dino-export sees a GPU (the fake TensorRT needs none)."""
    monkeypatch.setattr(trt_export, "gpu_visible", lambda: True)


def test_build_engine_makes_a_strongly_typed_network_without_precision_flags(release, tiny_onnx,
                                                                             tmp_path):
    meta = read_metadata(tiny_onnx)
    engine = build_engine(tiny_onnx, tmp_path / "m.fp32.engine", EngineConfig(2.0), meta)
    (build,) = release._builds
    assert build.strongly_typed and build.flags_set == []
    assert build.flags_cleared == [release.BuilderFlag.TF32]  # float32 stays float32
    strongly_typed = 1 << int(release.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build.network_flags == (strongly_typed if release._api.major == 10 else 0)
    assert build.pools == {"WORKSPACE": 2 * GIB}
    assert build.profiles == [{"images": ((1, 3, 224, 224),) * 3}]
    sidecar = json.loads((tmp_path / "m.fp32.engine.json").read_text())
    assert sidecar["precision"] == "fp32" and sidecar["tensorrt_version"] == release.__version__
    assert engine.is_file() and (tmp_path / "trt_timing.cache").is_file()


def test_a_second_build_reuses_the_timing_cache(monkeypatch, tiny_onnx, tmp_path):
    fake = install(monkeypatch, "11.x")
    meta = read_metadata(tiny_onnx)
    build_engine(tiny_onnx, tmp_path / "a.engine", EngineConfig(), meta)
    build_engine(tiny_onnx, tmp_path / "b.engine", EngineConfig(), meta)
    first, second = fake._builds
    assert first.timing_cache_in == b"" and second.timing_cache_in == b"+timings"


def test_a_graph_tensorrt_cannot_parse_is_one_line(monkeypatch, tmp_path, tiny_onnx):
    install(monkeypatch, "10.x")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(UserError, match=r"bad.onnx: TensorRT 10\.\S+ cannot parse it: "):
        build_engine(bad, tmp_path / "bad.engine", EngineConfig(), read_metadata(tiny_onnx))
    assert not (tmp_path / "bad.engine").exists()


@pytest.mark.parametrize("version, major", [("10.3.0", 10), ("10.16.1.11", 10),
                                            ("10.14.1.48.post1", 10), ("11.4.0.106", 11)])
def test_supported_versions(version, major):
    assert check_version(version) == major


@pytest.mark.parametrize("version", ["8.6.1", "9.3.0", "10.2.0.post1", "10.0.1"])
def test_a_tensorrt_before_10_3_is_refused_by_name(version, monkeypatch):
    with pytest.raises(UserError, match=rf"TensorRT {version} is installed; .* 10\.3 or later"):
        check_version(version)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt",
                        types.SimpleNamespace(__version__=version))
    assert "10.3 or later" in trt_export.unavailable_reason()


@pytest.mark.parametrize("major", [10, 11])
def test_trtexec_line_per_major_version(tiny_pretrained, tmp_path, major):
    from dino_export import export_onnx
    path = export_onnx(tiny_pretrained, tmp_path / "m.fp16.onnx",
                       ExportConfig(dynamic_batch=(1, 4, 16), precision="fp16"))
    cmd = trtexec_command(path, tmp_path / "m.fp16.engine", EngineConfig(2.0),
                          read_metadata(path), major)
    argv = shlex.split(cmd)
    assert argv[:3] == ["trtexec", f"--onnx={path}", f"--saveEngine={tmp_path / 'm.fp16.engine'}"]
    assert "--memPoolSize=workspace:2048M" in argv and "--optShapes=images:4x3x224x224" in argv
    assert ("--stronglyTyped" in argv) == (major == 10)
    assert not [a for a in argv if a.startswith(WEAK_TYPING_FLAGS)]


def test_the_trtexec_line_is_shell_quoted(tiny_pretrained, tmp_path, monkeypatch):
    """Issue 22: the printed command broke on a path with a space or a quote."""
    monkeypatch.setattr(trt_export, "unavailable_reason", lambda: "TensorRT is not installed")
    out = tmp_path / "my models" / "it's.onnx"
    out.parent.mkdir()
    with pytest.raises(UserError) as failure:
        run_export(ExportRequest(str(tiny_pretrained), out, ExportConfig(), trt="fp16",
                                 verify=False), log=lambda line: None)
    line = str(failure.value)
    argv = shlex.split(line[line.index("trtexec "):])
    graph = Path(next(a for a in argv if a.startswith("--onnx=")).split("=", 1)[1])
    assert graph.is_file() and graph.parent == out.parent
    assert f"--saveEngine={out.with_name(out.stem + '.fp16.engine')}" in argv


def test_trt_fp16_writes_verifies_and_builds_from_the_fp16_graph(monkeypatch, gpu_here,
                                                                 tiny_pretrained, tmp_path):
    fake = install(monkeypatch, "11.x")
    out = tmp_path / "m.onnx"
    lines: list[str] = []
    result = run_export(ExportRequest(str(tiny_pretrained), out,
                                      ExportConfig(dynamic_batch=(1, 2, 4)), trt="fp16"),
                        log=lines.append)
    graph = tmp_path / "m.fp16.onnx"
    assert result.engine_source == graph and read_metadata(graph).precision == "fp16"
    assert read_metadata(out).precision == "fp32"
    on_ort = [r.precision for r in result.reports if r.runner.startswith("onnxruntime")]
    assert on_ort == ["fp32", "fp16"]  # both verified on the CPU
    # the engine was built from the fp16 graph, strongly typed, and verified through the
    # runtime's TensorRT backend within the fp16 bounds
    (build,) = fake._builds
    assert build.strongly_typed and build.flags_set == []
    assert result.engine_path == tmp_path / "m.fp16.engine"
    report = result.engine_report
    assert report.passed and report.precision == "fp16", report.table()
    assert report.runner.startswith(f"tensorrt (TensorRT {fake.__version__}")
    sidecar = json.loads((tmp_path / "m.fp16.engine.json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["batch"] == "dynamic:1,2,4"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m.fp16.engine", "m.fp16.engine.json", "m.fp16.onnx", "m.onnx", "trt_timing.cache"]


def test_trt_fp32_builds_from_out_onnx_itself(monkeypatch, gpu_here, tiny_pretrained, tmp_path):
    install(monkeypatch, "10.3")
    result = run_export(ExportRequest(str(tiny_pretrained), tmp_path / "m.onnx", ExportConfig(),
                                      trt="fp32"), log=lambda line: None)
    assert result.engine_source == tmp_path / "m.onnx"
    assert [r.precision for r in result.reports if r.runner.startswith("onnxruntime")] == ["fp32"]
    assert result.engine_report.passed and result.engine_report.precision == "fp32"


def test_trt_int8_builds_from_a_symmetric_int8_graph(monkeypatch, gpu_here, tiny_pretrained,
                                                     photos, tmp_path):
    install(monkeypatch, "10.x")
    cfg = ExportConfig(calib_data=photos[1], calib_count=8)
    result = run_export(ExportRequest(str(tiny_pretrained), tmp_path / "m.onnx", cfg,
                                      trt="int8", given=frozenset({"--calib-data"})),
                        log=lambda line: None)
    graph = tmp_path / "m.int8-trt.onnx"
    assert result.engine_source == graph
    assert result.engine_report.passed and result.engine_report.precision == "int8"
    # Only TensorRT runs this graph: on the CPU it is checked once, by its own arithmetic (Q/DQ
    # as float ops), not by a CPU engine's int8 kernels; the table says so.
    int8_reports = [r for r in result.reports if r.precision == "int8"]
    assert [r.runner for r in int8_reports] == [
        "onnxruntime (CPUExecutionProvider, Q/DQ as float ops)"]
    assert int8_reports[0].passed
    proto = onnx.load(str(graph))
    # 8-bit weights (GPUs sum int8 products in int32: nothing to saturate), in the metadata of
    # the graph and of the engine built from it.
    assert max(int(abs(w.astype("int16")).max()) for w in int8_weights(proto)) == 127
    assert read_metadata(graph).weight_bits == 8
    assert json.loads((tmp_path / "m.int8.engine.json").read_text())["weight_bits"] == 8
    zero_points = qdq_zero_points(proto)
    assert zero_points and all(dtype == "int8" and not any(values)
                               for dtype, values in zero_points)
    dequantized = {n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    int32 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT32}
    assert not dequantized & int32, "TensorRT takes float biases, not int32 ones"


def qdq_zero_points(proto: onnx.ModelProto) -> list[tuple[str, list]]:
    """(dtype, values) of every Q/DQ zero point in ``proto``."""
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in proto.graph.initializer}
    return [(inits[n.input[2]].dtype.name, inits[n.input[2]].ravel().tolist())
            for n in proto.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]


def test_the_cpu_int8_file_is_not_a_tensorrt_graph(tiny_pretrained, photos, tmp_path):
    """Why --trt int8 has its own graph: the CPU file's activations are asymmetric uint8."""
    from dino_export import export_onnx
    cfg = ExportConfig(precision="int8", calib_data=photos[1], calib_count=8)
    path = export_onnx(tiny_pretrained, tmp_path / "q.onnx", cfg)
    assert any(dtype == "uint8" and any(values)
               for dtype, values in qdq_zero_points(onnx.load(str(path))))
