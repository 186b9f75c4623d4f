"""dino-export verifies the file on every CPU engine that runs it: ONNX Runtime, and OpenVINO
in the precision dino-run's auto gives it (when installed), and prints both tables."""
from __future__ import annotations

import importlib.util

import pytest

from dino_core.errors import UserError
from dino_core.precision import cpu_has_native_bf16
from dino_export.config import ExportConfig
from dino_export.pipeline import ExportRequest, run_export
from dino_runtime.backends import BACKENDS, BackendCannotRun

AUTO_PRECISION = "bf16" if cpu_has_native_bf16() else "fp32"
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="the openvino extra is not installed")


def export(checkpoint, out, lines: list[str]):
    return run_export(ExportRequest(str(checkpoint), out, ExportConfig(img_size=(160, 224))),
                      log=lines.append)


@needs_openvino
def test_both_engines_verify_and_print_their_rows(tiny_pretrained, tmp_path):
    lines: list[str] = []
    result = export(tiny_pretrained, tmp_path / "m.onnx", lines)
    assert [r.runner for r in result.reports] == ["onnxruntime (CPUExecutionProvider)",
                                                  "openvino (CPU)"]
    assert [r.precision for r in result.reports] == ["fp32", AUTO_PRECISION]
    assert all(r.passed for r in result.reports)
    text = "\n".join(lines)
    assert "onnxruntime (CPUExecutionProvider) vs PyTorch float32" in text
    assert "openvino (CPU) vs PyTorch float32" in text and f"{AUTO_PRECISION} bounds" in text
    # verified under a temporary name, with no compile cache left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@needs_openvino
def test_failing_on_openvino_keeps_the_file_unverified_and_names_the_engine(
        tiny_pretrained, tmp_path, monkeypatch):
    # OpenVINO alone gives wrong embeddings (negated), on any CPU: ONNX Runtime passes, OpenVINO
    # fails its bounds (cosine in bf16, max abs error in fp32), and the message names it.
    from dino_runtime.backends import openvino_backend
    run = openvino_backend.OpenVINOBackend.run

    def negated(self, images):
        out = run(self, images)
        out.cls = -out.cls
        return out
    monkeypatch.setattr(openvino_backend.OpenVINOBackend, "run", negated)
    with pytest.raises(UserError, match=r"verification of m.onnx failed \(openvino \(CPU\): "
                                        r"synthetic: (cosine|max abs error)") as e:
        export(tiny_pretrained, tmp_path / "m.onnx", [])
    assert "onnxruntime" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.unverified"]


def test_without_openvino_only_onnxruntime_verifies(tiny_pretrained, tmp_path, monkeypatch):
    monkeypatch.setattr(type(BACKENDS["openvino"]), "missing",
                        lambda self: ["openvino"] if self.name == "openvino" else [])
    result = export(tiny_pretrained, tmp_path / "m.onnx", [])
    assert [r.runner for r in result.reports] == ["onnxruntime (CPUExecutionProvider)"]


@needs_openvino
def test_a_file_openvino_cannot_compile_is_verified_where_auto_runs_it(tiny_pretrained, tmp_path,
                                                                       monkeypatch):
    from dino_runtime.backends import openvino_backend

    def refuse(self, path, options):
        raise BackendCannotRun(f"OpenVINO cannot compile {path.name} for CPU (test)")
    monkeypatch.setattr(openvino_backend.OpenVINOBackend, "__init__", refuse)
    lines: list[str] = []
    result = export(tiny_pretrained, tmp_path / "m.onnx", lines)
    assert [r.runner for r in result.reports] == ["onnxruntime (CPUExecutionProvider)"]
    assert any(line.startswith("openvino: not verified: OpenVINO cannot compile") and
               "runs it on onnxruntime" in line for line in lines)
