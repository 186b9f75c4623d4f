"""The TensorRT backend (what dino-run runs engines with, and what dino-export verifies them
with) on a CPU: TensorRT and cuda-python are faked (tests/fake_tensorrt.py), with exactly the
API of each supported release; the fake engine runs its ONNX graph with ONNX Runtime, reading
and writing the buffers the backend bound. Checked: fixed and dynamic batch, a batch below the
profile's minimum, uint8 input, fp16 outputs, a version mismatch, an unreadable engine."""
from __future__ import annotations

import json

import numpy as np
import pytest

from dino_core.errors import ModelError
from dino_core.metadata import BatchSpec, ModelMetadata
from dino_export.tensorrt import EngineConfig, build_engine
from dino_runtime import Runtime
from tests.fake_tensorrt import install

from .conftest import synthetic_frame


def metadata(onnx_path) -> ModelMetadata:
    import onnxruntime as ort

    from dino_runtime.backends.ort_backend import read_metadata
    return read_metadata(ort.InferenceSession(str(onnx_path)), str(onnx_path))


def engine_for(onnx_path, tmp_path, meta: ModelMetadata | None = None, name: str = "m.engine"):
    """An engine file and sidecar made by dino-export's builder with the installed fake."""
    return build_engine(onnx_path, tmp_path / name, EngineConfig(), meta or metadata(onnx_path))


def frames(n: int) -> np.ndarray:
    return np.stack([synthetic_frame(i) for i in range(n)])


def run_both(engine, onnx_path, n: int, batch: int = 8):
    """(engine outputs, CPU ONNX Runtime outputs) for the same ``n`` frames."""
    trt = Runtime(engine, backend="tensorrt", device="cuda", batch_size=batch, threshold=None)
    cpu = Runtime(onnx_path, backend="onnxruntime", device="cpu", batch_size=batch,
                  threshold=None)
    return trt, trt(frames(n)), cpu(frames(n))


@pytest.mark.parametrize("role", ["10.3", "10.x", "11.x"])
def test_dynamic_batch_engine_matches_onnx_runtime(monkeypatch, tmp_path, tiny_onnx, role):
    install(monkeypatch, role)
    engine = engine_for(tiny_onnx, tmp_path)
    rt, got, ref = run_both(engine, tiny_onnx, n=11, batch=4)  # calls of 4, 4 and 3 frames
    assert rt.backend.name == "tensorrt" and rt.device.startswith(f"TensorRT {role[:2]}")
    for name in ("cls", "attn", "patch"):
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name))


def test_fixed_batch_engine_gets_padded_calls(monkeypatch, tmp_path, tiny_onnx_b3):
    install(monkeypatch, "11.x")
    onnx_path = tiny_onnx_b3
    _, got, ref = run_both(engine_for(onnx_path, tmp_path), onnx_path, n=5)
    assert got.cls.shape == (5, 192)
    np.testing.assert_array_equal(got.attn, ref.attn)


def test_a_batch_below_the_profile_minimum_is_padded(monkeypatch, tmp_path, tiny_onnx):
    fake = install(monkeypatch, "10.x")
    meta = metadata(tiny_onnx).with_(batch=BatchSpec.of(dynamic=(3, 4, 16)))
    engine = engine_for(tiny_onnx, tmp_path, meta)
    assert fake._builds[0].profiles == [{"images": ((3, 3, 64, 96), (4, 3, 64, 96),
                                                    (16, 3, 64, 96))}]
    _, got, ref = run_both(engine, tiny_onnx, n=1)
    np.testing.assert_array_equal(got.cls, ref.cls)


def test_uint8_input_and_fp16_outputs(monkeypatch, tmp_path, tiny_onnx_bgr):
    install(monkeypatch, "11.x", output_dtype="HALF")
    engine = engine_for(tiny_onnx_bgr, tmp_path)
    rt, got, ref = run_both(engine, tiny_onnx_bgr, n=6)
    assert rt.backend.buffers["images_bgr"][1] == np.uint8
    assert rt.backend.buffers["cls"][1] == np.float16 and got.cls.dtype == np.float32
    np.testing.assert_allclose(got.cls, ref.cls, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(got.attn, ref.attn, rtol=1e-3, atol=1e-5)


def test_an_engine_from_another_tensorrt_is_refused(monkeypatch, tmp_path, tiny_onnx):
    install(monkeypatch, "10.x")
    engine = engine_for(tiny_onnx, tmp_path)
    sidecar = engine.with_name(engine.name + ".json")
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()),
                                   "tensorrt_version": "10.3.0"}))
    with pytest.raises(ModelError, match=r"built with TensorRT 10\.3\.0, this machine has 10\."):
        Runtime(engine, backend="tensorrt", device="cuda")


def test_an_unreadable_engine_is_one_line(monkeypatch, tmp_path, tiny_onnx):
    install(monkeypatch, "11.x")
    engine = engine_for(tiny_onnx, tmp_path)
    engine.write_bytes(b"an engine for another GPU")
    with pytest.raises(ModelError, match="cannot load this engine .* rebuild it"):
        Runtime(engine, backend="tensorrt", device="cuda")


def test_an_engine_whose_input_type_disagrees_with_its_metadata(monkeypatch, tmp_path, tiny_onnx):
    install(monkeypatch, "11.x", input_dtype="HALF")
    with pytest.raises(ModelError, match="is float16, its metadata says float_nchw"):
        Runtime(engine_for(tiny_onnx, tmp_path), backend="tensorrt", device="cuda")
