"""Export benchmark: export time, file sizes, CPU images/s and accuracy of each variant.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_export.py [--quick]

For ViT-S/16 and ViT-S/8 at 224x224 (random weights: speed does not depend on them), batch 1
and 8, in one run on this machine: PyTorch eager fp32 (the baseline), PyTorch bf16 autocast,
ONNX Runtime fp32 and int8 (static QDQ calibrated on Imagenette photos from ../shared/data, or
synthetic images without it), each at opset 18 (the default) and 23 (ONNX Attention ops).
Accuracy of every exported file comes from dino_export.verify (the runtime's ONNX Runtime
backend) on 16 photos, 8 synthetic and 4 noise images against PyTorch fp32. Prints Markdown for
BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import torch

from dino_export import ExportConfig, export_onnx
from dino_export.images import photos_from_tar, synthetic_images, verification_sets
from dino_export.verify import verify_file
from dino_models import vit_small

IMAGENETTE = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette-val.tar"

PHYSICAL_CORES = len(os.sched_getaffinity(0))  # this machine: 1 thread per core (lscpu)


@dataclass
class Speed:
    model: str
    variant: str
    batch: int
    images_per_s: float


def time_it(fn, batch: int, min_seconds: float) -> float:
    """images/s: 1 warm-up call, then repeat until ``min_seconds`` have passed (>= 3 calls)."""
    fn()
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - start)


def ort_session(path: Path):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    # one compute thread per physical core: more threads only contend for the same ALUs
    opts.intra_op_num_threads = PHYSICAL_CORES
    # a single chain of ops: no parallel branches for an inter-op pool to run
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    # all graph fusions (GELU, LayerNorm+residual Add, QDQ -> QLinear/MatMulInteger kernels)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def torch_fn(model, x, bf16: bool):
    def run():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model.forward_cls_and_attention(x)
    return run


def photo_folder(tmp: Path, count: int = 32) -> tuple[str, Path]:
    """Imagenette photos when the shared data is there, else synthetic scenes (said so)."""
    if IMAGENETTE.is_file():
        return "imagenette", photos_from_tar(IMAGENETTE, tmp / "photos", count)
    folder = tmp / "photos"
    folder.mkdir()
    for i, img in enumerate(synthetic_images(count, (256, 256), seed=3)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), img)
    return "synthetic", folder


def bench_model(name: str, patch: int, tmp: Path, calib: Path, batches, seconds: float,
                variants: list[tuple[str, int, str]], verify_inputs: list, rounds: int):
    """Export and verify every variant, then time all of them in interleaved rounds.

    The machine is shared: each figure is the best of ``rounds`` rounds, and the rounds cycle
    through the variants, so a burst of load elsewhere costs every variant a round instead of
    wrecking one of them.
    """
    torch.manual_seed(0)
    model = vit_small(patch_size=patch).eval()
    torch.set_num_threads(PHYSICAL_CORES)
    inputs = {b: torch.randn(b, 3, 224, 224) for b in batches}
    runners = {label: {b: torch_fn(model, inputs[b], bf16) for b in batches}
               for label, bf16 in (("PyTorch eager fp32", False), ("PyTorch bf16 autocast", True))}
    files = []
    for label, opset, precision in variants:
        cfg = ExportConfig(dynamic_batch=(1, 8, 8), opset=opset, precision=precision,
                           calib_data=calib, calib_count=32)
        start = time.perf_counter()
        path = export_onnx(model, tmp / f"{name}_{opset}_{precision}.onnx", cfg)
        export_s = time.perf_counter() - start
        report = verify_file(path, model, verify_inputs, backend="onnxruntime", device="cpu")
        files.append((name, label, export_s, path.stat().st_size, report))
        session = ort_session(path)
        runners[label] = {b: (lambda s=session, f={"images": inputs[b].numpy()}: s.run(None, f))
                          for b in batches}
    best: dict[tuple[str, int], float] = {}
    for _ in range(rounds):
        for label, by_batch in runners.items():
            for b, fn in by_batch.items():
                ips = time_it(fn, b, seconds)
                best[(label, b)] = max(best.get((label, b), 0.0), ips)
    speeds = [Speed(name, label, b, best[(label, b)]) for label in runners for b in batches]
    return speeds, files


def markdown(speeds: list[Speed], files) -> str:
    lines = ["| model | variant | batch | images/s | x eager fp32 |", "| --- | --- | --- | --- | --- |"]
    base = {(s.model, s.batch): s.images_per_s for s in speeds if s.variant == "PyTorch eager fp32"}
    for s in speeds:
        lines.append(f"| {s.model} | {s.variant} | {s.batch} | {s.images_per_s:.1f} | "
                     f"{s.images_per_s / base[(s.model, s.batch)]:.2f} |")
    lines += ["", "| model | file | export s | size MB | cls max abs | attn max abs | cos min | "
              "mask IoU mean (min) | bounds |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, label, export_s, size, report in files:
        worst_cls = max(r.cls_max_abs for r in report.rows)
        worst_attn = max(r.attn_max_abs for r in report.rows)
        cos = min(r.cls_cosine for r in report.rows)
        iou = min(r.mask_iou for r in report.rows)
        iou_min = min(r.mask_iou_min for r in report.rows)
        lines.append(f"| {model} | {label} | {export_s:.1f} | {size / 1e6:.1f} | {worst_cls:.2e} | "
                     f"{worst_attn:.2e} | {cos:.5f} | {iou:.3f} ({iou_min:.3f}) | "
                     f"{'PASS' if report.passed else 'FAIL: ' + '; '.join(report.failures)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="ViT-S/16 only, 1 round")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds; best is kept")
    args = parser.parse_args()
    variants = [("ORT fp32 opset 18", 18, "fp32"), ("ORT int8 opset 18", 18, "int8"),
                ("ORT fp32 opset 23", 23, "fp32"), ("ORT int8 opset 23", 23, "int8")]
    models = [("ViT-S/16", 16)] if args.quick else [("ViT-S/16", 16), ("ViT-S/8", 8)]
    seconds, rounds = (1.0, 1) if args.quick else (2.0, args.rounds)
    load_before = os.getloadavg()[0]
    speeds, files = [], []
    with tempfile.TemporaryDirectory() as tmp:
        calib_label, calib = photo_folder(Path(tmp))
        verify_inputs = verification_sets((224, 224), calib, count=16)
        for name, patch in models:
            s, f = bench_model(name, patch, Path(tmp), calib, (1, 8), seconds, variants,
                               verify_inputs, rounds)
            speeds += s
            files += f
    import onnxruntime
    print(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; machine: "
          f"{platform.processor() or platform.machine()}, {PHYSICAL_CORES} cores; torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; calibration: 32 "
          f"{calib_label} images; verification: 16 {calib_label}, 8 synthetic, 4 noise images; best of "
          f"{rounds} interleaved rounds of >= {seconds:.0f} s per figure; 1-min load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print(markdown(speeds, files))


if __name__ == "__main__":
    main()
