"""scripts/gpu_check.sh and what its export section runs, on a CPU: its argument check, a missing
TensorRT reported as a failure (never a pass), and the whole engine check with TensorRT faked
(tests/fake_tensorrt.py): dino-export --trt, dino-run on the engine, the comparison with CPU ONNX
Runtime. TensorRT itself runs only on a GPU."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch

from dino_export.images import synthetic_images
from tests.conftest import tiny_vit
from tests.fake_tensorrt import install

REPO = Path(__file__).resolve().parents[2]
ENGINE_CHECK = REPO / "scripts" / "gpu_engine_check.py"


def run_script(args: list[str], fake: str | None = None, timeout: int = 600):
    env = dict(os.environ)
    if fake:  # every process the script starts sees the fake TensorRT (tests/fake_site)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests" / "fake_site")])
        env["DINO_FAKE_TENSORRT"] = fake
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)


@pytest.fixture
def frames(tmp_path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, img in enumerate(synthetic_images(6, (240, 320), seed=11)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), img)
    return folder


def heredocs(script: str) -> list[str]:
    """The Python programs a shell script feeds to ``"$PY" - ... <<'PYEOF'``."""
    blocks, lines, inside = [], [], False
    for line in script.splitlines():
        if inside and line == "PYEOF":
            blocks.append("\n".join(lines))
            lines, inside = [], False
        elif inside:
            lines.append(line)
        elif line.rstrip().endswith("<<'PYEOF'") or "<<'PYEOF' |" in line:
            inside = True
    return blocks


GPU_ONLY = {"tensorrt"}


def test_gpu_check_is_valid_bash_and_its_python_imports_exist():
    """The script runs only on a GPU: here, its syntax and the names its Python blocks import
    (the export and runtime sections once imported a module that had moved)."""
    assert run_script(["bash", "-n", "scripts/gpu_check.sh"]).returncode == 0
    blocks = heredocs((REPO / "scripts" / "gpu_check.sh").read_text())
    assert len(blocks) >= 4
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)
                           and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
                assert not missing, f"from {node.module} import {missing}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    # TensorRT installs only on GPU machines (its API: tests/install/
                    # test_tensorrt_api_surface.py); every other module must be importable here
                    assert top in GPU_ONLY or importlib.util.find_spec(top), alias.name


def test_gpu_check_refuses_an_unknown_section():
    proc = run_script(["bash", "scripts/gpu_check.sh", "export", "tensorrt"])
    assert proc.returncode == 2
    assert "no section 'tensorrt' (training, export, runtime, dinov2)" in proc.stderr


def test_engine_check_without_tensorrt_fails(tiny_pretrained, frames, photos, tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here: the GPU check runs the engines")
    proc = run_script([sys.executable, str(ENGINE_CHECK), str(tiny_pretrained), str(frames),
                       str(photos[1]), str(tmp_path / "out"), "--precisions", "fp32"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = proc.stdout.strip().splitlines()
    assert line.startswith("engine fp32: FAIL: dino-export --trt fp32: dino-export: TensorRT is "
                           "not installed")
    assert "m.onnx is written and verified" in line and ": trtexec --onnx=" in line


def test_engine_check_runs_every_precision_through_dino_run(tiny_pretrained, frames, photos,
                                                            tmp_path):
    # fp16 and int8 (the engines built from a graph of their own); the fp32 engine, built from
    # m.onnx itself, is test_tensorrt_engine's (each precision here costs ~13 s)
    proc = run_script([sys.executable, str(ENGINE_CHECK), str(tiny_pretrained), str(frames),
                       str(photos[1]), str(tmp_path / "out"), "--precisions", "fp16,int8"],
                      fake="11.x")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["engine fp16", "engine int8"]
    assert all(": OK: 6 frames, " in line for line in lines), lines
    assert "min cosine" in lines[0] and "min cosine" in lines[1]
    out = tmp_path / "out"
    assert {p.name for p in out.glob("m.*")} >= {
        "m.onnx", "m.fp16.onnx", "m.int8-trt.onnx", "m.fp16.engine", "m.int8.engine"}


def test_engine_check_refuses_an_unknown_precision(tmp_path):
    proc = run_script([sys.executable, str(ENGINE_CHECK), "c.pth", "f", "c", str(tmp_path),
                       "--precisions", "fp16,bf16"])
    assert proc.returncode == 2 and "unknown 'bf16'" in proc.stderr


def test_bench_export_gpu_runs_and_fails_what_it_cannot_run(monkeypatch, tmp_path, capsys):
    """The benchmark on a CPU with a fake TensorRT 10.x: the engines pass, the ONNX Runtime GPU
    providers this onnxruntime lacks are failures, so the exit code is 1."""
    spec = importlib.util.spec_from_file_location("bench_export_gpu",
                                                  REPO / "benchmarks" / "bench_export_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    install(monkeypatch, "10.x")
    from dino_export import tensorrt as trt_export
    monkeypatch.setattr(trt_export, "gpu_visible", lambda: True)
    monkeypatch.setattr(bench, "SECONDS", 0.0)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(bench.Check, "baseline", lambda self, model: None)
    assert bench.main(tmp_path, model=tiny_vit()) == 1
    out = capsys.readouterr().out
    for precision in ("fp32", "fp16", "int8"):
        assert f"| TensorRT engine {precision} | 8 |" in out
        assert f"TensorRT engine {precision} | 8 | " in out and "| PASS |" in out
    assert "ORT CUDA EP, fp32 graph: FAIL: not in this onnxruntime" in out
    assert "failed: ORT CUDA EP" in out and "TensorRT engine" not in out.split("failed:")[1]
