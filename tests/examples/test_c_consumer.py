"""examples/c (``dino_embed``, OpenVINO's C API) builds with CMake against the openvino wheel
and matches the Python runtime on the same frames.

Needs cmake and a C compiler (``make sysdeps`` installs them); without them the tests skip and
say which is missing. The reference is ``dino_runtime.Runtime`` on ONNX Runtime in fp32, the
toolkit's reference backend, for both of the C program's precisions: fp32 must agree to CLS
cosine >= 0.9999, bf16 (OpenVINO's inference precision hint, on CPUs with native bf16) to
>= 0.999; masks (official mass threshold 0.6, head mean) to IoU >= 0.95 per frame. Real frames
come from ../shared/data/videos (that comparison skips without them); synthetic frames always.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from dino_core.masks import cosine, mask_iou
from dino_core.precision import cpu_has_native_bf16
from dino_export import ExportConfig, export_onnx
from dino_export.images import synthetic_images
from dino_runtime import Runtime
from dino_runtime.preprocess import InputSpec, Preprocessor
from tests.conftest import DATA_DIR, tiny_vit

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "examples" / "c"
SIZE = (128, 224)                       # (H, W): the video's 16:9 at patch 16, grid 8 x 14
GRID = (SIZE[0] // 16, SIZE[1] // 16)
CLS_COSINE = {"fp32": 0.9999, "bf16": 0.999}
MASK_IOU = 0.95
# Six frames in calls of four: the second call is padded, its padding rows must not be written.
VIDEO_FRAMES = {"01_dog.mp4": (0, 90), "02_cups.mp4": (0, 90), "03_blocks.mp4": (0, 90)}
CMAKE_QUERY = "from openvino.utils import get_cmake_path; print(get_cmake_path())"
# TBB dlopens libtbbbind with RTLD_DEEPBIND unless told not to; the sanitizer runtime refuses it.
SANITIZER_ENV = {"TBB_ENABLE_SANITIZERS": "1", "ASAN_OPTIONS": "detect_leaks=1"}


def missing_toolchain() -> str | None:
    for tool in ("cmake", "cc"):
        if shutil.which(tool) is None:
            return f"{tool} not found (apt-get install cmake gcc, or make sysdeps)"
    return None


def openvino_cmake_dir() -> str:
    """The README's one-line query for the wheel's cmake folder."""
    proc = subprocess.run([sys.executable, "-c", CMAKE_QUERY], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip(), (
        "openvino is not installed (pip install 'dino-edge[openvino]'): " + proc.stderr[-500:])
    return proc.stdout.strip()


def build(out: Path, *options: str) -> Path:
    reason = missing_toolchain()
    if reason:
        pytest.skip(reason)
    configure = ["cmake", "-S", str(SOURCE), "-B", str(out),
                 f"-DOpenVINO_DIR={openvino_cmake_dir()}", *options]
    for cmd in (configure, ["cmake", "--build", str(out), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out / "dino_embed"


def compiler_has_sanitizers(work: Path) -> bool:
    source = work / "probe.c"
    source.write_text("int main(void) { return 0; }\n")
    return subprocess.run(["cc", "-fsanitize=address,undefined", str(source), "-o",
                           str(work / "probe")], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def binary(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("c-build"))


@pytest.fixture(scope="module")
def sanitized_binary(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("c-asan")
    if missing_toolchain() is None and not compiler_has_sanitizers(work):
        pytest.skip("the C compiler cannot link -fsanitize=address,undefined (apt-get install "
                    "libasan8 libubsan1)")
    return build(work / "build", "-DDINO_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=Debug")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The tiny ViT exported with --preprocess at SIZE: fixed batch 1, and dynamic 1..8."""
    folder = tmp_path_factory.mktemp("c-models")
    model = tiny_vit()
    return {"fixed": export_onnx(model, folder / "fixed.onnx",
                                 ExportConfig(img_size=SIZE, preprocess=True)),
            "dynamic": export_onnx(model, folder / "dynamic.onnx",
                                   ExportConfig(img_size=SIZE, preprocess=True,
                                                dynamic_batch=(1, 4, 8)))}


def at_model_size(images: list[np.ndarray]) -> np.ndarray:
    """(N, H, W, 3) uint8 BGR at SIZE, resized as the Python runtime resizes."""
    resize = Preprocessor(InputSpec(SIZE)).resize
    return np.stack([resize(image) for image in images])


@pytest.fixture(scope="module")
def real_frames() -> np.ndarray:
    videos = DATA_DIR / "videos"
    if not all((videos / name).is_file() for name in VIDEO_FRAMES):
        pytest.skip(f"real frames: {', '.join(VIDEO_FRAMES)} not found in {videos}")
    frames = []
    for name, indices in VIDEO_FRAMES.items():
        cap = cv2.VideoCapture(str(videos / name))
        for index in range(max(indices) + 1):
            ok, image = cap.read()
            assert ok, f"{name}: could not decode frame {index}"
            if index in indices:
                frames.append(image)
        cap.release()
    return at_model_size(frames)


def run_c(binary: Path, model: Path, frames: np.ndarray, work: Path, *args: str,
          pipe: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """dino_embed on ``frames`` (a raw bgr24 file, or standard input with ``pipe``)."""
    cmd = [str(binary), str(model), "-" if pipe else str(work / "frames.bgr"),
           "--cls", str(work / "cls.npy"), "--masks", str(work / "masks.npy"), *args]
    if not pipe:
        frames.tofile(work / "frames.bgr")
    return subprocess.run(cmd, input=frames.tobytes() if pipe else None, capture_output=True,
                          timeout=300, env={**os.environ, **(env or {})})


def python_reference(model: Path, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cls (N, D), masks (N, h, w)) from the Python runtime, ONNX Runtime fp32."""
    out = Runtime(model, backend="onnxruntime", device="cpu", batch_size=4, threshold=0.6)(frames)
    return out.cls, out.masks[:, 0]


def assert_matches_python(work: Path, model: Path, frames: np.ndarray, precision: str) -> None:
    cls, masks = np.load(work / "cls.npy"), np.load(work / "masks.npy")
    assert cls.dtype == np.float32 and cls.shape == (len(frames), 192)
    assert masks.dtype == bool and masks.shape == (len(frames), *GRID)
    ref_cls, ref_masks = python_reference(model, frames)
    assert cosine(cls, ref_cls).min() >= CLS_COSINE[precision]
    assert mask_iou(masks, ref_masks).min() >= MASK_IOU
    assert 0 < masks.sum() < masks.size  # a mask that keeps nothing or everything matches nothing


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dino_embed: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_c_embeddings_and_masks_match_python_on_real_frames(binary, models, real_frames,
                                                            tmp_path, precision):
    if precision == "bf16" and not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    proc = run_c(binary, models["dynamic"], real_frames, tmp_path, "--batch", "4",
                 "--precision", precision)
    assert proc.returncode == 0, proc.stderr.decode()
    stdout = proc.stdout.decode()
    assert "frames: 6 in 2 calls of batch 4" in stdout
    assert f"inference precision {'f32' if precision == 'fp32' else 'bf16'}" in stdout
    assert_matches_python(tmp_path, models["dynamic"], real_frames, precision)


def test_c_reads_frames_from_a_pipe_and_matches_python(binary, models, tmp_path):
    frames = at_model_size(list(synthetic_images(3, (240, 320), seed=5)))
    proc = run_c(binary, models["fixed"], frames, tmp_path, pipe=True)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "frames: 3 in 3 calls of batch 1" in proc.stdout.decode()
    assert_matches_python(tmp_path, models["fixed"], frames, "fp32")


def broken_graph(model: Path, out: Path) -> Path:
    """``model`` with its metadata intact and one node of an op no engine knows."""
    proto = onnx.load(str(model))
    proto.graph.node[len(proto.graph.node) // 2].op_type = "NoSuchOp"
    onnx.save(proto, str(out))
    return out


def test_c_sanitized_build_has_no_leaks_or_memory_errors(sanitized_binary, models, tmp_path):
    """AddressSanitizer + LeakSanitizer + UBSan: a full run, a failed OpenVINO call and a
    partial frame on a pipe each end without a report (leaks of OpenVINO objects included)."""
    frames = at_model_size(list(synthetic_images(6, SIZE, seed=2)))
    runs = [(models["dynamic"], frames, False, 0),
            (broken_graph(models["fixed"], tmp_path / "broken.onnx"), frames, False, 1),
            (models["fixed"], frames.reshape(-1)[:1000], True, 1)]
    for model, data, pipe, status in runs:
        work = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        work.mkdir()
        proc = run_c(sanitized_binary, model, data, work, pipe=pipe, env=SANITIZER_ENV)
        stderr = proc.stderr.decode()
        assert "Sanitizer" not in stderr and "runtime error" not in stderr, stderr[-4000:]
        assert proc.returncode == status, stderr[-2000:]
    assert_matches_python(tmp_path / "run0", models["dynamic"], frames, "fp32")


def test_c_failed_openvino_call_is_one_line_naming_the_call(binary, models, tmp_path):
    broken = broken_graph(models["fixed"], tmp_path / "broken.onnx")
    proc = run_c(binary, broken, np.zeros((1, *SIZE, 3), np.uint8), tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert line.startswith("dino_embed: ov_core_read_model failed: ") and "NoSuchOp" in line


def with_metadata(model: Path, out: Path, **values: str) -> Path:
    proto = onnx.load(str(model))
    for prop in proto.metadata_props:
        if prop.key[len("dino."):] in values:
            prop.value = values[prop.key[len("dino."):]]
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("kind, expected", [
    ("foreign", "not a dino-export model: metadata lacks dino.arch"),
    ("junk", "not an ONNX file"),
    ("float input", "export the model with dino-export --preprocess"),
    ("bad size", "metadata dino.img_size [100, 224]: expected [H, W], multiples of the patch"),
    ("lying size", "the graph's input images_bgr is not uint8 (B, 64, 224, 3)"),
])
def test_c_refuses_files_it_cannot_run_in_one_line(binary, models, tmp_path, kind, expected):
    path = tmp_path / "model.onnx"
    if kind == "foreign":
        path.write_bytes(b"\x08\x07")  # a ModelProto with only ir_version
    elif kind == "junk":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 1000, np.uint8).tobytes())
    else:
        value = {"float input": {"input_format": '"float_nchw_rgb_normalized"'},
                 "bad size": {"img_size": "[100, 224]"},
                 "lying size": {"img_size": "[64, 224]"}}[kind]
        with_metadata(models["fixed"], path, **value)
    proc = run_c(binary, path, np.zeros((1, *SIZE, 3), np.uint8), tmp_path)
    assert proc.returncode == 1
    assert expected in one_line_error(proc)
    assert not (tmp_path / "cls.npy").exists()


@pytest.mark.parametrize("args, expected", [
    (("--batch", "4"), "--batch 4: this file has a fixed batch of 1"),
    (("--mass", "0"), "--mass: expected a mass fraction in (0, 1], got 0"),
    (("--precision", "fp16"), "--precision: expected fp32 or bf16, got fp16"),
    (("--frobnicate", "1"), "unknown option --frobnicate"),
])
def test_c_usage_errors_exit_2_in_one_line(binary, models, tmp_path, args, expected):
    proc = run_c(binary, models["fixed"], np.zeros((1, *SIZE, 3), np.uint8), tmp_path, *args)
    assert proc.returncode == 2
    assert expected in one_line_error(proc)


def test_c_partial_frames_leave_no_output_behind(binary, models, tmp_path):
    frames = np.zeros((2, *SIZE, 3), np.uint8).reshape(-1)[:-5]
    (tmp_path / "cls.npy").write_bytes(b"earlier run")
    proc = run_c(binary, models["fixed"], frames, tmp_path, pipe=True)
    assert proc.returncode == 1
    assert "ends with a partial frame" in one_line_error(proc)
    assert (tmp_path / "cls.npy").read_bytes() == b"earlier run"
    assert not (tmp_path / "masks.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cls.npy"]
    proc = run_c(binary, models["fixed"], frames, tmp_path)
    assert proc.returncode == 1 and "not a whole number of bgr24 frames" in one_line_error(proc)


def test_readmes_show_the_build_commands_this_test_runs():
    for readme in (SOURCE / "README.md", ROOT / "README.md"):
        text = readme.read_text()
        for command in ("pip install", "cmake -S examples/c -B build/c -DOpenVINO_DIR=",
                        CMAKE_QUERY, "cmake --build build/c"):
            assert command in text, f"{readme} lacks {command!r}"


def test_c_interrupted_run_exits_130_and_leaves_no_output(binary, models, tmp_path):
    proc = subprocess.Popen([str(binary), str(models["fixed"]), "-", "--cls",
                             str(tmp_path / "cls.npy"), "--masks", str(tmp_path / "masks.npy")],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(np.zeros((1, *SIZE, 3), np.uint8).tobytes())
    proc.stdin.flush()
    time.sleep(2.0)  # the frame is run; the program waits for the next one on the pipe
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert stderr.decode().strip() == "dino_embed: interrupted"
    assert list(tmp_path.iterdir()) == []
