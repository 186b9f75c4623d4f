"""Tracking benchmark (issue 33): ViT-S/16 at 480x832 on DAVIS-size frames, whole processes.

    /work/team/heavy .venv/bin/python benchmarks/bench_tracking.py prepare --work /tmp/bt
    /work/team/bench .venv/bin/python benchmarks/bench_tracking.py official --work /tmp/bt --official-code /tmp/dino_ref
    /work/team/bench .venv/bin/python benchmarks/bench_tracking.py pipeline --work /tmp/bt

``prepare`` (not timed): the frames (benchmarks/davis_synthetic.py at 854x480: three 25-frame
sequences, as the issue's "three 25-frame clips", and one of 100 frames for steady-state
rates), ViT-S/16 with random weights (seed 0) in the official format, and ``dino-export`` of it
at 480x832 with the patch output: fp32, and int8 calibrated on 32 Imagenette photos (both
verified against PyTorch by dino-export).

``official``: on the three sequences, the official ``eval_video_segmentation.py`` as a whole
process on the CPU (benchmarks/official_tracking.py) against ``dino-eval davis`` as a whole
process (which also scores J and F), with each CPU file; then the accuracy of what ran: mean
IoU of the masks of each run against the fp32 run's and the official's, and J/F against the
ground truth.

``pipeline``: on the 100-frame sequence, model-only throughput of every CPU candidate (ONNX
Runtime and OpenVINO, fp32 and int8 files, batch 1 and 4), the tracker's own cost per frame
(on stored features), and ``dino-run --track`` end to end (masks, JSON lines and the overlay
video written) against the same command without --track and against model-only.

This machine is shared: each row says how much of the CPU other processes took meanwhile.
Prints Markdown for docs/benchmarks/tracking.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_runtime import (  # noqa: E402
    CORES,
    DATA,
    DINO_RUN,
    Candidate,
    Others,
    model_only,
    timed_process,
    versions,
)
from benchmarks.davis_synthetic import make_set  # noqa: E402
from dino_runtime.tracking import TrackOptions, read_labels  # noqa: E402

SIZE = (480, 832)            # the official size of DAVIS's 854x480 frames
DINO_EVAL = [sys.executable, "-c", "from dino_train.cli import eval_main; eval_main()", "davis"]
OFFICIAL = [sys.executable, str(ROOT / "benchmarks" / "official_tracking.py")]
FILES = {"fp32": "vits16.onnx", "int8": "vits16.int8.onnx"}


def header(stage: str) -> None:
    flags = Path("/proc/cpuinfo").read_text()
    simd = [f for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "avx2", "avx_vnni")
            if re.search(rf"\b{f}\b", flags)]
    model = re.search(r"model name\s*:\s*(.*)", flags)
    print(f"# bench_tracking {stage} {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {model.group(1) if model else platform.machine()}, {CORES} cores "
          f"({' '.join(simd)}), {versions()}; load average {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join(sys.argv)}\n")


# -- prepare -----------------------------------------------------------------------------------
def prepare(work: Path) -> None:
    from dino_export import ExportConfig, export_onnx
    from dino_export.images import photos_from_tar
    from dino_models.archs import resolve_arch
    work.mkdir(parents=True, exist_ok=True)
    for line in make_set(work / "davis", (480, 854), 25):
        print(line)
    for line in make_set(work / "long", (480, 854), 100, ("cross",)):
        print(line)
    torch.manual_seed(0)
    model = resolve_arch("vit_s16").build().eval()
    torch.save(model.state_dict(), work / "vits16.pth")
    common = dict(img_size=SIZE, dynamic_batch=(1, 4, 8), outputs=("cls", "attn", "patch"))
    export_onnx(model, work / FILES["fp32"], ExportConfig(**common))
    calib = photos_from_tar(DATA / "imagenette-val.tar", work / "calib", 32)
    export_onnx(model, work / FILES["int8"], ExportConfig(**common, precision="int8",
                                                          calib_data=calib))
    print(f"exported {FILES['fp32']} and {FILES['int8']} at {SIZE[0]}x{SIZE[1]} (verified)")


# -- official against dino-eval davis ------------------------------------------------------------
def mean_iou(a: Path, b: Path, davis: Path) -> float:
    """Mean over frames (the first, given, excluded) and objects of the IoU of two runs."""
    ious = []
    for seq in sorted(p.name for p in (davis / "Annotations" / "480p").iterdir()):
        annotations = sorted((davis / "Annotations" / "480p" / seq).glob("*.png"))
        objects = int(read_labels(annotations[0])[0].max())
        for path in annotations[1:]:
            x, y = read_labels(a / seq / path.name)[0], read_labels(b / seq / path.name)[0]
            for obj in range(1, objects + 1):
                union = np.count_nonzero((x == obj) | (y == obj))
                ious.append(1.0 if union == 0 else
                            np.count_nonzero((x == obj) & (y == obj)) / union)
    return float(np.mean(ious))


def scores(results: Path, davis: Path) -> dict:
    path = results.parent / f"{results.name}.scores.json"
    timed_process([*DINO_EVAL, "--davis", str(davis), "--results", str(results), "--json",
                   str(path)])
    return json.loads(path.read_text())["overall"]


def official_stage(work: Path, official_code: str) -> None:
    davis = work / "davis"
    frames = sum(len(list(p.glob("*.jpg"))) for p in (davis / "JPEGImages" / "480p").iterdir())
    print(f"ViT-S/16, random weights (seed 0), {SIZE[0]}x{SIZE[1]}; {frames} frames of 854x480 in "
          f"3 sequences (benchmarks/davis_synthetic.py); official defaults n=7, r=12, k=5\n")
    rows = []
    out = work / "out_official"
    with Others() as others:
        wall, stdout, _, peak = timed_process([*OFFICIAL, "--official-code", official_code,
                                               "--weights", str(work / "vits16.pth"),
                                               "--data-path", str(davis), "--output-dir",
                                               str(out)])
    loop = float(re.search(r"loop_seconds ([\d.]+)", stdout).group(1))
    rows.append(("official eval_video_segmentation.py (PyTorch fp32, .cuda() removed)", wall,
                 loop, peak, others.share, out))
    for backend, kind in (("openvino", "fp32"), ("openvino", "int8"), ("onnxruntime", "int8")):
        name = FILES[kind]
        out = work / f"out_{backend}_{kind}"
        cmd = [*DINO_EVAL, "--davis", str(davis), "--model", str(work / name), "--backend",
               backend, "--output-dir", str(out), "--overwrite", "--batch", "1"]
        with Others() as others:
            wall, stdout, stderr, peak = timed_process(cmd)
        tracked = sum(float(s) for s in re.findall(r"frames in ([\d.]+) s", stderr))
        rows.append((f"dino-eval davis, {backend} {kind} file", wall, tracked, peak,
                     others.share, out))
    base = rows[0][1]
    print("| run | whole process s | s/frame | tracking loop s | vs official (whole) | peak RSS MiB"
          " | others' CPU |")
    print("|---|---|---|---|---|---|---|")
    for label, wall, loop, peak, share, _ in rows:
        print(f"| {label} | {wall:.1f} | {wall / frames:.2f} | {loop:.1f} | {base / wall:.2f}x | "
              f"{peak:.0f} | {share:.0%} |")
    print("\n(dino-eval's whole process also scores J and F; its loop is the sum of the "
          "sequences' pipeline seconds.)\n")
    fp32 = work / "out_openvino_fp32"
    print("| run | mean IoU vs official | mean IoU vs fp32 run | J&F-Mean | J-Mean | F-Mean |")
    print("|---|---|---|---|---|---|")
    for label, *_, out in rows:
        s = scores(out, davis)
        print(f"| {label} | {mean_iou(out, rows[0][5], davis):.4f} | "
              f"{mean_iou(out, fp32, davis):.4f} | {s['J&F-Mean']:.3f} | {s['J-Mean']:.3f} | "
              f"{s['F-Mean']:.3f} |")


# -- pipeline: model-only, the tracker alone, dino-run --track ----------------------------------
def read_sequence(work: Path) -> list[np.ndarray]:
    import cv2
    folder = work / "long" / "JPEGImages" / "480p" / "cross-0"
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.jpg"))]


def tracker_alone(work: Path, frames: list[np.ndarray]) -> None:
    """ms per frame of each step after the model, on the fp32 file's real patch tokens."""
    from dino_runtime import Runtime
    from dino_runtime.tracking import (Seed, Tracker, TrackFrame, draw_tracking,
                                       encode_palette_png)
    from dino_runtime.tracking.propagation import LabelPropagation
    from dino_runtime.tracking.tracker import object_stats, soft_to_labels
    runtime = Runtime(work / FILES["fp32"], batch_size=4, threshold=None)
    patches = np.concatenate([runtime(frames[i:i + 4]).patch for i in range(0, 24, 4)])
    first = read_labels(work / "long" / "Annotations" / "480p" / "cross-0" / "00000.png")[0]
    tracker = Tracker(TrackOptions(), 16, (30, 52), Seed(labels=first))
    tracker.update(frames[0], patches[0])
    steps = {"propagation": 0.0, "soft labels to ids": 0.0, "object statistics": 0.0,
             "palette PNG": 0.0, "overlay": 0.0}
    prop: LabelPropagation = tracker.propagation
    with Others() as others:
        for t in range(1, len(patches)):
            t0 = time.perf_counter()
            soft = prop.step(patches[t].reshape(30, 52, -1))
            t1 = time.perf_counter()
            labels = soft_to_labels(soft, 16, frames[t].shape[:2])
            t2 = time.perf_counter()
            objects = object_stats(labels)
            t3 = time.perf_counter()
            encode_palette_png(labels)
            t4 = time.perf_counter()
            draw_tracking(frames[t], TrackFrame(labels, objects))
            t5 = time.perf_counter()
            for key, dt in zip(steps, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                steps[key] += dt
    n = len(patches) - 1
    print(f"The tracker alone, one thread, {n} frames of real ViT-S/16 tokens (30x52 patches, "
          f"384 wide), 2 objects, frames 854x480 (others took {others.share:.0%} of the CPU):\n")
    print("| step | ms/frame |\n|---|---|")
    for key, total in steps.items():
        print(f"| {key} | {1000 * total / n:.1f} |")
    print(f"| all | {1000 * sum(steps.values()) / n:.1f} |\n")


def dino_run(args: list[str], label: str) -> tuple[str, float, float, float, float]:
    with Others() as others:
        wall, stdout, _, peak = timed_process([*DINO_RUN, *args, "--no-display", "--overwrite"])
    found = re.search(r"frames (\d+) in ([\d.]+) s: ([\d.]+) frames/s \(model alone ([\d.]+)",
                      stdout)
    return label, wall, float(found.group(3)), float(found.group(4)), others.share


def pipeline_stage(work: Path, seconds: float) -> None:
    frames = read_sequence(work)
    print(f"ViT-S/16, random weights (seed 0), {SIZE[0]}x{SIZE[1]}; {len(frames)} frames of "
          f"854x480 (benchmarks/davis_synthetic.py, one sequence)\n")
    candidates = [Candidate(work / name, backend, kind) for kind, name in FILES.items()
                  for backend in ("onnxruntime", "openvino")]
    print("| candidate | batch 1 frames/s | batch 4 frames/s | others' CPU |\n|---|---|---|---|")
    stack = np.stack(frames[:8])
    for c in candidates:
        for batch in (1, 4):
            c.speeds[batch] = model_only(c, stack, batch, seconds)
        print(f"| {c.label} | {c.speeds[1]:.2f} | {c.speeds[4]:.2f} | "
              f"{max(c.others.values()):.0%} |")
    best = max(candidates, key=lambda c: c.speeds[c.best_batch])
    model_fps = best.speeds[best.best_batch]
    print(f"\nfastest: {best.label} at batch {best.best_batch}, {model_fps:.2f} frames/s\n")
    tracker_alone(work, frames)
    seq = work / "long"
    source = str(seq / "JPEGImages" / "480p" / "cross-0")
    common = ["--model", str(best.model), "--backend", best.backend, "--source", source,
              "--batch", str(best.best_batch)]
    out = work / "run"
    out.mkdir(exist_ok=True)
    runs = [
        dino_run([*common, "--save", str(out / "plain.mp4")], "dino-run --save (no tracking)"),
        dino_run([*common, "--track", str(seq / "Annotations" / "480p" / "cross-0" / "00000.png"),
                  "--masks-dir", str(out / "masks"), "--track-json", str(out / "objects.jsonl"),
                  "--save", str(out / "track.mp4")],
                 "dino-run --track --masks-dir --track-json --save"),
    ]
    print("| command | whole process s | steady frames/s | its model alone frames/s | "
          "model-only / steady | others' CPU |\n|---|---|---|---|---|---|")
    for label, wall, fps, alone, share in runs:
        print(f"| {label} | {wall:.1f} | {fps:.2f} | {alone:.2f} | {model_fps / fps:.2f} | "
              f"{share:.0%} |")
    overhead = model_fps / runs[1][2] - 1
    print(f"\ndino-run --track costs {overhead:.0%} over model-only ({best.label}, batch "
          f"{best.best_batch}: {model_fps:.2f} frames/s; with --track {runs[1][2]:.2f}); "
          "target at most 20%.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stage", choices=("prepare", "official", "pipeline"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--official-code", help="a facebookresearch/dino checkout")
    parser.add_argument("--seconds", type=float, default=8.0, help="per model-only measurement")
    args = parser.parse_args()
    work = Path(args.work)
    torch.set_num_threads(CORES)
    header(args.stage)
    if args.stage == "prepare":
        prepare(work)
    elif args.stage == "official":
        if not args.official_code:
            raise SystemExit("official needs --official-code (a facebookresearch/dino checkout)")
        official_stage(work, args.official_code)
    else:
        pipeline_stage(work, args.seconds)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
