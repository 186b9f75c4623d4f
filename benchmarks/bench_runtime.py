"""Runtime benchmark: the official-style per-frame loop against ``dino-run``, on one video.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py                # ViT-S/16
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py --arch vit_s8 --frames 30

In one run, on the same video, weights and resolution (short side 224 at the video's aspect):
  1. this machine's matrix-multiply peak (fp32 and bf16 GEMM through torch/oneDNN, numpy sgemm);
  2. the naive loop that mirrors the official ``video_generation.py``: frames extracted to JPEG,
     per frame PIL + torchvision preprocessing, PyTorch fp32 at batch 1 with
     ``get_last_selfattention``, the official mass-threshold step, the attention map written
     through matplotlib as a JPEG, then the JPEGs read back into a video;
  3. each CPU backend of ``dino-run`` alone (model-only throughput on preprocessed frames);
  4. ``dino-run`` end to end with the best of them (attention overlay written to mp4 at the
     source's resolution), as a subprocess, and the pipeline overhead against (3);
  5. optionally, peak resident memory of ``dino-run`` over a long synthetic video.
Random weights (seed 0) unless --checkpoint is given: speed does not depend on the values.
Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime import Runtime  # noqa: E402
from dino_runtime.preprocess import fit_size  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "videos"
DINO_RUN = [sys.executable, "-m", "dino_runtime.cli"]
CORES = len(os.sched_getaffinity(0))


# -- machine peak and model cost ----------------------------------------------------------------
def gemm_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """Best GFLOP/s of an n x n x n matmul over ``repeats`` calls (torch/oneDNN, all cores)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def numpy_sgemm_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = np.random.rand(n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def vit_gflops(embed: int, depth: int, patch: int, size: tuple[int, int], mlp: int = 4) -> float:
    """Multiply-adds x 2 of one frame through the ViT (patch embedding, blocks), in GFLOP."""
    n = (size[0] // patch) * (size[1] // patch) + 1
    embed_flops = 2 * (n - 1) * 3 * patch * patch * embed
    per_block = 2 * n * embed * (3 * embed + embed + 2 * mlp * embed) + 2 * 2 * n * n * embed
    return (embed_flops + depth * per_block) / 1e9


# -- the naive, official-style loop -------------------------------------------------------------
def naive_loop(model, patch: int, video: Path, frames: int, short_side: int, work: Path) -> float:
    """Seconds for the official approach end to end; writes work/naive.mp4 at model resolution."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    from torchvision import transforms

    start = time.perf_counter()
    frame_dir, attn_dir = work / "frames", work / "attention"
    frame_dir.mkdir()
    attn_dir.mkdir()
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    for i in range(frames):  # step 1: every frame to a JPEG file
        ok, image = cap.read()
        if not ok:
            break
        cv2.imwrite(str(frame_dir / f"frame-{i:04}.jpg"), image)
    transform = transforms.Compose([
        transforms.ToTensor(), transforms.Resize(short_side),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for path in sorted(glob.glob(str(frame_dir / "*.jpg"))):  # step 2: one frame at a time
        with open(path, "rb") as f:
            img = transform(Image.open(f).convert("RGB"))
        h, w = img.shape[1] - img.shape[1] % patch, img.shape[2] - img.shape[2] % patch
        img = img[:, :h, :w].unsqueeze(0)
        with torch.no_grad():
            attn = model.get_last_selfattention(img)
        heads = attn.shape[1]
        attn = attn[0, :, 0, 1:].reshape(heads, -1)
        _official_style_mask(attn, 0.6, h // patch, w // patch)
        maps = torch.nn.functional.interpolate(attn.reshape(1, heads, h // patch, w // patch),
                                               scale_factor=patch, mode="nearest")[0].numpy()
        plt.imsave(fname=str(attn_dir / f"attn-{Path(path).name}"), arr=maps.mean(0),
                   cmap="inferno", format="jpg")
    names = sorted(glob.glob(str(attn_dir / "attn-*.jpg")))  # step 3: JPEGs back into a video
    images = [cv2.cvtColor(np.array(Image.open(n).convert("RGB")), cv2.COLOR_RGB2BGR) for n in names]
    writer = cv2.VideoWriter(str(work / "naive.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (images[0].shape[1], images[0].shape[0]))
    for image in images:
        writer.write(image)
    writer.release()
    return time.perf_counter() - start


def _official_style_mask(attn: torch.Tensor, threshold: float, h: int, w: int) -> torch.Tensor:
    """The per-head sort / cumsum / unsort loop of the official scripts (our own writing)."""
    val, idx = torch.sort(attn)
    val = val / val.sum(dim=1, keepdim=True)
    keep = torch.cumsum(val, dim=1) > (1 - threshold)
    unsort = torch.argsort(idx)
    for head in range(attn.shape[0]):
        keep[head] = keep[head][unsort[head]]
    return keep.reshape(-1, h, w)


def official_model(folder: str, arch, ours):
    """The official ViT class (run, not copied) with our weights: strict load, same numbers."""
    sys.path.insert(0, folder)
    import vision_transformer as official_vits
    model = getattr(official_vits, arch.family.name)(patch_size=arch.patch_size, num_classes=0)
    model.load_state_dict(ours.state_dict(), strict=True)
    return model.eval()


# -- dino-run ------------------------------------------------------------------------------------
@dataclass
class Candidate:
    name: str        # shown in the tables
    model: Path      # file given to dino-run --model
    args: tuple      # extra dino-run arguments
    runtime_kwargs: dict


def model_only(c: Candidate, frames: np.ndarray, batch: int, seconds: float) -> float:
    """frames/s of backend.run alone on preprocessed real frames (2 warm-up calls)."""
    rt = Runtime(c.model, batch_size=batch, threshold=None, **c.runtime_kwargs)
    x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
    rt.backend.run(x)
    rt.backend.run(x)
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        rt.backend.run(x)
        n += 1
    return n * batch / (time.perf_counter() - start)


def run_dino_run(c: Candidate, video: Path, frames: int, batch: int, out: Path,
                 extra: tuple = ()) -> tuple[float, float, str, float, list[int]]:
    """(pipeline frames/s from the summary, process wall s, summary, peak RSS MiB, RSS samples)."""
    cmd = [*DINO_RUN, "--model", str(c.model), "--source", str(video), "--max-frames",
           str(frames), "--batch", str(batch), "--show-attention", "--save", str(out),
           "--overwrite", "--no-display", *c.args, *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[int] = []
    sampler = threading.Thread(target=_sample_rss, args=(proc, samples), daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"dino-run failed: {' '.join(cmd)}\n{stderr}")
    fps = float(re.search(r"([\d.]+) frames/s", stdout).group(1))
    return fps, wall, stdout.strip(), max(samples, default=0) / 1024, samples


def _sample_rss(proc: subprocess.Popen, samples: list[int]) -> None:
    """VmRSS (KiB) of ``proc`` every 50 ms until it exits."""
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            line = next(l for l in status.read_text().splitlines() if l.startswith("VmRSS"))
            samples.append(int(line.split()[1]))
        except (OSError, StopIteration):
            pass
        time.sleep(0.05)


def read_frames(video: Path, count: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    return np.stack(frames)


def calibration_folder(work: Path, video: Path, count: int = 32) -> Path:
    """``count`` frames of another clip as JPEGs, for int8 calibration."""
    folder = work / "calib"
    folder.mkdir()
    for i, image in enumerate(read_frames(video, count * 4)[::4]):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    return folder


def build_candidates(ckpt: Path, size, work: Path, calib_video: Path | None,
                     quick: bool) -> list[Candidate]:
    onnx_cfg = dict(img_size=size, dynamic_batch=(1, 8, 32), outputs=("cls", "attn"))
    fp32 = export_onnx(ckpt, work / "model_fp32.onnx", ExportConfig(**onnx_cfg))
    out = [Candidate("onnxruntime fp32", fp32, (), {})]
    if calib_video is not None and not quick:
        int8 = export_onnx(ckpt, work / "model_int8.onnx", ExportConfig(
            **onnx_cfg, precision="int8", calib_data=calibration_folder(work, calib_video)))
        out.append(Candidate("onnxruntime int8 (static QDQ)", int8, (), {}))
    out.append(Candidate("torch bf16", ckpt, ("--precision", "auto", "--input-size",
                                              f"{size[0]}x{size[1]}"),
                         {"precision": "auto", "input_size": size}))
    return out


# -- long-run memory -----------------------------------------------------------------------------
def memory_run(frames: int, work: Path) -> str:
    """Peak RSS of dino-run over ``frames`` frames of a synthetic 640x360 clip, tiny model."""
    from dino_models import vit_tiny
    video = work / "long.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    for i in range(frames):
        img = np.full((360, 640, 3), (40 + i % 60, 80, 120), np.uint8)
        cv2.circle(img, (40 + (7 * i) % 560, 180), 50, (0, 200, 255), -1)
        writer.write(img)
    writer.release()
    torch.manual_seed(0)
    tiny = work / "tiny.pth"
    torch.save(vit_tiny(patch_size=16, depth=2).state_dict(), tiny)
    model = export_onnx(tiny, work / "tiny.onnx", ExportConfig(
        img_size=(128, 224), dynamic_batch=(1, 8, 32), outputs=("cls", "attn")))
    c = Candidate("tiny", model, ("--mask", "--embeddings", str(work / "long.npy")), {})
    fps, wall, summary, peak, samples = run_dino_run(c, video, frames, 8, work / "long_out.mp4")
    kept = len(np.load(work / "long.npy"))
    quarters = [samples[int(len(samples) * q)] / 1024 for q in (0.1, 0.25, 0.5, 0.75)] + [samples[-1] / 1024]
    return (f"{frames} frames of a synthetic 640x360 clip, ViT-Tiny/16 depth 2 at 128x224, "
            f"--show-attention --mask --save --embeddings, batch 8: {fps:.0f} frames/s, "
            f"{kept} embeddings written.\nRSS at 10/25/50/75/100% of the run: "
            + " / ".join(f"{m:.0f}" for m in quarters) + f" MiB; peak {peak:.0f} MiB.")


# -- report --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vit_s16")
    parser.add_argument("--checkpoint", help="trained weights (default: random, seed 0)")
    parser.add_argument("--video", default=str(DATA / "01_dog.mp4"))
    parser.add_argument("--calib-video", default=str(DATA / "02_cups.mp4"))
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0, help="per model-only measurement")
    parser.add_argument("--memory-frames", type=int, default=0, help="also the long-run RSS test")
    parser.add_argument("--quick", action="store_true", help="fp32 only, for a smoke run")
    parser.add_argument("--official-code", help="folder holding the official vision_transformer.py: "
                        "also time the naive loop with the official model code (same weights)")
    args = parser.parse_args()
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: not found (see ../shared/data/README.md)")
    arch = resolve_arch(args.arch)
    work = Path(tempfile.mkdtemp(prefix="bench_runtime_"))
    torch.set_num_threads(CORES)

    print(f"# bench_runtime {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {platform.machine()} {CORES} cores, torch {torch.__version__}")
    peaks = {"fp32": gemm_peak(torch.float32), "bf16": gemm_peak(torch.bfloat16),
             "numpy fp32": numpy_sgemm_peak()}
    print("GEMM peak (2048^3, best of 8): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))

    frames = read_frames(video, args.frames)
    size = fit_size(frames.shape[1:3], args.short_side, arch.patch_size)
    naive_size = (args.short_side, (round(frames.shape[2] * args.short_side / frames.shape[1]))
                  // arch.patch_size * arch.patch_size)
    torch.manual_seed(0)
    model = arch.build().eval()
    ckpt = Path(args.checkpoint) if args.checkpoint else work / f"{args.arch}.pth"
    if not args.checkpoint:
        torch.save(model.state_dict(), ckpt)
    else:
        from dino_models.checkpoint import load_backbone
        model, _ = load_backbone(ckpt)
    weights = "trained: " + ckpt.name if args.checkpoint else "random weights (seed 0)"
    gflops = vit_gflops(model.embed_dim, len(model.blocks), arch.patch_size, size)
    print(f"{arch.short_name}, {weights}; {len(frames)} frames of {video.name} "
          f"{frames.shape[2]}x{frames.shape[1]}; dino-run input {size[0]}x{size[1]} "
          f"({gflops:.1f} GFLOP/frame), naive loop input {naive_size[0]}x{naive_size[1]} "
          f"(resize then crop to the patch grid, as officially)")

    naive_dir = work / "naive"
    naive_dir.mkdir()
    naive_s = naive_loop(model, arch.patch_size, video, len(frames), args.short_side, naive_dir)
    naive_fps = len(frames) / naive_s
    print(f"\nnaive official-style loop, this toolkit's model (fused attention in blocks 1..n-1): "
          f"{naive_s:.1f} s, {naive_fps:.2f} frames/s end to end")
    if args.official_code:
        official = official_model(args.official_code, arch, model)
        off_dir = work / "naive_official"
        off_dir.mkdir()
        off_s = naive_loop(official, arch.patch_size, video, len(frames), args.short_side, off_dir)
        print(f"naive official-style loop, the official model code (same weights): {off_s:.1f} s, "
              f"{len(frames) / off_s:.2f} frames/s end to end")

    calib = Path(args.calib_video) if Path(args.calib_video).is_file() else None
    candidates = build_candidates(ckpt, size, work, calib, args.quick)
    print("\n| backend | batch | model-only frames/s | GFLOP/s | of fp32 peak | of bf16 peak |")
    print("|---|---|---|---|---|---|")
    speeds = {}
    for c in candidates:
        for batch in sorted({1, args.batch}):
            fps = model_only(c, frames, batch, args.seconds)
            speeds[(c.name, batch)] = fps
            print(f"| {c.name} | {batch} | {fps:.2f} | {fps * gflops:.0f} | "
                  f"{fps * gflops / peaks['fp32']:.0%} | {fps * gflops / peaks['bf16']:.0%} |")
    best_name, best_batch = max(speeds, key=speeds.get)
    best = next(c for c in candidates if c.name == best_name)
    fp32 = candidates[0]
    fp32_batch = max((b for n, b in speeds if n == fp32.name), key=lambda b: speeds[(fp32.name, b)])
    runs = [(best, b) for b in sorted({1, args.batch})] + ([(fp32, fp32_batch)] if best is not fp32 else [])
    print(f"\nbest model-only: {best_name} at batch {best_batch}")
    print(f"\n| dino-run end to end (--show-attention --save mp4 {frames.shape[2]}x{frames.shape[1]}) "
          "| batch | frames/s | x naive | of model-only (same batch) | process wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for c, batch in runs:
        fps, wall, summary, peak, _ = run_dino_run(c, video, len(frames), batch,
                                                   work / f"{c.name.split()[1]}_{batch}.mp4")
        model_fps = speeds[(c.name, batch)]
        print(f"| {c.name} | {batch} | {fps:.2f} | {fps / naive_fps:.2f}x | {fps / model_fps:.0%} | "
              f"{wall:.1f} | {peak:.0f} |")
        print(f"|  summary: {summary.splitlines()[0]} | | | | | | |")
    if args.memory_frames:
        print("\nLong run: " + memory_run(args.memory_frames, work))
    print(f"\n(work files in {work})")


if __name__ == "__main__":
    main()
