"""int8 files with 8-bit against 7-bit weights on this CPU: accuracy and speed, one run.

    .venv/bin/python benchmarks/bench_int8_weights.py --arch vit_tiny
    .venv/bin/python benchmarks/bench_int8_weights.py --arch vit_small
    .venv/bin/python benchmarks/bench_int8_weights.py --arch vit_small --skip-accuracy  # speed

Why (dino_export/quantize.py): x86 CPUs without VNNI add u8 x s8 product pairs into int16 with
saturation, which 8-bit weights overflow; ``--precision int8`` now writes 7-bit weights. In one
run, for one ViT/16 (depth 12, random weights, seed 0) at 224x224, dynamic batch 1..32:

  1. the fp32 file, and two int8 files calibrated on the same 64 Imagenette photos: ``8-bit``
     (the CPU scheme with 8-bit weights, what ``--precision int8`` wrote before) and ``7-bit``
     (what it writes now);
  2. accuracy against PyTorch fp32 (dino_export.verify) on 32 other photos, 32 synthetic scenes and
     4 noise images, through ONNX Runtime and OpenVINO as dino-run runs them, and through ONNX
     Runtime with Q/DQ as float ops (the graph's own arithmetic: no int8 kernel, no saturation);
  3. model-only frames/s (backend.run on preprocessed photos) at batch 1 and 8, the best of
     several rounds over all candidates, with the share of the CPU other processes took.
Prints Markdown for docs/benchmarks/cpu-without-vnni.md. Needs ../shared/data/imagenette-val.tar.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_runtime import Others, versions  # noqa: E402
from dino_core.precision import cpu_flags  # noqa: E402
from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_export.images import folder_images, photos_from_tar, verification_sets  # noqa: E402
from dino_export.onnx_export import (  # noqa: E402
    attach_metadata,
    build_metadata,
    export_fp32,
    load_model,
    write_atomic,
)
from dino_export.quantize import CPU, Calibration, quantize_int8, weight_bits  # noqa: E402
from dino_export.verify import verify_file  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime import Runtime  # noqa: E402
from dino_train.cpu_tuning import cpu_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SIZE = (224, 224)
CONFIG = ExportConfig(img_size=SIZE, dynamic_batch=(1, 8, 32), outputs=("cls", "attn"))
SCHEMES = {"8-bit": dataclasses.replace(CPU, weight_bits=8), "7-bit": CPU}
# (label, backend, Q/DQ fusion): how each file is run for accuracy
RUNNERS = [("onnxruntime", "onnxruntime", True), ("openvino", "openvino", True),
           ("onnxruntime, Q/DQ as float ops", "onnxruntime", False)]


def photos(work: Path) -> tuple[Path, Path]:
    """(64 calibration photos, 32 other photos to verify on), Imagenette, all ten classes."""
    every = photos_from_tar(DATA / "imagenette-val.tar", work / "all", 96)
    calib, verify = work / "calib", work / "verify"
    for folder in (calib, verify):
        folder.mkdir()
    for i, path in enumerate(sorted(every.iterdir())):
        path.rename((calib if i < 64 else verify) / path.name)
    return calib, verify


def int8_file(model, scheme, calib: Path, out: Path) -> Path:
    """The --precision int8 file of ``model`` quantized with ``scheme``."""
    proto, _ = export_fp32(model, CONFIG)
    cfg = CONFIG.with_(precision="int8", calib_data=calib)
    quantized = quantize_int8(proto, Calibration(calib, 64, SIZE, False, 1), scheme)
    _, source = load_model(model)
    attach_metadata(quantized, build_metadata(model, source, cfg, weight_bits(quantized)))
    return write_atomic(quantized, out)


def accuracy(files: dict[str, Path], model, verify: Path) -> None:
    print("| file | run by | inputs | n | cos min | mask IoU | IoU min |\n"
          "|---|---|---|---|---|---|---|")
    sets = verification_sets(SIZE, verify, count=32, noise=4)
    for name, path in files.items():
        if name == "fp32":
            continue
        for label, backend, fusion in RUNNERS:
            report = verify_file(path, model, sets, backend=backend, qdq_fusion=fusion)
            for r in report.rows:
                print(f"| {name} | {label} | {r.inputs} | {r.count} | {r.cls_cosine:.4f} | "
                      f"{r.mask_iou:.3f} | {r.mask_iou_min:.3f} |", flush=True)


def model_only(rt: Runtime, x: np.ndarray, seconds: float) -> tuple[float, float]:
    """(frames/s of backend.run alone on the batch ``x``, others' CPU share meanwhile)."""
    with Others() as others:
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds:
            rt.backend.run(x)
            n += 1
        fps = n * len(x) / (time.perf_counter() - start)
    return fps, others.share


def speed(files: dict[str, Path], frames: np.ndarray, seconds: float, rounds: int) -> None:
    """Every candidate in turn, ``rounds`` times over (so that a burst of other work on this
    shared machine hits one round of one candidate, not all of one): the best round of each."""
    runs = {}
    for backend in ("onnxruntime", "openvino"):
        for name, path in files.items():
            for batch in (1, 8):
                rt = Runtime(path, backend=backend, batch_size=batch, threshold=None)
                x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
                rt.backend.run(x)  # the first call of a shape allocates and plans
                runs[(name, backend, batch)] = (rt, x, [])
    for _ in range(rounds):
        for rt, x, results in runs.values():
            results.append(model_only(rt, x, seconds))
    print(f"Best of {rounds} rounds of {seconds:g} s each; others' CPU: the share of the machine "
          "other processes took during that round.\n")
    print("| file | backend (runs in) | batch | model-only frames/s | others' CPU | all rounds |\n"
          "|---|---|---|---|---|---|")
    for (name, backend, batch), (rt, _, results) in runs.items():
        fps, share = max(results)
        every = ", ".join(f"{f:.1f}" for f, _ in results)
        print(f"| {name} | {backend} ({rt.backend.precision}) | {batch} | {fps:.2f} | "
              f"{share:.0%} | {every} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_tiny", choices=["vit_tiny", "vit_small"])
    parser.add_argument("--seconds", type=float, default=4.0, help="per speed measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true", help="speed only")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = resolve_arch(args.arch, 16).build().eval()
    flags = cpu_flags()
    vnni = sorted(f for f in flags if "vnni" in f) or ["none"]
    print(f"# {args.arch}/16 at {SIZE[0]}x{SIZE[1]}, depth {len(model.blocks)}, random weights "
          f"(seed 0); {datetime.datetime.now():%Y-%m-%d %H:%M}\n")
    print(f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores; "
          f"avx2 {'avx2' in flags}, avx512f {'avx512f' in flags}, VNNI flags: {', '.join(vnni)}; "
          f"{versions()}; load average {os.getloadavg()[0]:.2f}\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib, verify = photos(work)
        files = {"fp32": export_onnx(model, work / "model.onnx", CONFIG)}
        for name, scheme in SCHEMES.items():
            files[name] = int8_file(model, scheme, calib, work / f"model.{name}.onnx")
        if not args.skip_accuracy:
            print("## Accuracy against PyTorch fp32\n")
            accuracy(files, model, verify)
        print("\n## Model-only speed\n")
        speed(files, folder_images(verify, 8, SIZE), args.seconds, args.rounds)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
