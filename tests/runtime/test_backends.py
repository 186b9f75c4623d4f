"""Backends: onnxruntime and torch agree on the same checkpoint (fp32, tolerance 1e-4), the uint8
graph with baked preprocessing agrees with the float one, and the table refuses what it cannot
run with a reason."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from dino_core.errors import BackendUnavailable, ModelError, OptionError
from dino_runtime import Runtime
from dino_runtime.backends import (
    BACKENDS,
    BackendOptions,
    backend_for,
    load_backend,
    markdown_table,
)
from dino_runtime.backends.cuda import cuda_device_count
from dino_runtime.backends.ort_backend import choose_providers

from .conftest import MODEL_HW, ROOT, synthetic_frame

PARITY_TOL = 1e-4  # fp32 ORT vs PyTorch on the same weights (export verifies 1e-5 per graph)


def frames(n: int, size=(96, 160)) -> np.ndarray:
    return np.stack([synthetic_frame(7 * i + 1, size) for i in range(n)])


def test_onnxruntime_and_torch_give_the_same_outputs(tiny_onnx, tiny_checkpoint):
    batch = frames(5)
    ort_rt = Runtime(tiny_onnx, backend="onnxruntime", batch_size=4)
    torch_rt = Runtime(tiny_checkpoint, backend="torch", precision="fp32", input_size=MODEL_HW)
    assert ort_rt.backend.name == "onnxruntime" and ort_rt.device == "CPUExecutionProvider"
    assert torch_rt.backend.name == "torch"
    a, b = ort_rt(batch), torch_rt(batch)
    assert a.cls.shape == (5, 192) and a.attn.shape == (5, 3, 4, 6) and a.patch.shape == (5, 24, 192)
    for name in ("cls", "attn", "patch"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=PARITY_TOL, rtol=0,
                                   err_msg=name)
    np.testing.assert_array_equal(a.masks, b.masks)


def test_baked_uint8_preprocessing_matches_float_graph(tiny_onnx, tiny_onnx_bgr):
    batch = frames(3)
    float_rt = Runtime(tiny_onnx, backend="onnxruntime")
    bgr_rt = Runtime(tiny_onnx_bgr, backend="onnxruntime")
    assert bgr_rt.metadata.input_format == "uint8_nhwc_bgr" and bgr_rt(batch).patch is None
    np.testing.assert_allclose(float_rt(batch).cls, bgr_rt(batch).cls, atol=1e-4)
    np.testing.assert_allclose(float_rt(batch).attn, bgr_rt(batch).attn, atol=1e-5)


def test_torch_auto_precision_is_what_this_cpu_runs_natively(tiny_checkpoint):
    # The path auto takes here, on any CPU: bf16 only with native bf16 (AVX512-BF16 or AMX).
    from dino_core.precision import cpu_has_native_bf16
    rt = Runtime(tiny_checkpoint, backend="torch", input_size=MODEL_HW, warmup=False)
    assert rt.backend.precision == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_torch_bf16_stays_close_to_fp32(tiny_checkpoint):
    from dino_core.precision import cpu_has_native_bf16
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16: the bf16 path is not taken here")
    batch = frames(2)
    fp32 = Runtime(tiny_checkpoint, backend="torch", precision="fp32", input_size=MODEL_HW)(batch)
    auto = Runtime(tiny_checkpoint, backend="torch", input_size=MODEL_HW)
    assert auto.metadata.precision == "bf16"
    bf16 = auto(batch)
    cos = (fp32.cls * bf16.cls).sum(1) / np.linalg.norm(fp32.cls, axis=1) / np.linalg.norm(bf16.cls, axis=1)
    assert cos.min() > 0.99
    np.testing.assert_allclose(bf16.attn, fp32.attn, atol=2e-2)


def test_torch_backend_default_size_follows_the_source_aspect(tiny_checkpoint):
    rt = Runtime(tiny_checkpoint, backend="torch", precision="fp32", frame_size=(720, 1280))
    assert rt.metadata.img_size == (224, 400)


def test_table_picks_by_suffix_and_refuses_mismatches(tiny_onnx, tmp_path):
    assert set(BACKENDS) == {"tensorrt", "openvino", "onnxruntime", "torch"}
    assert backend_for("m.onnx", device="cuda").name == "onnxruntime"
    assert backend_for("m.xml").name == "openvino"
    assert backend_for("m.engine").name == "tensorrt"
    assert backend_for("m.pth").name == "torch"
    with pytest.raises(ModelError, match="unknown model type '.bin'"):
        backend_for("m.bin")
    with pytest.raises(ModelError, match="--backend torch reads .pth"):
        backend_for(tiny_onnx, "torch")
    with pytest.raises(OptionError, match="unknown backend"):
        backend_for(tiny_onnx, "tflite")
    with pytest.raises(ModelError, match="no such model file"):
        load_backend(tmp_path / "missing.onnx")


def test_onnx_without_dino_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper
    node = helper.make_node("Identity", ["images"], ["cls"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("cls", TensorProto.FLOAT, [1, 3])])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    with pytest.raises(ModelError, match="not a dino-export model.*export it with dino-export"):
        load_backend(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ModelError, match="not a readable ONNX model"):
        load_backend(tmp_path / "junk.onnx")


def test_execution_providers_without_a_gpu(tiny_onnx):
    if cuda_device_count():
        pytest.skip("this machine has a GPU; the GPU check script covers the CUDA providers")
    assert choose_providers("auto", tiny_onnx) == ["CPUExecutionProvider"]
    assert choose_providers("cpu", tiny_onnx) == ["CPUExecutionProvider"]
    with pytest.raises(BackendUnavailable, match="no CUDA driver or device; use --device cpu"):
        choose_providers("cuda", tiny_onnx)
    with pytest.raises(OptionError, match="unknown device"):
        choose_providers("gpu0", tiny_onnx)


def test_onnxruntime_runs_q_dq_pairs_as_float_ops_only_when_asked(tiny_onnx):
    """qdq_fusion=False (dino-export's check of a graph only TensorRT runs) reaches the session;
    users' sessions keep ONNX Runtime's int8 kernels."""
    key = "session.disable_quant_qdq"
    plain = load_backend(tiny_onnx, "onnxruntime", BackendOptions(device="cpu"))
    unfused = load_backend(tiny_onnx, "onnxruntime",
                           BackendOptions(device="cpu", qdq_fusion=False))
    with pytest.raises(RuntimeError, match="does not have configuration with key"):
        plain.session.get_session_options().get_session_config_entry(key)  # never set
    assert unfused.session.get_session_options().get_session_config_entry(key) == "1"
    assert (plain.qdq_fusion, unfused.qdq_fusion) == (True, False)


@pytest.mark.parametrize("flags, bits, host, fusion, warns", [
    ({"ssse3", "avx2", "fma"}, 8, True, True, True),        # AVX2 only: 8-bit weights saturate
    ({"ssse3", "avx2", "fma"}, 0, True, True, True),        # no weight_bits: written with 8
    ({"ssse3", "avx2", "fma"}, 7, True, True, False),       # 7-bit weights cannot saturate
    ({"ssse3", "avx512f", "avx512_vnni"}, 8, True, True, False),  # VNNI sums in int32
    ({"ssse3", "avx2", "avx_vnni"}, 8, True, True, False),
    ({"ssse3", "avx2"}, 8, False, True, False),              # not CPU kernels (a GPU)
    ({"ssse3", "avx2"}, 8, True, False, False),              # Q/DQ as float ops
    ({"fp", "asimd", "asimddp"}, 8, True, True, False),      # not x86
])
def test_int8_files_with_8_bit_weights_warn_where_cpu_kernels_saturate_them(
        monkeypatch, flags, bits, host, fusion, warns):
    from types import SimpleNamespace

    from dino_core import precision
    from dino_runtime.backends.base import int8_saturation_warning
    from tests.core.malformed_metadata import valid_metadata
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    meta = valid_metadata().with_(precision="int8", weight_bits=bits)
    backend = SimpleNamespace(metadata=meta, runs_on_host=host, qdq_fusion=fusion)
    warning = int8_saturation_warning("m.onnx", backend)
    assert (warning is not None) == warns, warning
    if warns:
        assert warning.startswith("m.onnx: an int8 file with ") and "without VNNI" in warning
        assert warning.endswith("again with dino-export --precision int8 (7-bit weights)")
    fp32 = SimpleNamespace(metadata=valid_metadata(), runs_on_host=host, qdq_fusion=fusion)
    assert int8_saturation_warning("m.onnx", fp32) is None


def test_loading_an_int8_file_with_8_bit_weights_warns_on_an_avx2_cpu(monkeypatch, tiny_onnx,
                                                                       tmp_path, caplog):
    # The file's metadata says int8 with 8-bit weights (its graph stays fp32: the warning reads
    # the metadata and the CPU, nothing else).
    import onnx

    from dino_core import precision
    proto = onnx.load(str(tiny_onnx))
    for prop in proto.metadata_props:
        prop.value = {"dino.precision": '"int8"'}.get(prop.key, prop.value)
    proto.metadata_props.add(key="dino.weight_bits", value="8")
    onnx.save(proto, str(tmp_path / "q.onnx"))
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"ssse3", "avx2", "fma"}))
    with caplog.at_level("WARNING", logger="dino_runtime"):
        load_backend(tmp_path / "q.onnx", "onnxruntime", BackendOptions(device="cpu"))
        load_backend(tiny_onnx, "onnxruntime", BackendOptions(device="cpu"))
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["q.onnx"]


def test_tensorrt_engine_without_tensorrt_says_what_to_install(tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not an engine")
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here; scripts/gpu_check.sh runs engines")
    with pytest.raises(BackendUnavailable, match=r"pip install 'dino-edge\[trt\]'"):
        load_backend(engine)
    from dino_runtime.backends.trt_backend import TensorRTBackend
    with pytest.raises(BackendUnavailable, match="GPUs only"):
        TensorRTBackend(engine, BackendOptions(device="cpu"))


# The TensorRT EP's option names in onnxruntime-gpu 1.31.0 (PyPI wheel), as its
# libonnxruntime_providers_tensorrt.so spells them (the strings of the library).
ORT_131_TENSORRT_OPTIONS = {
    "device_id", "trt_auxiliary_streams", "trt_bf16_enable", "trt_build_heuristics_enable",
    "trt_builder_optimization_level", "trt_context_memory_sharing_enable",
    "trt_cuda_graph_enable", "trt_detailed_build_log", "trt_dla_core", "trt_dla_enable",
    "trt_dump_ep_context_model", "trt_dump_subgraphs", "trt_engine_cache_enable",
    "trt_engine_cache_path", "trt_engine_cache_prefix", "trt_engine_decryption_enable",
    "trt_engine_decryption_lib_path", "trt_engine_hw_compatible", "trt_ep_context_embed_mode",
    "trt_ep_context_file_path", "trt_extra_plugin_lib_paths", "trt_force_sequential_engine_build",
    "trt_force_timing_cache", "trt_fp16_enable", "trt_int8_calibration_table_name",
    "trt_int8_enable", "trt_int8_use_native_calibration_table", "trt_layer_norm_fp32_fallback",
    "trt_max_partition_iterations", "trt_max_workspace_size", "trt_min_subgraph_size",
    "trt_op_types_to_exclude", "trt_profile_max_shapes", "trt_profile_min_shapes",
    "trt_profile_opt_shapes", "trt_sparsity_enable", "trt_tactic_sources",
    "trt_timing_cache_enable", "trt_timing_cache_path", "trt_weight_stripped_engine_enable"}


def test_the_tensorrt_provider_builds_strongly_typed(monkeypatch, tiny_onnx):
    """On a GPU machine with onnxruntime-gpu and TensorRT, the TensorRT EP leads the chain with
    its precision switches off (a strongly typed network: the file's types decide), named as
    ONNX Runtime 1.31 names them."""
    import onnxruntime as ort

    from dino_runtime.backends import ort_backend
    monkeypatch.setattr(ort_backend.cuda, "cuda_device_count", lambda: 1)
    monkeypatch.setattr(ort_backend.cuda, "require_cuda", lambda index: None)
    monkeypatch.setattr(ort_backend.cuda, "tensorrt_libraries_present", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    (trt_ep, trt_options), (cuda_ep, _), cpu_ep = choose_providers("cuda:0", tiny_onnx)
    assert (trt_ep, cuda_ep, cpu_ep) == ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                         "CPUExecutionProvider")
    assert set(trt_options) <= ORT_131_TENSORRT_OPTIONS
    assert trt_options["trt_fp16_enable"] is False and trt_options["trt_int8_enable"] is False
    assert trt_options["trt_engine_cache_path"] == str(tiny_onnx.parent / ".tiny16.trt-cache")


def test_the_tensorrt_library_the_provider_needs(tmp_path):
    from dino_runtime.backends.cuda import nvinfer_sonames
    provider = tmp_path / "libonnxruntime_providers_tensorrt.so"
    provider.write_bytes(b"\x7fELF...\x00libcublas.so.13\x00libnvinfer.so.10\x00libc.so.6\x00")
    assert nvinfer_sonames(provider) == ["libnvinfer.so.10"]
    assert nvinfer_sonames(tmp_path / "absent.so") == ["libnvinfer.so.10", "libnvinfer.so.11"]


def test_readme_has_the_backend_table_in_autos_order_and_the_rule():
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Backends\n")
    section = text[start:text.index("\n## ", start + 1)]
    assert markdown_table() in section
    assert "**`--backend auto`** takes the first row of the table, in this order" in section
