"""C consumer benchmark: examples/c (OpenVINO's C API) against the Python runtime, same file.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_c_consumer.py             # ViT-S/16

In one run, on the same --preprocess ONNX file (random weights, seed 0, exported at the video's
aspect, short side 224) and the same frames (the first N of the video, resized as dino-run
resizes them), per batch size and precision:
  1. ``dino_embed`` (examples/c, built here with CMake against the openvino wheel): its own
     timing of the OpenVINO infer calls, and its overall rate (reading the frames, inference,
     masks, writing the .npy files);
  2. OpenVINO's Python API on the same file with the same settings (static batch, LATENCY hint,
     the same inference precision): the same engine, called from Python;
  3. ``dino_runtime.Runtime``'s model-only figure (``backend.run`` on preprocessed frames): ONNX
     Runtime, fp32, the Python runtime's backend for .onnx files.
Each is timed over every frame, after one warm-up call, --repeats times in turn; the table
shows the median and the best run. The C outputs are compared with the Python runtime's
(CLS cosine, mask IoU).
Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dino_core.masks import cosine, mask_iou  # noqa: E402
from dino_core.precision import cpu_has_native_bf16  # noqa: E402
from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime import Runtime  # noqa: E402
from dino_runtime.preprocess import InputSpec, Preprocessor, fit_size  # noqa: E402
from dino_train.cpu_tuning import cpu_model  # noqa: E402
from benchmarks.bench_runtime import read_frames  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "videos"
SOURCE = ROOT / "examples" / "c"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


def build_example(work: Path) -> Path:
    """The README's build commands; returns the binary."""
    cmake_dir = subprocess.run([sys.executable, "-c", "from openvino.utils import get_cmake_path; "
                                "print(get_cmake_path())"], capture_output=True, text=True,
                               check=True).stdout.strip()
    build = work / "build"
    subprocess.run(["cmake", "-S", str(SOURCE), "-B", str(build), f"-DOpenVINO_DIR={cmake_dir}"],
                   check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], check=True,
                   capture_output=True)
    return build / "dino_embed"


def model_frames(video: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` frames at the model size, (N, H, W, 3) uint8 BGR, resized as
    dino-run resizes them."""
    resize = Preprocessor(InputSpec(size)).resize
    return np.stack([resize(frame) for frame in read_frames(video, count)])


def run_c(binary: Path, model: Path, frames_file: Path, work: Path, batch: int,
          precision: str) -> tuple[float, float, float, str]:
    """(ms per call, infer frames/s, overall frames/s, stdout) of one dino_embed run."""
    proc = subprocess.run([str(binary), str(model), str(frames_file), "--batch", str(batch),
                           "--precision", precision, "--cls", str(work / "cls.npy"),
                           "--masks", str(work / "masks.npy")], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"dino_embed failed: {proc.stderr}")
    infer = re.search(r"inference: ([\d.]+) ms per call, ([\d.]+) frames/s", proc.stdout)
    overall = re.search(r"overall: ([\d.]+) frames/s", proc.stdout)
    return float(infer.group(1)), float(infer.group(2)), float(overall.group(1)), proc.stdout


def timed_calls(call: Callable[[np.ndarray], object], frames: np.ndarray,
                batch: int) -> tuple[float, float]:
    """(ms per call, frames/s) of ``call`` over every frame in chunks of ``batch`` (the last
    padded, as dino_embed pads it), after one warm-up call."""
    chunks = []
    for start in range(0, len(frames), batch):
        chunk = frames[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]),
                                                    chunk.dtype)])
        chunks.append(np.ascontiguousarray(chunk))
    call(chunks[0])
    seconds = 0.0
    for chunk in chunks:
        t0 = time.perf_counter()
        call(chunk)
        seconds += time.perf_counter() - t0
    return 1e3 * seconds / len(chunks), len(frames) / seconds


def openvino_python(model: Path, batch: int, precision: str) -> Callable[[np.ndarray], object]:
    """OpenVINO's Python API with dino_embed's settings."""
    import openvino as ov
    core = ov.Core()
    graph = core.read_model(str(model))
    shape = graph.input(0).get_partial_shape()
    shape[0] = batch
    graph.reshape(shape)
    settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OV_PRECISION[precision]}
    compiled = core.compile_model(graph, "CPU", settings)
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})


def onnxruntime_model_only(model: Path, batch: int) -> Callable[[np.ndarray], object]:
    """The Python runtime's backend call, as bench_runtime's model-only figure."""
    rt = Runtime(model, backend="onnxruntime", device="cpu", batch_size=batch, threshold=None)
    return rt.backend.run


def spread(runs: list[tuple]) -> str:
    """"ms per call" and "frames/s" cells: median (best) over the runs. On a shared machine the
    best run is the one least disturbed by others' jobs."""
    ms, fps = [r[0] for r in runs], [r[1] for r in runs]
    return (f"{statistics.median(ms):.1f} ({min(ms):.1f}) | "
            f"{statistics.median(fps):.2f} ({max(fps):.2f})")


def parity(model: Path, work: Path, frames: np.ndarray) -> tuple[float, float]:
    """(min CLS cosine, min mask IoU) of dino_embed's last outputs against Runtime's."""
    out = Runtime(model, backend="onnxruntime", device="cpu", batch_size=8)(frames)
    cls, masks = np.load(work / "cls.npy"), np.load(work / "masks.npy")
    return float(cosine(cls, out.cls).min()), float(mask_iou(masks, out.masks[:, 0]).min())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vit_s16")
    parser.add_argument("--video", type=Path, default=DATA / "01_dog.mp4")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"],
                        default=["fp32", "bf16"], help="bf16 runs only on CPUs with native bf16")
    return parser.parse_args()


def video_hw(video: Path) -> tuple[int, int]:
    """(H, W) of the video's frames; exits with a line when it cannot be read."""
    cap = cv2.VideoCapture(str(video))
    hw = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    cap.release()
    if min(hw) <= 0:
        raise SystemExit(f"{video}: not a readable video (see ../shared/data/README.md)")
    return hw


def main() -> None:
    args = parse_args()
    import openvino
    arch = resolve_arch(args.arch)
    size = fit_size(video_hw(args.video), args.short_side, arch.patch_size)
    work = Path(tempfile.mkdtemp(prefix="bench_c_consumer_"))
    torch.manual_seed(0)
    model = export_onnx(arch.build().eval(), work / "model.onnx",
                        ExportConfig(img_size=size, preprocess=True, dynamic_batch=(1, 8, 32)))
    binary = build_example(work)
    frames = model_frames(args.video, args.frames, size)
    frames_file = work / "frames.bgr"
    frames.tofile(frames_file)
    precisions = [p for p in args.precisions if p == "fp32" or cpu_has_native_bf16()]

    print(f"# bench_c_consumer {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {cpu_model()}, {len(os.sched_getaffinity(0))} cores; "
          f"openvino {openvino.__version__}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"{args.arch}, random weights (seed 0), --preprocess ONNX {size[0]}x{size[1]} "
          f"(dynamic batch 1..32); {len(frames)} frames of {args.video.name}; {args.repeats} runs "
          "of each in turn, each over every frame after one warm-up call\n")
    print("| path | precision | batch | ms per call, median (best) | model-only frames/s, median "
          "(best) | C overall frames/s | C vs Python runtime |")
    print("|---|---|---|---|---|---|---|")
    for precision in precisions:
        for batch in args.batches:
            runs: dict[str, list] = {"c": [], "ov": [], "ort": []}
            ov_call = openvino_python(model, batch, precision)
            ort_call = onnxruntime_model_only(model, batch) if precision == "fp32" else None
            for _ in range(args.repeats):  # in turn, so that a noisy minute hits all of them
                runs["c"].append(run_c(binary, model, frames_file, work, batch, precision))
                runs["ov"].append(timed_calls(ov_call, frames, batch))
                if ort_call is not None:
                    runs["ort"].append(timed_calls(ort_call, frames, batch))
            cos, iou = parity(model, work, frames)
            overall = statistics.median(r[2] for r in runs["c"])
            print(f"| C `dino_embed` (OpenVINO C API) | {precision} | {batch} | "
                  f"{spread(runs['c'])} | {overall:.2f} | CLS cos >= {cos:.6f}, "
                  f"mask IoU >= {iou:.3f} |")
            for key, name in (("ov", "Python, OpenVINO API, same settings"),
                              ("ort", "Python `dino_runtime` model-only (ONNX Runtime)")):
                if runs[key]:
                    print(f"| {name} | {precision} | {batch} | {spread(runs[key])} | | |")
            del ov_call, ort_call
            last = runs["c"][-1][3]
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (1 minute)")
    print(f"\nlast dino_embed summary:\n```\n{last.strip()}\n```")


if __name__ == "__main__":
    main()
