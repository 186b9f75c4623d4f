"""The openvino backend: parity with ONNX Runtime on photos (bf16 and int8 files, fixed and
dynamic batch) within the verification bounds, the compile cache, auto's choice and its
fallback, a missing or broken install, device names, and no telemetry."""
from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from dino_core.errors import BackendUnavailable, OptionError
from dino_core.precision import cpu_has_native_bf16
from dino_export import ExportConfig, export_onnx
from dino_export.images import folder_images
from dino_export.verify import TOLERANCES, VerifyReport, compare
from dino_runtime import Runtime
from dino_runtime.backends import BACKENDS, BackendCannotRun, auto_rows, backend_for, device_kind
from tests.conftest import tiny_vit

from .conftest import ROOT, assert_one_line_error, run_cli

if importlib.util.find_spec("openvino") is None:  # not importorskip: a plain import of
    # openvino starts its telemetry, which the backend's own import keeps off
    pytest.skip("the openvino extra is not installed: pip install 'dino-edge[openvino]'",
                allow_module_level=True)
from dino_runtime.backends import openvino_backend as ovb  # noqa: E402

SIZE = (224, 224)       # 14x14 patches: enough for the mask IoU to mean something
AUTO_PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
BATCHES = {"batch1": dict(batch=1), "dynamic": dict(dynamic_batch=(1, 4, 8))}


@pytest.fixture(scope="module")
def photo_frames(photos) -> np.ndarray:
    """8 photos (uint8 BGR at SIZE) that the int8 files were not calibrated on."""
    return folder_images(photos[1], 16, SIZE)[8:]


@pytest.fixture(scope="module", params=list(BATCHES))
def exported(request, photos, tmp_path_factory) -> dict[str, Path]:
    """fp32 and int8 (calibrated on the first 8 photos) files of one ViT-Tiny/16 (depth 4)."""
    folder = tmp_path_factory.mktemp(f"ov_{request.param}")
    model = tiny_vit(depth=4, seed=5)
    common = dict(img_size=SIZE, **BATCHES[request.param])
    return {"fp32": export_onnx(model, folder / "m.onnx", ExportConfig(**common)),
            "int8": export_onnx(model, folder / "m.int8.onnx", ExportConfig(
                **common, precision="int8", calib_data=photos[1], calib_count=8))}


def outputs(path: Path, backend: str, frames: np.ndarray, **kwargs) -> tuple[Runtime, dict]:
    # batch 3 over 8 photos: calls of 3, 3 and 2 frames (a fixed graph pads each to 1 frame)
    rt = Runtime(path, backend=backend, batch_size=3, threshold=None, **kwargs)
    out = rt(frames)
    return rt, {"cls": out.cls, "attn": out.attn}


def check_bounds(precision: str, label: str, ref: dict, got: dict) -> VerifyReport:
    report = VerifyReport(precision, TOLERANCES[precision], [compare(label, ref, got)])
    assert report.passed, report.table()
    return report


def test_float_file_matches_onnxruntime_on_photos(exported, photo_frames, photos):
    _, ref = outputs(exported["fp32"], "onnxruntime", photo_frames)
    rt, auto = outputs(exported["fp32"], "openvino", photo_frames)
    assert rt.backend.precision == AUTO_PRECISION and rt.device == "CPU"
    check_bounds(AUTO_PRECISION, photos[0], ref, auto)
    rt32, fp32 = outputs(exported["fp32"], "openvino", photo_frames, precision="fp32")
    assert rt32.backend.precision == "fp32"
    check_bounds("fp32", photos[0], ref, fp32)  # max abs error <= 1e-4
    if AUTO_PRECISION == "bf16":  # bf16 is really on: it does not give the fp32 numbers
        assert np.abs(auto["cls"] - fp32["cls"]).max() > 1e-4


def test_int8_file_matches_onnxruntime_within_the_int8_bounds(exported, photo_frames, photos):
    _, ref = outputs(exported["fp32"], "onnxruntime", photo_frames)
    _, ort_int8 = outputs(exported["int8"], "onnxruntime", photo_frames)
    rt, ov_int8 = outputs(exported["int8"], "openvino", photo_frames)
    assert rt.backend.precision == "int8"
    assert rt.device == "CPU" and rt.backend.float_precision == AUTO_PRECISION
    check_bounds("int8", f"{photos[0]} vs ORT fp32", ref, ov_int8)
    check_bounds("int8", f"{photos[0]} vs ORT int8", ort_int8, ov_int8)


def test_compile_settings_and_cache_beside_the_model(tiny_onnx, tmp_path):
    model = shutil.copy(tiny_onnx, tmp_path / "m.onnx")
    rt = Runtime(model, backend="openvino", warmup=False)
    compiled = rt.backend.compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == len(os.sched_getaffinity(0))
    assert str(compiled.get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert int(compiled.get_property("NUM_STREAMS")) == 1
    assert compiled.get_property("ENABLE_CPU_PINNING") is False
    blobs = list((tmp_path / ".m.onnx.openvino-cache").glob("*.blob"))
    assert len(blobs) == 1
    frames = np.random.default_rng(0).integers(0, 256, (8, 96, 160, 3), dtype=np.uint8)
    first = rt(frames).cls
    np.testing.assert_array_equal(Runtime(model, backend="openvino")(frames).cls, first)
    assert list((tmp_path / ".m.onnx.openvino-cache").glob("*.blob")) == blobs  # reused
    # Another model written to the same path: its own weights run, never the cached blob.
    export_onnx(tiny_vit(seed=9), model, ExportConfig(img_size=(64, 96), dynamic_batch=(1, 4, 16),
                                                      outputs=("cls", "attn", "patch")))
    again = Runtime(model, backend="openvino", precision="fp32")(frames).cls
    fresh = Runtime(model, backend="onnxruntime")(frames).cls
    np.testing.assert_allclose(again, fresh, atol=1e-4)
    assert np.abs(again - first).max() > 0.1


def test_an_uncompiled_batch_size_is_padded_until_compiling_it_pays(tiny_onnx):
    rt = Runtime(tiny_onnx, backend="openvino", batch_size=4, precision="fp32", warmup=False)
    backend = rt.backend
    frames = np.random.default_rng(3).integers(0, 256, (3, 96, 160, 3), dtype=np.uint8)
    x = np.stack([rt.preprocessor(f) for f in frames])
    full = backend.run(np.concatenate([x, x[:1]]))       # the batch size compiled at load
    backend._compile_seconds = 1e9                        # a compile would cost more: pad
    padded = backend.run(x)
    assert sorted(backend._requests) == [4] and len(padded) == 3
    np.testing.assert_allclose(padded.cls, full.cls[:3], atol=1e-5)
    np.testing.assert_allclose(padded.attn, full.attn[:3], atol=1e-6)
    backend._compile_seconds = 0.0                        # padding has cost more: compile
    compiled = backend.run(x)
    assert sorted(backend._requests) == [3, 4]
    np.testing.assert_allclose(compiled.cls, full.cls[:3], atol=1e-5)


def test_auto_takes_the_first_installed_row_that_reads_the_file_on_the_device(monkeypatch):
    assert [e.name for e in auto_rows("m.onnx", "cpu")] == ["openvino", "onnxruntime"]
    assert [e.name for e in auto_rows("m.onnx", "cuda:1")] == ["onnxruntime"]
    assert [e.name for e in auto_rows("m.onnx", "GPU")] == ["openvino"]
    assert backend_for("m.xml", device="cpu").name == "openvino"
    assert backend_for("m.engine", device="cpu").name == "tensorrt"  # it will say: GPUs only
    monkeypatch.setattr(type(BACKENDS["openvino"]), "missing",
                        lambda self: ["openvino"] if self.name == "openvino" else [])
    assert [e.name for e in auto_rows("m.onnx", "cpu")] == ["onnxruntime"]
    assert [e.name for e in auto_rows("m.xml", "cpu")] == ["openvino"]  # loading says: install


def test_auto_runs_int8_files_on_onnxruntime_where_int8_products_saturate(monkeypatch, exported):
    """OpenVINO's int8 kernels on an x86 CPU without VNNI ran ViT-S/16 at 0.42x ONNX Runtime's
    (docs/benchmarks/cpu-without-vnni.md): there auto puts ONNX Runtime first for int8 files;
    float files, other devices and VNNI CPUs keep the table's order."""
    import onnx

    from dino_runtime import backends
    from dino_runtime.backends.onnx_props import exported_precision, read_props
    for name, path in exported.items():  # the metadata, read without loading the graph
        assert read_props(path) == {p.key: p.value for p in onnx.load(path).metadata_props}
        assert exported_precision(path) == name
    for saturate, int8_first in ((True, "onnxruntime"), (False, "openvino")):
        monkeypatch.setattr(backends, "int8_products_saturate", lambda: saturate)
        assert [e.name for e in auto_rows(exported["int8"], "cpu")] == \
            [int8_first, "onnxruntime" if int8_first == "openvino" else "openvino"]
        assert [e.name for e in auto_rows(exported["fp32"], "cpu")] == ["openvino", "onnxruntime"]
        assert [e.name for e in auto_rows(exported["int8"], "GPU")] == ["openvino"]
    assert read_props(exported["fp32"].parent / "missing.onnx") == {}


def test_onnx_props_of_a_file_that_is_not_one(tmp_path, exported):
    """Junk, a truncated file, a length past the end: no metadata, no exception (the engines
    then read the file and say what is wrong with it)."""
    from dino_runtime.backends.onnx_props import exported_precision
    whole = exported["int8"].read_bytes()
    for data in (b"", b"\xff" * 40, b"\x0a\xff\xff\xff\xff\x0f", b"junk, not protobuf",
                 whole[:len(whole) // 2], whole[:-3]):
        (tmp_path / "x.onnx").write_bytes(data)
        assert exported_precision(tmp_path / "x.onnx") is None


def test_device_names():
    assert [device_kind(d) for d in ("cpu", "cuda", "cuda:1", "GPU", "gpu.1", "NPU")] == \
        ["cpu", "cuda", "cuda", "gpu", "gpu", "npu"]
    assert [ovb.ov_device(d) for d in ("auto", "cpu", "gpu.1", "npu")] == \
        ["CPU", "CPU", "GPU.1", "NPU"]
    with pytest.raises(OptionError, match="unknown device 'tpu'"):
        device_kind("tpu")
    with pytest.raises(OptionError, match="use --backend onnxruntime or tensorrt"):
        ovb.ov_device("cuda")
    with pytest.raises(OptionError, match="is an OpenVINO device; --backend onnxruntime runs"):
        backend_for("m.onnx", "onnxruntime", "GPU")


def test_an_intel_gpu_this_machine_lacks_is_one_line(tiny_onnx, video_60):
    if any(d.startswith("GPU") for d in ovb.shared_core().available_devices):
        pytest.skip("this machine has an Intel GPU")
    assert_one_line_error(*run_cli("--model", tiny_onnx, "--source", video_60, "--device", "GPU",
                                   "--no-display")[::2], "--device GPU: OpenVINO sees CPU")


def unconvertible(tiny_onnx: Path, out: Path) -> Path:
    """``tiny_onnx`` with ``cls + 0 * sum(Inverse(I))``: ONNX Runtime runs com.microsoft's
    Inverse and gives the same outputs; OpenVINO 2026.4 has no converter for it."""
    proto = onnx.load(str(tiny_onnx))
    graph = proto.graph
    producer = next(n for n in graph.node if "cls" in n.output)
    producer.output[list(producer.output).index("cls")] = "cls_raw"
    graph.initializer.extend([
        helper.make_tensor("eye", TensorProto.FLOAT, [2, 2], [1, 0, 0, 1]),
        helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    graph.node.extend([
        helper.make_node("Inverse", ["eye"], ["inv"], domain="com.microsoft"),
        helper.make_node("ReduceSum", ["inv"], ["inv_sum"], keepdims=0),
        helper.make_node("Mul", ["inv_sum", "zero"], ["nothing"]),
        helper.make_node("Add", ["cls_raw", "nothing"], ["cls"])])
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(proto, str(out))
    return out


def test_a_graph_openvino_cannot_convert_falls_back_under_auto_only(tiny_onnx, video_60,
                                                                   tmp_path, caplog):
    model = unconvertible(tiny_onnx, tmp_path / "inv.onnx")
    frames = np.random.default_rng(1).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    with caplog.at_level(logging.WARNING, logger="dino_runtime"):
        rt = Runtime(model)
    assert rt.backend.name == "onnxruntime"
    assert "OpenVINO cannot convert inv.onnx" in caplog.text
    assert "running inv.onnx on onnxruntime instead" in caplog.text
    np.testing.assert_allclose(rt(frames).cls, Runtime(tiny_onnx, backend="onnxruntime")(frames).cls,
                               atol=1e-6)
    with pytest.raises(BackendCannotRun, match="OpenVINO cannot convert inv.onnx"):
        Runtime(model, backend="openvino")
    assert_one_line_error(*run_cli("--model", model, "--source", video_60, "--backend",
                                   "openvino", "--no-display")[::2],
                          "OpenVINO cannot convert inv.onnx", "Inverse")
    code, out, err = run_cli("--model", model, "--source", video_60, "--no-display")
    assert code == 0 and "frames 60" in out, err
    assert err.startswith("dino-run: warning: OpenVINO cannot convert inv.onnx"), err
    assert "on onnxruntime, device CPUExecutionProvider" in err


FAKE_BROKEN = "raise ImportError('libopenvino.so.2026.4.1: cannot open shared object file')\n"
HIDE = '''
import sys
class _Hide:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openvino":
            raise ImportError("openvino is hidden for this test")
sys.meta_path.insert(0, _Hide())
'''


def run_with_path(folder: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "dino_runtime.cli", *map(str, args)], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout, out.stderr


def test_a_broken_or_missing_openvino_is_one_line_with_the_install_hint(tiny_onnx, video_60,
                                                                       tmp_path):
    broken = tmp_path / "broken"
    (broken / "openvino").mkdir(parents=True)
    (broken / "openvino" / "__init__.py").write_text(FAKE_BROKEN)
    args = ("--model", tiny_onnx, "--source", video_60, "--max-frames", "4", "--no-display")
    code, _, err = run_with_path(broken, *args, "--backend", "openvino")
    assert_one_line_error(code, err, "backend openvino: openvino is installed but does not "
                          "import (libopenvino.so", "pip install 'dino-edge[openvino]'")
    code, out, err = run_with_path(broken, *args)
    assert code == 0 and "frames 4" in out, err
    assert err.startswith("dino-run: warning: backend openvino: openvino is installed but does "
                          "not import"), err
    assert "running tiny16.onnx on onnxruntime instead" in err
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(HIDE)
    code, _, err = run_with_path(hidden, *args, "--backend", "openvino")
    assert_one_line_error(code, err, "backend openvino needs openvino: "
                          "pip install 'dino-edge[openvino]'")
    code, out, err = run_with_path(hidden, *args)  # not installed: auto takes the next row
    assert code == 0 and "warning: backend" not in err and "on onnxruntime" in err, err


def test_dino_run_says_which_backend_device_and_precision(tiny_onnx, video_60):
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--max-frames", "2",
                           "--no-display")
    assert code == 0, err
    assert f"on openvino, device CPU, precision {AUTO_PRECISION}, batch 8" in err
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--max-frames", "2",
                           "--precision", "fp32", "--no-display")
    assert code == 0 and "on openvino, device CPU, precision fp32" in err, err


# A guard for the telemetry test: every DNS lookup or connection is written to a log and
# refused, and the interpreter ends by listing what it created under $HOME.
GUARD = '''
import os, socket, sys
_LOG = os.environ["NET_LOG"]
def _refuse(*args, **kwargs):
    with open(_LOG, "a") as f:
        f.write(repr(args[:2]) + "\\n")
    raise OSError("network refused by the telemetry test")
socket.getaddrinfo = _refuse
socket.create_connection = _refuse
socket.socket.connect = lambda self, *a: _refuse(*a)
socket.socket.connect_ex = lambda self, *a: _refuse(*a)
'''
RUN = '''
import sys
from dino_runtime import Runtime, RenderOptions
rt = Runtime(sys.argv[1], backend="openvino")
n = sum(1 for _ in rt.stream(sys.argv[2], render=RenderOptions(attention=True)))
print("frames", n)
'''
CONVERT = '''
import sys, openvino
openvino.convert_model(sys.argv[1])  # the model-conversion API, which does send telemetry
print("converted")
'''


def guarded(script: str, tmp_path: Path, *args: str, prefix: tuple[str, ...] = ()
            ) -> tuple[str, list[str], str]:
    """(stdout+stderr, files under the fresh $HOME, network attempts) of ``script`` run with
    ``prefix`` (e.g. strace) in front of the interpreter."""
    home, guard, log = tmp_path / "home", tmp_path / "guard", tmp_path / "net.log"
    for folder in (home, guard):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
    log.unlink(missing_ok=True)
    (guard / "sitecustomize.py").write_text(GUARD)
    # CI variables would turn OpenVINO's telemetry off by themselves and hide what we check
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), NET_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(guard), str(ROOT)]))
    out = subprocess.run([*prefix, sys.executable, "-c", script, *args], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    created = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    return out.stdout + out.stderr, created, log.read_text() if log.exists() else ""


def test_no_telemetry_is_sent_or_stored(tiny_onnx, video_60, tmp_path):
    text, created, network = guarded(RUN, tmp_path, str(tiny_onnx), str(video_60))
    assert "frames 60" in text
    assert created == [] and network == "", (created, network)
    assert "permission to collect" not in text and "opt_in_out" not in text
    # The same guard sees OpenVINO's telemetry where it exists: its conversion API stores a
    # client id under $HOME/intel and tries to reach Google Analytics.
    text, created, network = guarded(CONVERT, tmp_path, str(tiny_onnx))
    assert "converted" in text
    assert any(p.startswith("intel") for p in created) or network, (
        "the guard saw no telemetry from openvino.convert_model: this check cannot tell "
        "whether the runtime sends any")


def test_unknown_device_for_the_openvino_backend_is_a_usage_error(tiny_onnx):
    with pytest.raises(OptionError):
        Runtime(tiny_onnx, backend="openvino", device="cuda")
    if not cpu_has_native_bf16():
        with pytest.raises(BackendUnavailable, match="no native bf16"):
            Runtime(tiny_onnx, backend="openvino", precision="bf16")


@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed (make test installs it where it can)")
def test_no_connection_from_native_code_either(tiny_onnx, video_60, tmp_path):
    """The same run under strace: no connect() to an internet address from any thread or
    child process, OpenVINO's C++ libraries included (the guard above sees Python only)."""
    trace = tmp_path / "connect.log"
    text, created, _ = guarded(RUN, tmp_path, str(tiny_onnx), str(video_60),
                               prefix=("strace", "-f", "-qq", "-e", "trace=connect", "-o",
                                       str(trace)))
    assert "frames 60" in text and created == []
    calls = trace.read_text().splitlines()
    assert not [c for c in calls if "AF_INET" in c], calls


def test_an_openvino_ir_of_an_exported_file_runs_with_its_metadata(tiny_onnx, tmp_path):
    ovb.ov.save_model(ovb.read_graph(ovb.shared_core(), tiny_onnx), str(tmp_path / "m.xml"),
                      compress_to_fp16=False)
    frames = np.random.default_rng(2).integers(0, 256, (3, 96, 160, 3), dtype=np.uint8)
    ir = Runtime(tmp_path / "m.xml", precision="fp32")
    ref = Runtime(tiny_onnx, backend="onnxruntime")
    assert ir.backend.name == "openvino" and ir.metadata == ref.metadata
    np.testing.assert_allclose(ir(frames).cls, ref(frames).cls, atol=1e-4)
