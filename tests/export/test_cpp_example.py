"""examples/cpp builds with CMake against OpenCV's DNN module and matches Python.

Needs cmake, a C++ compiler and OpenCV's development files (Debian: ``apt-get install cmake g++
libopencv-dev``); without them the test skips and says which is missing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dino_core.masks import cosine, mass_threshold_masks
from dino_export import ExportConfig, export_onnx
from dino_export.images import folder_images
from dino_models.checkpoint import load_backbone
from dino_runtime.preprocess import InputSpec, Preprocessor

SOURCE = Path(__file__).resolve().parents[2] / "examples" / "cpp"


def missing_toolchain() -> str | None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install cmake g++ libopencv-dev)"
    found = subprocess.run(["pkg-config", "--exists", "opencv4"], capture_output=True) \
        if shutil.which("pkg-config") else None
    if not list(Path("/usr").glob("**/OpenCVConfig.cmake")) and (found is None or found.returncode):
        return "OpenCV development files not found (apt-get install libopencv-dev)"
    return None


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    reason = missing_toolchain()
    if reason:
        pytest.skip(reason)
    build = tmp_path_factory.mktemp("cpp-build")
    for cmd in (["cmake", "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", str(build), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return build / "dino_attention"


def run_example(binary: Path, model: Path, image: Path, mask: Path) -> np.ndarray:
    proc = subprocess.run([str(binary), str(model), str(image), "--mask", str(mask)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("cls "))
    return np.array([float(v) for v in line.split(":", 1)[1].split()], np.float32)


@pytest.mark.parametrize("preprocess", [False, True])
def test_cpp_embedding_and_mask_match_python(binary, tiny_pretrained, photos, tmp_path,
                                              preprocess):
    size = (160, 224)
    model_path = export_onnx(tiny_pretrained, tmp_path / "m.onnx",
                             ExportConfig(img_size=size, preprocess=preprocess))
    images = folder_images(photos[1], 1, size)
    image = tmp_path / "image.png"
    cv2.imwrite(str(image), images[0])
    mask_path = tmp_path / "mask.png"
    cls_cpp = run_example(binary, model_path, image, mask_path)

    model, _ = load_backbone(tiny_pretrained)
    with torch.no_grad():
        x = Preprocessor(InputSpec(size))(images[0])[None]
        cls, attn = model.forward_cls_and_attention(torch.from_numpy(x))
    assert cls_cpp.shape == (192,)
    assert cosine(cls_cpp[None], cls.numpy())[0] >= 0.999
    assert np.abs(cls_cpp - cls.numpy()[0]).max() <= 1e-3

    grid = attn.reshape(1, 3, size[0] // 16, size[1] // 16).mean(1, keepdim=True).numpy()
    expected = np.kron(mass_threshold_masks(grid)[0, 0], np.ones((16, 16), bool))
    written = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    assert written.shape == size and set(np.unique(written)) <= {0, 255}
    got = written > 0
    assert (got & expected).sum() / (got | expected).sum() >= 0.95


def test_cpp_resizes_other_images_and_refuses_foreign_files(binary, tiny_pretrained, tmp_path):
    model_path = export_onnx(tiny_pretrained, tmp_path / "m.onnx")
    image = tmp_path / "wide.jpg"
    cv2.imwrite(str(image), np.full((300, 400, 3), 128, np.uint8))
    run_example(binary, model_path, image, tmp_path / "mask.png")
    assert cv2.imread(str(tmp_path / "mask.png"), cv2.IMREAD_GRAYSCALE).shape == (300, 400)
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"\x08\x07")  # a ModelProto with only ir_version
    proc = subprocess.run([str(binary), str(foreign), str(image)], capture_output=True, text=True)
    assert proc.returncode == 1 and "not a dino-export model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
