"""DINOv2 speed on CPU: ViT-S/14 and ViT-S/14 with registers through every CPU backend.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_dinov2.py
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_dinov2.py --sizes 224x224 --quick

For each model (random weights, seed 0: speed does not depend on the values) and input size
(224x224, and 448x798: a 16:9 frame at short side 448), in one run:
  1. model-only frames/s of each CPU backend row (ONNX Runtime fp32 and int8, PyTorch fp32 and
     bf16, OpenVINO when this tree has that backend) at batch 1 and 8, on preprocessed frames:
     the best of ``--rounds`` windows, the worst in brackets (the cores are shared);
  2. ``dino-run`` end to end on a real 1280x720 video (decode, resize, batched inference,
     attention overlay at the source resolution, mp4 written), frames/s from its summary, the
     better of two runs;
  3. the same-run baseline: DINO ViT-S/16 (v1) through ONNX Runtime fp32 at the nearest size
     that is a multiple of 16 (448x800 for 448x798).
Prints Markdown for BENCHMARKS.md. Frames, calibration, process timing and FLOP counts come
from bench_runtime.py.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_runtime import (
    CORES,
    DATA,
    DINO_RUN,
    calibration_folder,
    read_frames,
    timed_process,
    vit_gflops,
)

from dino_export import ExportConfig, export_onnx
from dino_models.archs import resolve_arch
from dino_runtime import Runtime
from dino_runtime.backends import BACKEND_CHOICES

MODELS = ("dinov2_s14", "dinov2_s14_reg")
BASELINE = "vit_s16"


@dataclass
class Candidate:
    """One CPU backend row: how ``Runtime`` opens it and how ``dino-run`` is told to."""

    name: str
    model: Path
    cli_args: tuple[str, ...]
    runtime_kwargs: dict


def run_dino_run(c: Candidate, video: Path, frames: int, batch: int, out: Path,
                 view: tuple[str, ...] = ("--show-attention",)) -> float:
    """Steady-state frames/s of one ``dino-run VIEW --save`` process (its summary)."""
    cmd = [*DINO_RUN, "--model", str(c.model), *c.cli_args, "--source", str(video),
           "--max-frames", str(frames), "--batch", str(batch), *view, "--save",
           str(out), "--overwrite", "--no-display"]
    _, stdout, stderr, _ = timed_process(cmd)
    found = re.search(r"frames (\d+) in ([\d.]+) s: ([\d.]+) frames/s", stdout)
    if found is None:
        raise SystemExit(f"dino-run failed: {stderr.strip().splitlines()[-1:]}")
    return float(found.group(3))


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def checkpoint(name: str, work: Path) -> Path:
    torch.manual_seed(0)
    path = work / f"{name}.pth"
    torch.save(resolve_arch(name).build().state_dict(), path)
    return path


def candidates(ckpt: Path, size: tuple[int, int], work: Path, calib: Path | None,
               quick: bool) -> list[Candidate]:
    """Every CPU backend row for one checkpoint and size."""
    tag = f"{ckpt.stem}_{size[0]}x{size[1]}"
    cfg = ExportConfig(img_size=size, dynamic_batch=(1, 8, 8), outputs=("cls", "attn"))
    fp32 = export_onnx(ckpt, work / f"{tag}_fp32.onnx", cfg)
    ort = ("--backend", "onnxruntime")
    out = [Candidate("onnxruntime fp32", fp32, ort, {"backend": "onnxruntime"})]
    if "openvino" in BACKEND_CHOICES:  # in the precision auto gives it (bf16 on this CPU)
        out.append(Candidate("openvino (fp32 file)", fp32, ("--backend", "openvino"),
                             {"backend": "openvino"}))
    if quick:
        return out
    if calib is not None:
        int8 = export_onnx(ckpt, work / f"{tag}_int8.onnx", cfg.with_(
            precision="int8", calib_data=calib, calib_count=32))
        out.append(Candidate("onnxruntime int8 (QDQ)", int8, ort, {"backend": "onnxruntime"}))
    hw = f"{size[0]}x{size[1]}"
    for precision in ("fp32", "bf16"):
        out.append(Candidate(f"torch {precision}", ckpt, ("--precision", precision,
                                                          "--input-size", hw),
                             {"backend": "torch", "precision": precision, "input_size": size}))
    return out


def best_model_only(c: Candidate, frames, batch: int, seconds: float, rounds: int
                    ) -> tuple[float, float]:
    """(best, worst) frames/s of backend.run over ``rounds`` windows of ``seconds`` each.

    This machine's cores are shared: a window that another process disturbed is slower, never
    faster, so the best window is the figure and the worst one shows the disturbance.
    """
    rt = Runtime(c.model, batch_size=batch, threshold=None, **c.runtime_kwargs)
    x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
    rt.backend.run(x)
    rates = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - start < seconds:
            rt.backend.run(x)
            n += 1
        rates.append(n * batch / (time.perf_counter() - start))
    return max(rates), min(rates)


def measure(label: str, rows: list[Candidate], frames, video: Path, args, work: Path,
            gflops: float) -> None:
    for c in rows:
        b1, b1_low = best_model_only(c, frames, 1, args.seconds, args.rounds)
        b8, b8_low = best_model_only(c, frames, 8, args.seconds, args.rounds)
        e2e = max(run_dino_run(c, video, args.frames, 8, work / "out.mp4")
                  for _ in range(2))
        print(f"| {label} | {c.name} | {b1:.2f} ({b1_low:.2f}) | {b8:.2f} ({b8_low:.2f}) | "
              f"{b8 * gflops:.0f} | {e2e:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["224x224", "448x798"])
    parser.add_argument("--video", default=str(DATA / "videos" / "01_dog.mp4"))
    parser.add_argument("--calib-video", default=str(DATA / "videos" / "02_cups.mp4"))
    parser.add_argument("--frames", type=int, default=32, help="frames per dino-run (best of 2)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per model-only window")
    parser.add_argument("--rounds", type=int, default=3, help="model-only windows (best kept)")
    parser.add_argument("--quick", action="store_true", help="ONNX Runtime fp32 only")
    args = parser.parse_args()
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: not found (see ../shared/data/README.md)")
    work = Path(tempfile.mkdtemp(prefix="bench_dinov2_"))
    torch.set_num_threads(CORES)
    frames = read_frames(video, 16)
    calib = (calibration_folder(work, Path(args.calib_video))
             if Path(args.calib_video).is_file() else None)
    print(f"# bench_dinov2 {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {platform.machine()} {CORES} cores, torch {torch.__version__}; "
          f"{video.name} {frames.shape[2]}x{frames.shape[1]}, dino-run --show-attention --save, "
          f"{args.frames} frames, batch 8; random weights (seed 0)")
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    print("\n| model, input | backend | model-only b1 frames/s (worst) | b8 frames/s (worst) "
          "| b8 GFLOP/s | dino-run frames/s |")
    print("|---|---|---|---|---|---|")
    for text in args.sizes:
        size = parse_size(text)
        for name in (*MODELS, BASELINE):
            arch = resolve_arch(name)
            p = arch.patch_size
            run_size = (size[0] // p * p, -(-size[1] // p) * p)   # v1: nearest multiple of 16
            ckpt = checkpoint(name, work)
            rows = candidates(ckpt, run_size, work, calib, args.quick or name == BASELINE)
            gflops = sum(vit_gflops(384, 12, p, run_size))  # 4 registers add < 2% at 224
            measure(f"{arch.short_name} {run_size[0]}x{run_size[1]}", rows, frames, video,
                    args, work, gflops)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
