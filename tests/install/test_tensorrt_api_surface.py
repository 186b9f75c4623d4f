"""Every TensorRT name the toolkit uses exists in each supported release: JetPack 6's 10.3, the
newest 10.x and the newest 11.x. Offline: the names come from the lists that
scripts/trt_api_surface.py wrote from the releases' PyPI wheels (its docstring says how to
refresh them); the check is static (tests/tensorrt_api.py)."""
from __future__ import annotations

import pytest

from tests.tensorrt_api import ROOT, check_source, load, modules_calling_tensorrt, roles

# What main's weak-typing builder did (dino_export/tensorrt.py before strong typing), cut down:
# each line is an API that TensorRT 11 removed (NVIDIA, "Migrating from TensorRT 10.x to 11.x").
WEAK_TYPING = '''
def build(onnx_path, calibrator):
    import tensorrt as trt
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    config.set_flag(trt.BuilderFlag.INT8)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layer.precision = trt.float32
        layer.set_output_type(0, trt.float32)
    config.int8_calibrator = calibrator
    config.set_calibration_profile(builder.create_optimization_profile())

def calibrator(trt):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        pass
'''
REMOVED_IN_11 = ["NetworkDefinitionCreationFlag.EXPLICIT_BATCH", "BuilderFlag.FP16",
                 "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "BuilderFlag.INT8", ".precision",
                 ".set_output_type", ".int8_calibrator", ".set_calibration_profile",
                 "IInt8EntropyCalibrator2"]


def test_the_stored_lists_are_the_supported_releases():
    assert roles() == ["10.3", "10.x", "11.x"]
    assert [load(r).major for r in roles()] == [10, 10, 11]
    assert load("10.3").version == "10.3.0"
    # facts NVIDIA's migration guide states, as the lists record them
    for name in ("BuilderFlag.FP16", "BuilderFlag.INT8", "IBuilderConfig.int8_calibrator",
                 "IInt8EntropyCalibrator2", "ILayer.set_output_type"):
        assert load("10.3").has(name) and load("10.x").has(name) and not load("11.x").has(name)
    for name in ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",
                 "IExecutionContext.execute_async_v3", "IExecutionContext.set_tensor_address"):
        assert all(load(r).has(name) for r in roles())


def test_the_modules_that_call_tensorrt_are_all_checked():
    found = {p.relative_to(ROOT).as_posix() for p in modules_calling_tensorrt()}
    assert {"dino_export/tensorrt.py", "dino_runtime/backends/trt_backend.py"} <= found


@pytest.mark.parametrize("role", ["10.3", "10.x", "11.x"])
def test_the_toolkit_uses_only_names_the_release_has(role):
    api = load(role)
    problems = {p.relative_to(ROOT).as_posix(): check_source(p.read_text(), api)
                for p in modules_calling_tensorrt()}
    assert not any(problems.values()), problems


def test_the_check_fails_on_the_weak_typing_api_tensorrt_11_removed():
    assert check_source(WEAK_TYPING, load("10.x")) == []
    problems = "\n".join(check_source(WEAK_TYPING, load("11.x")))
    missing = [name for name in REMOVED_IN_11 if name not in problems]
    assert not missing, problems
