"""Runtime benchmark: ``dino-run`` against the naive official-style loop, whole processes.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py --official-code /tmp/dino_ref
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py --arch vit_s8 --official-code ...
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py --arch vit_b16 ...
    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_runtime.py --arch vit_s8 --img-size 480 640 --frames 30 ...

In one run, on the same video, weights and input size (short side 224 at the video's aspect,
or ``--img-size H W`` for both sides):
  1. the machine's matrix-multiply peaks (gemm_peak.py: fp32, bf16, int8; OpenVINO and
     PyTorch), at the start and again at the end: the higher of the two is the peak;
  2. the naive loop (naive_loop.py, mirroring the official ``video_generation.py``) as a whole
     process, at the start and again at the end: its wall time (start-up included) and its
     loop's frames/s; the faster of the two runs is the baseline;
  3. the exported files (fp32, and int8 calibrated on frames of another clip) and each CPU
     candidate's model-only throughput on preprocessed frames, batch 1 and N;
  4. the three fastest candidates' verified accuracy against PyTorch fp32 (dino_export.verify,
     through the backend and precision the candidate runs);
  5. ``dino-run --show-attention --save out.mp4`` as a whole process (the attention overlay at
     the source's resolution): the fastest candidate with a cold compile cache, then warm at
     batch 1 and N, the next two warm; wall time and the steady-state frames/s of the run
     summary;
  6. where the start-up goes, against a 60-frame clip;
  7. optionally, peak resident memory of ``dino-run`` over a long synthetic video;
  8. a summary: model-only as a fraction of the peaks, dino-run against the naive loop (whole
     process and steady state) and against model-only (the pipeline's overhead).
This machine is shared: every measurement says how much of the CPU other processes took
meanwhile (``Others``).
Random weights (seed 0) unless --checkpoint is given: speed does not depend on the values, the
accuracy columns are those of these weights. Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.gemm_peak import measure as measure_gemm  # noqa: E402
from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_export.images import photos_from_tar, verification_sets  # noqa: E402
from dino_export.verify import verify_file  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime import Runtime  # noqa: E402
from dino_runtime.preprocess import fit_size  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DINO_RUN = [sys.executable, "-m", "dino_runtime.cli"]
NAIVE = [sys.executable, str(ROOT / "benchmarks" / "naive_loop.py")]
CORES = len(os.sched_getaffinity(0))


def vit_gflops(embed: int, depth: int, patch: int, size: tuple[int, int], mlp: int = 4
               ) -> tuple[float, float]:
    """Multiply-adds x 2 of one frame through the ViT, in GFLOP: (the weight products: patch
    embedding, qkv, proj, fc1, fc2, which an int8 file quantizes; the attention products
    q k^T and p v, which stay float)."""
    n = (size[0] // patch) * (size[1] // patch) + 1
    weights = 2 * (n - 1) * 3 * patch * patch * embed + depth * 2 * n * embed * (
        3 * embed + embed + 2 * mlp * embed)
    attention = depth * 2 * 2 * n * n * embed
    return weights / 1e9, attention / 1e9


def ceiling(c: "Candidate", split: tuple[float, float], peak: dict[str, float]) -> float:
    """The GFLOP/s a candidate could reach if every product ran at the machine's peak for its
    precision: bf16 (or fp32 files run in bf16) at the bf16 peak; an int8 file's weight
    products at the int8 peak and its attention products at the bf16 peak."""
    weights, attention = split
    if c.file == "int8":
        return (weights + attention) / (weights / peak["int8"] + attention / peak["bf16"])
    return peak["bf16"] if c.precision == "bf16" else peak.get(c.precision, peak["bf16"])


class Others:
    """The CPU time other processes took while a measurement ran, as a share of the machine
    (all cores x wall time): this machine is shared, and a figure taken while others ran is
    lower than the machine can do. /proc/stat's busy time minus this process's and its
    finished children's."""

    def __enter__(self) -> "Others":
        self.start, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self.start
        others = (_busy_seconds() - self.busy) - (_own_seconds() - self.own)
        self.share = max(0.0, others) / (wall * CORES)


def _busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed_process(cmd: list[str], cwd: Path = ROOT) -> tuple[float, str, str, float]:
    """(wall seconds, stdout, stderr, peak RSS MiB) of one process, as a user runs it."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    samples: list[int] = []
    sampler = threading.Thread(target=_sample_rss, args=(proc, samples), daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{stderr}")
    return wall, stdout, stderr, max(samples, default=0) / 1024


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


# -- the naive loop --------------------------------------------------------------------------
@dataclass
class NaiveRun:
    wall: float          # whole process
    loop: float          # its loop, first frame read to video written
    frames: int
    others: float        # share of the machine other processes took meanwhile

    @property
    def loop_fps(self) -> float:
        return self.frames / self.loop


def naive_process(arch, weights: Path, video: Path, frames: int, resize: list[int],
                  work: Path, official: str | None) -> NaiveRun:
    cmd = [*NAIVE, "--weights", str(weights), "--arch", arch.family.name, "--patch-size",
           str(arch.patch_size), "--video", str(video), "--frames", str(frames), "--resize",
           *map(str, resize), "--out", str(work)]
    if official:
        cmd += ["--official-code", official]
    with Others() as others:
        wall, stdout, _, _ = timed_process(cmd, cwd=work.parent)
    return NaiveRun(wall, float(re.search(r"loop_seconds ([\d.]+)", stdout).group(1)), frames,
                    others.share)


# -- candidates ------------------------------------------------------------------------------
@dataclass
class Candidate:
    model: Path
    backend: str
    file: str            # the file's precision: fp32 or int8
    precision: str = ""  # what it runs in (filled when opened)
    float_ops: str = ""  # an int8 file's other ops
    speeds: dict[int, float] = field(default_factory=dict)  # batch -> model-only frames/s
    others: dict[int, float] = field(default_factory=dict)  # batch -> others' CPU share

    @property
    def label(self) -> str:
        """e.g. ``openvino bf16 (fp32 file)``, ``openvino int8 (other ops bf16)``."""
        if self.file == "int8":
            other = f" (other ops {self.float_ops})" if self.float_ops not in ("", "fp32") else ""
            return f"{self.backend} int8{other}"
        return f"{self.backend} {self.precision or self.file} ({self.file} file)"

    @property
    def best_batch(self) -> int:
        return max(self.speeds, key=self.speeds.get)


def model_only(c: Candidate, frames: np.ndarray, batch: int, seconds: float) -> float:
    """frames/s of backend.run alone on preprocessed real frames (after the warm-up call)."""
    rt = Runtime(c.model, backend=c.backend, batch_size=batch, threshold=None)
    c.precision = rt.backend.precision
    c.float_ops = getattr(rt.backend, "float_precision", "")
    x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
    rt.backend.run(x)
    with Others() as others:
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds:
            rt.backend.run(x)
            n += 1
        fps = n * batch / (time.perf_counter() - start)
    c.others[batch] = others.share
    return fps


def build_candidates(model, size, work: Path, calib_video: Path | None,
                     engines: list[str]) -> list[Candidate]:
    common = dict(img_size=size, dynamic_batch=(1, 8, 32), outputs=("cls", "attn"))
    fp32 = export_onnx(model, work / "model.onnx", ExportConfig(**common))
    files = {"fp32": fp32}
    if calib_video is not None:
        files["int8"] = export_onnx(model, work / "model.int8.onnx", ExportConfig(
            **common, precision="int8", calib_data=calibration_folder(work, calib_video)))
    return [Candidate(path, engine, kind) for engine in engines for kind, path in files.items()]


def calibration_folder(work: Path, video: Path, count: int = 32) -> Path:
    """``count`` frames of another clip as JPEGs, for int8 calibration."""
    folder = work / "calib"
    folder.mkdir()
    for i, image in enumerate(read_frames(video, count * 4)[::4]):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    return folder


def read_frames(video: Path, count: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    return np.stack(frames)


def verify_photos(work: Path) -> Path | None:
    """16 Imagenette photos (not the calibration frames) to verify on, when the data is here."""
    tar = DATA / "imagenette-val.tar"
    return photos_from_tar(tar, work / "photos", 16) if tar.is_file() else None


# -- dino-run --------------------------------------------------------------------------------
@dataclass
class EndToEnd:
    label: str
    batch: int
    cache: str           # "cold", "warm" or "-" (no compile cache)
    wall: float          # whole process
    fps: float           # steady state: the summary's frames / pipeline seconds
    pipeline_s: float
    peak_mib: float
    summary: str
    others: float


def dino_run(c: Candidate, video: Path, frames: int, batch: int, out: Path,
             cold: bool) -> EndToEnd:
    cache = c.model.parent / f".{c.model.name}.openvino-cache"
    if cold:
        shutil.rmtree(cache, ignore_errors=True)
    cmd = [*DINO_RUN, "--model", str(c.model), "--backend", c.backend, "--source", str(video),
           "--max-frames", str(frames), "--batch", str(batch), "--show-attention", "--save",
           str(out), "--overwrite", "--no-display"]
    with Others() as others:
        wall, stdout, stderr, peak = timed_process(cmd)
    found = re.search(r"frames (\d+) in ([\d.]+) s: ([\d.]+) frames/s", stdout)
    state = ("cold" if cold else "warm") if c.backend == "openvino" else "-"
    return EndToEnd(c.label, batch, state, wall, float(found.group(3)), float(found.group(2)),
                    peak, stdout.strip().splitlines()[0], others.share)


def startup_breakdown(c: Candidate, batch: int) -> str:
    """Seconds of each start-up step of a dino-run process, measured in a fresh process."""
    code = (
        "import time, sys\n"
        "t0 = time.perf_counter()\n"
        "import dino_runtime.cli\n"
        "from dino_runtime import Runtime\n"
        "t1 = time.perf_counter()\n"
        f"rt = Runtime({str(c.model)!r}, backend={c.backend!r}, batch_size={batch}, warmup=False)\n"
        "t2 = time.perf_counter()\n"
        "import numpy as np\n"
        "x = np.stack([rt.preprocessor(np.zeros((720, 1280, 3), np.uint8))] * rt.batch_size)\n"
        "rt.backend.run(x); t3 = time.perf_counter(); rt.backend.run(x); t4 = time.perf_counter()\n"
        "print(f'{t1 - t0:.2f} {t2 - t1:.2f} {t3 - t2:.2f} {t4 - t3:.2f}')\n")
    out = {}
    for state in ("cold", "warm"):
        if state == "cold":
            shutil.rmtree(c.model.parent / f".{c.model.name}.openvino-cache", ignore_errors=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, check=True)
        interpreter = time.perf_counter() - start - sum(map(float, proc.stdout.split()))
        imports, load, first, second = map(float, proc.stdout.split())
        out[state] = (interpreter, imports, load, first - second, second)
    cold, warm = out["cold"], out["warm"]
    return (f"| {c.label}, batch {batch} | {warm[0]:.2f} | {warm[1]:.2f} | {cold[2]:.2f} / "
            f"{warm[2]:.2f} | {warm[3]:.2f} | {warm[4]:.2f} |")


# -- long-run memory ---------------------------------------------------------------------------
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
    model = export_onnx(vit_tiny(patch_size=16, depth=2).eval(), work / "tiny.onnx", ExportConfig(
        img_size=(128, 224), dynamic_batch=(1, 8, 32), outputs=("cls", "attn")))
    cmd = [*DINO_RUN, "--model", str(model), "--source", str(video), "--max-frames", str(frames),
           "--batch", "8", "--show-attention", "--mask", "--save", str(work / "long_out.mp4"),
           "--embeddings", str(work / "long.npy"), "--overwrite", "--no-display"]
    wall, stdout, _, peak = timed_process(cmd)
    kept = len(np.load(work / "long.npy"))
    return (f"{frames} frames of a synthetic 640x360 clip, ViT-Tiny/16 depth 2 at 128x224, "
            f"--show-attention --mask --save --embeddings, batch 8, auto backend: "
            f"{stdout.splitlines()[0]}; {kept} embeddings written; peak RSS {peak:.0f} MiB.")


# -- report ------------------------------------------------------------------------------------
def versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("torch", "onnxruntime", "openvino"))


def gemm_round(repeats: int, when: str) -> dict[str, float]:
    """One round of GEMM peaks, printed; {precision: best GFLOP/s over engines and shapes}."""
    print(f"GEMM peaks, {when} (best of {repeats} calls, all cores):\n")
    print("| product | precision | OpenVINO GFLOP/s (GOP/s int8) | PyTorch |\n|---|---|---|---|")
    with Others() as others:
        gemm = measure_gemm(repeats)
    print(f"\n(other processes took {others.share:.0%} of the CPU meanwhile)\n")
    return {p: max(v for (_, _, q), v in gemm.items() if q == p)
            for p in ("fp32", "bf16", "int8")}


def naive_round(args, arch, weights: Path, video: Path, frames: int, resize: list[int],
                work: Path, when: str) -> NaiveRun:
    naive = naive_process(arch, weights, video, frames, resize, work, args.official_code)
    code = "the official vision_transformer.py" if args.official_code else "this toolkit's ViT"
    print(f"naive official-style loop, {when} ({code}, PyTorch fp32, batch 1): whole process "
          f"{naive.wall:.1f} s; its loop {naive.loop:.1f} s = {naive.loop_fps:.2f} frames/s "
          f"(other processes took {naive.others:.0%} of the CPU meanwhile)\n")
    return naive


def model_only_table(candidates: list[Candidate], frames: np.ndarray, batches: list[int],
                     seconds: float, gflops: float) -> None:
    print("| candidate (runs in) | batch | model-only frames/s | GFLOP/s | others' CPU |\n"
          "|---|---|---|---|---|")
    for c in candidates:
        for batch in batches:
            c.speeds[batch] = fps = model_only(c, frames, batch, seconds)
            print(f"| {c.label} | {batch} | {fps:.2f} | {fps * gflops:.0f} | "
                  f"{c.others[batch]:.0%} |", flush=True)


def accuracy(candidates: list[Candidate], model, size, photos: Path | None) -> None:
    print("\nVerified accuracy (dino_export.verify through the candidate's backend, against "
          "PyTorch fp32; Imagenette photos when present, synthetic scenes, noise):\n")
    for c in candidates:
        sets = verification_sets(size, photos, count=8, noise=4)
        report = verify_file(c.model, model, sets, backend=c.backend, device="cpu")
        print(f"{c.label} ({report.runner}):\n```\n{report.table()}\n```")


def end_to_end(best: Candidate, others: list[Candidate], video: Path, frames: int,
               batches: list[int], work: Path) -> list[EndToEnd]:
    """The fastest candidate with a cold compile cache, then warm at every batch; the others
    warm at their best batch."""
    runs = [dino_run(best, video, frames, best.best_batch, work / "cold.mp4", True)]
    runs += [dino_run(best, video, frames, b, work / f"best_{b}.mp4", False) for b in batches]
    runs += [dino_run(c, video, frames, c.best_batch, work / f"{i}.mp4", False)
             for i, c in enumerate(others)]
    for r in runs:
        print(f"{r.label}, batch {r.batch}, {r.cache} cache: whole process {r.wall:.2f} s; "
              f"`{r.summary}` (others' CPU {r.others:.0%})")
    return runs


def startup_section(best: Candidate, video: Path, frames: int, work: Path) -> None:
    short = dino_run(best, video, frames, best.best_batch, work / "short.mp4", False)
    print(f"\nStart-up against a {frames}-frame clip ({best.label}, batch {best.best_batch}, "
          f"warm cache): whole process {short.wall:.2f} s, of which the pipeline "
          f"{short.pipeline_s:.2f} s and everything else {short.wall - short.pipeline_s:.2f} s "
          f"(others' CPU {short.others:.0%}):\n")
    print("| file, batch | interpreter s | imports s | model load s (cold / warm cache) | "
          "first call's extra s | one call s |\n|---|---|---|---|---|---|")
    print(startup_breakdown(best, best.best_batch))


def summary(candidates: list[Candidate], runs: list[EndToEnd], naive: NaiveRun,
            peak: dict[str, float], split: tuple[float, float], frame_size: str,
            frames: int) -> None:
    gflops = sum(split)
    print(f"\n### Summary (naive: the faster of its two runs, {naive.wall:.1f} s whole, "
          f"{naive.loop_fps:.2f} frames/s in its loop; peaks: the higher of the two rounds, "
          f"fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s, int8 {peak['int8']:.0f} "
          f"GOP/s; {split[1] / gflops:.0%} of the model's work is attention products)\n")
    print("| candidate (runs in) | batch | model-only frames/s | GFLOP/s | of bf16 peak | "
          "of int8 peak | of its ceiling |\n|---|---|---|---|---|---|---|")
    for c in candidates:
        for batch, fps in c.speeds.items():
            rate = fps * gflops
            print(f"| {c.label} | {batch} | {fps:.2f} | {rate:.0f} | {rate / peak['bf16']:.0%} | "
                  f"{rate / peak['int8']:.0%} | {rate / ceiling(c, split, peak):.0%} |")
    print("\n(ceiling: every product at the peak of the precision it runs in; an int8 file's "
          "attention products run in bf16)")
    print(f"\n| dino-run --show-attention --save mp4 ({frame_size}), {frames} frames | batch | "
          f"compile cache | whole process s | x naive whole | steady frames/s | x naive loop | "
          f"of model-only | peak RSS MiB | others' CPU |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        c = next(c for c in candidates if c.label == r.label)
        print(f"| {r.label} | {r.batch} | {r.cache} | {r.wall:.2f} | {naive.wall / r.wall:.2f}x | "
              f"{r.fps:.2f} | {r.fps / naive.loop_fps:.2f}x | {r.fps / c.speeds[r.batch]:.0%} | "
              f"{r.peak_mib:.0f} | {r.others:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="vit_s16")
    parser.add_argument("--checkpoint", help="trained weights (default: random, seed 0)")
    parser.add_argument("--video", default=str(DATA / "videos" / "01_dog.mp4"))
    parser.add_argument("--calib-video", default=str(DATA / "videos" / "02_cups.mp4"))
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--short-side", type=int, default=224)
    parser.add_argument("--img-size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size for both sides instead of the short side at the "
                             "video's aspect (the naive loop resizes to it, as --resize H W)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0, help="per model-only measurement")
    parser.add_argument("--engines", default="onnxruntime,openvino")
    parser.add_argument("--gemm-repeats", type=int, default=20)
    parser.add_argument("--memory-frames", type=int, default=0, help="also the long-run RSS test")
    parser.add_argument("--official-code", help="folder holding the official vision_transformer.py "
                        "(facebookresearch/dino): the naive loop runs the official model class")
    args = parser.parse_args()
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: not found (see ../shared/data/README.md)")
    arch = resolve_arch(args.arch)
    work = Path(tempfile.mkdtemp(prefix="bench_runtime_"))
    torch.set_num_threads(CORES)
    print(f"# bench_runtime {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {platform.machine()} {CORES} cores, {versions()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join(sys.argv)}\n")
    peaks = [gemm_round(args.gemm_repeats, "first round")]

    frames = read_frames(video, args.frames)
    size = tuple(args.img_size) if args.img_size else fit_size(frames.shape[1:3], args.short_side,
                                                               arch.patch_size)
    resize = list(args.img_size) if args.img_size else [args.short_side]
    torch.manual_seed(0)
    model = arch.build().eval()
    if args.checkpoint:
        from dino_models.checkpoint import load_backbone
        model, _ = load_backbone(args.checkpoint)
    weights = work / f"{args.arch}.pth"
    torch.save(model.state_dict(), weights)
    described = f"trained: {args.checkpoint}" if args.checkpoint else "random weights (seed 0)"
    split = vit_gflops(model.embed_dim, len(model.blocks), arch.patch_size, size)
    gflops = sum(split)
    print(f"{arch.short_name}, {described}; {len(frames)} frames of {video.name} "
          f"{frames.shape[2]}x{frames.shape[1]}; dino-run input {size[0]}x{size[1]} "
          f"({gflops:.1f} GFLOP/frame); naive loop: torchvision Resize({', '.join(map(str, resize))})"
          f", cropped to the patch grid\n")
    naives = [naive_round(args, arch, weights, video, len(frames), resize, work / "naive1",
                          "first run")]

    calib = Path(args.calib_video) if Path(args.calib_video).is_file() else None
    candidates = build_candidates(model, size, work, calib, args.engines.split(","))
    batches = sorted({1, args.batch})
    model_only_table(candidates, frames, batches, args.seconds, gflops)
    ranked = sorted(candidates, key=lambda c: -c.speeds[c.best_batch])
    accuracy(ranked[:3], model, size, verify_photos(work))
    print()
    runs = end_to_end(ranked[0], ranked[1:3], video, len(frames), batches, work)
    startup_section(ranked[0], video, min(60, len(frames)), work)
    if args.memory_frames:
        print("\nLong run: " + memory_run(args.memory_frames, work))
    print()
    naives.append(naive_round(args, arch, weights, video, len(frames), resize, work / "naive2",
                              "second run"))
    peaks.append(gemm_round(args.gemm_repeats, "second round"))
    peak = {p: max(r[p] for r in peaks) for p in peaks[0]}
    summary(candidates, runs, min(naives, key=lambda n: n.wall), peak, split,
            f"{frames.shape[2]}x{frames.shape[1]}", len(frames))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}; work files in {work}")


if __name__ == "__main__":
    main()
