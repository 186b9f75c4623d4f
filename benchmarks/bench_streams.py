"""Streams benchmark (issue 34): N cameras in one ``dino-run`` process against N processes.

    /work/team/bench .venv/bin/python benchmarks/bench_streams.py
    /work/team/bench .venv/bin/python benchmarks/bench_streams.py --streams 4 8 --rounds 2 --rtsp

In one run, on real 720p clips of ../shared/data/videos (01 to 05, reused in turn for more
streams), ViT-S/16 at 224x400 with random weights (seed 0), the fp32 ONNX file run by
``--backend auto`` (OpenVINO, bf16 on this CPU), batch 8, ``--show-attention --save`` (the
overlay written to mp4 at 720p for every stream), ``--max-frames F`` frames of each clip:

  1. the model alone on preprocessed frames, batch 8 and batch 1 (the "batched model
     throughput" a multi-stream process can at best reach);
  2. one single-stream ``dino-run`` process (the issue's baseline: whole process wall time,
     steady frames/s from its summary, peak resident memory);
  3. for each N: N single-stream processes started at once (wall until the last ends; aggregate
     frames/s = N x F / wall; peak of their summed resident memory), and one process with N
     ``--source`` (wall; aggregate; steady frames/s of its summary; peak memory; p50/p99 latency
     per stream). Each measurement ``--rounds`` times, alternating the order; the best kept;
  4. with ``--rtsp``: N live cameras (GStreamer's RTSP server, tests/runtime/rtsp_server.py,
     each clip at its real-time rate) into one process for ``--live-seconds``: per-stream
     frames/s, latency p50/p99 and frames dropped as stale (the overload rule).

This machine is shared: every measurement says how much of the CPU other processes took
meanwhile (``others``). Prints Markdown for docs/benchmarks/streams.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_runtime import CORES, Others, read_frames, versions  # noqa: E402
from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime import Runtime  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "videos"
CLIPS = ["01_dog.mp4", "02_cups.mp4", "03_blocks.mp4", "04_coffee.mp4", "05_default_juggle.mp4"]
DINO_RUN = [sys.executable, "-m", "dino_runtime.cli"]
RTSP_SERVER = ROOT / "tests" / "runtime" / "rtsp_server.py"


@dataclass
class Processes:
    """One or more processes run at once."""

    label: str
    streams: int
    wall: float
    peak_mib: float                 # peak of the processes' summed resident memory
    others: float
    outputs: list[str] = field(default_factory=list)

    def aggregate(self, frames: int) -> float:
        return self.streams * frames / self.wall


def run_at_once(label: str, commands: list[list[str]], streams: int) -> Processes:
    """Start ``commands`` together; wall time until the last ends, peak summed RSS."""
    with Others() as others:
        start = time.perf_counter()
        procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for c in commands]
        peak = [0]
        sampler = threading.Thread(target=_sample_total_rss, args=(procs, peak), daemon=True)
        sampler.start()
        outputs = [p.communicate() for p in procs]
        wall = time.perf_counter() - start
        sampler.join()
    for proc, (_, err) in zip(procs, outputs):
        if proc.returncode != 0:
            raise SystemExit(f"failed ({proc.returncode}): {err}")
    return Processes(label, streams, wall, peak[0] / 1024, others.share,
                     [out for out, _ in outputs])


def _sample_total_rss(procs: list[subprocess.Popen], peak: list[int]) -> None:
    """The peak of the processes' summed VmRSS (KiB), sampled every 50 ms."""
    while any(p.poll() is None for p in procs):
        total = 0
        for proc in procs:
            try:
                text = Path(f"/proc/{proc.pid}/status").read_text()
                total += int(re.search(r"VmRSS:\s+(\d+)", text).group(1))
            except (OSError, AttributeError):
                pass
        peak[0] = max(peak[0], total)
        time.sleep(0.05)


def dino_run(model: Path, clips: list[Path], frames: int, out: Path, batch: int) -> list[str]:
    sources = [a for i, clip in enumerate(clips) for a in ("--source", f"s{i}={clip}")]
    return [*DINO_RUN, "--model", str(model), *sources, "--max-frames", str(frames), "--batch",
            str(batch), "--show-attention", "--save", f"{out}/{{stream}}.mp4", "--overwrite",
            "--no-display"]


def model_only(model: Path, frames: np.ndarray, batch: int, seconds: float) -> tuple[float, float]:
    """(frames/s of backend.run alone on preprocessed real frames, others' CPU share)."""
    rt = Runtime(model, batch_size=batch, threshold=None)
    x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
    rt.backend.run(x)
    with Others() as others:
        n, start = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - start < seconds:
            rt.backend.run(x)
            n += 1
        fps = n * batch / (time.perf_counter() - start)
    return fps, others.share


def steady(stdout: str) -> tuple[float, float]:
    """(frames/s, seconds) of a run's summary: the whole run's line, or the one stream's."""
    lines = stdout.strip().splitlines()
    whole = next((line for line in lines if line.startswith("all ")), lines[0])
    found = re.search(r"frames \d+ in ([\d.]+) s: ([\d.]+) frames/s", whole)
    return float(found.group(2)), float(found.group(1))


def latencies(stdout: str) -> list[tuple[str, str, str, str]]:
    """(stream, frames/s, p50 ms, p99 ms) of each stream line; drops appended when live."""
    rows = []
    for line in stdout.splitlines():
        found = re.match(r"stream (\S+) .*?: frames (\d+) in [\d.]+ s: ([\d.]+) frames/s; "
                         r"latency p50 (\d+) ms, p99 (\d+) ms; dropped (\d+)", line)
        if found:
            rows.append(found.groups())
    return rows


def best(runs: list[Processes]) -> Processes:
    return min(runs, key=lambda r: r.wall)


# -- live cameras ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_run(model: Path, clips: list[Path], seconds: float, batch: int, out: Path) -> str:
    """N RTSP cameras into one process for ``seconds``, then SIGINT; its stdout."""
    servers, urls = [], []
    try:
        for clip in clips:
            port = free_port()
            proc = subprocess.Popen(["/usr/bin/python3", str(RTSP_SERVER), str(clip), str(port)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if proc.stdout.readline().strip() != "ready":
                raise SystemExit(f"RTSP server: {proc.stderr.read()}")
            servers.append(proc)
            urls.append(f"rtsp://127.0.0.1:{port}/clip")
        sources = [a for i, url in enumerate(urls) for a in ("--source", f"cam{i}={url}")]
        cmd = [*DINO_RUN, "--model", str(model), *sources, "--batch", str(batch),
               "--show-attention", "--save", f"{out}/{{stream}}.mp4", "--overwrite",
               "--no-display"]
        with Others() as others:
            run = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            time.sleep(seconds)
            run.send_signal(signal.SIGINT)
            stdout, stderr = run.communicate(timeout=120)
        if run.returncode != 130:
            raise SystemExit(f"live run failed ({run.returncode}): {stderr}")
        return stdout + f"\n(others {others.share:.0%})"
    finally:
        for proc in servers:
            proc.kill()
            proc.wait()


# -- report ------------------------------------------------------------------------------------
def report_n(n: int, frames: int, single: Processes, separate: Processes, together: Processes,
             model_fps: float) -> None:
    agg_sep, agg_one = separate.aggregate(frames), together.aggregate(frames)
    fps_one, _ = steady(together.outputs[0])
    print(f"\n### {n} streams\n")
    print("| run | wall s | aggregate frames/s (N x F / wall) | steady frames/s | peak MiB | "
          "others |\n|---|---|---|---|---|---|")
    print(f"| one single-stream process (1 clip) | {single.wall:.2f} | "
          f"{single.aggregate(frames):.1f} | {steady(single.outputs[0])[0]:.1f} | "
          f"{single.peak_mib:.0f} | {single.others:.0%} |")
    print(f"| {n} single-stream processes at once | {separate.wall:.2f} | {agg_sep:.1f} | - | "
          f"{separate.peak_mib:.0f} (summed) | {separate.others:.0%} |")
    print(f"| one process, {n} streams | {together.wall:.2f} | {agg_one:.1f} | {fps_one:.1f} | "
          f"{together.peak_mib:.0f} | {together.others:.0%} |")
    print(f"\nTargets: aggregate {agg_one / agg_sep:.2f}x the {n} processes' (target 1.2x); "
          f"steady {fps_one / model_fps:.0%} of the batch-8 model alone ({model_fps:.1f} "
          f"frames/s; target 90%); peak memory {together.peak_mib / single.peak_mib:.2f}x one "
          f"single-stream process's (target at most 2x; the {n} processes took "
          f"{separate.peak_mib / single.peak_mib:.2f}x).\n")
    print("| stream | frames/s | latency p50 ms | p99 ms |\n|---|---|---|---|")
    for name, _, fps, p50, p99, _ in latencies(together.outputs[0]):
        print(f"| {name} | {fps} | {p50} | {p99} |")
    print("\nThe one process's summary:\n\n    " + "\n    ".join(
        together.outputs[0].strip().splitlines()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--frames", type=int, default=60, help="frames of each clip")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="model-only timing")
    parser.add_argument("--rtsp", action="store_true", help="also N live RTSP cameras")
    parser.add_argument("--live-seconds", type=float, default=20.0)
    args = parser.parse_args()
    clips = [DATA / name for name in CLIPS]
    if not all(c.is_file() for c in clips):
        raise SystemExit(f"{DATA}: the real clips are needed (see ../shared/data/README.md)")
    work = Path(tempfile.mkdtemp(prefix="bench_streams_"))
    torch.set_num_threads(CORES)
    print(f"# bench_streams {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {platform.machine()} {CORES} cores, {versions()}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"command: {' '.join(sys.argv)}\n")

    torch.manual_seed(0)
    model = export_onnx(resolve_arch("vit_s16").build().eval(), work / "vits16.onnx",
                        ExportConfig(img_size=(224, 400), dynamic_batch=(1, 8, 32),
                                     outputs=("cls", "attn")))
    frames = read_frames(clips[0], 16)
    fps8, others8 = model_only(model, frames, args.batch, args.seconds)
    fps1, others1 = model_only(model, frames, 1, args.seconds)
    print(f"ViT-S/16 224x400, random weights (seed 0), fp32 ONNX run by --backend auto; "
          f"{args.frames} frames of each 1280x720 clip, --show-attention --save at 720p, "
          f"batch {args.batch}.\n")
    print(f"Model alone (backend.run on preprocessed frames): batch {args.batch} "
          f"{fps8:.2f} frames/s (others {others8:.0%}); batch 1 {fps1:.2f} (others "
          f"{others1:.0%}).")
    out = work / "out"
    out.mkdir()
    run_at_once("warm-up", [dino_run(model, clips[:1], 8, out, args.batch)], 1)  # compile cache
    singles = [run_at_once("single", [dino_run(model, clips[:1], args.frames, out, args.batch)],
                           1) for _ in range(args.rounds)]
    single = best(singles)
    print(f"One single-stream process: best of {args.rounds}: "
          + ", ".join(f"{r.wall:.2f} s / {r.peak_mib:.0f} MiB" for r in singles) + ".")
    for n in args.streams:
        chosen = [clips[i % len(clips)] for i in range(n)]
        for i in range(n):  # each single-stream process names its stream s0: a folder each
            (out / f"p{i}").mkdir(exist_ok=True)
        separate, together = [], []
        for r in range(args.rounds):
            order = ("separate", "together") if r % 2 == 0 else ("together", "separate")
            for kind in order:
                if kind == "separate":
                    separate.append(run_at_once(f"{n} processes", [
                        dino_run(model, [clip], args.frames, out / f"p{i}", args.batch)
                        for i, clip in enumerate(chosen)], n))
                else:
                    together.append(run_at_once(f"one process, {n} streams",
                                                [dino_run(model, chosen, args.frames, out,
                                                          args.batch)], n))
        print(f"\n{n} streams, every round: separate " + ", ".join(
            f"{r.wall:.2f} s" for r in separate) + "; together " + ", ".join(
            f"{r.wall:.2f} s" for r in together) + ".")
        report_n(n, args.frames, single, best(separate), best(together), fps8)
    if args.rtsp:
        n = max(args.streams[:1])
        stdout = live_run(model, [clips[i % len(clips)] for i in range(n)], args.live_seconds,
                          args.batch, out)
        print(f"\n### {n} live RTSP cameras into one process, {args.live_seconds:.0f} s\n")
        print("| stream | frames/s | latency p50 ms | p99 ms | dropped (stale) |\n"
              "|---|---|---|---|---|")
        for name, _, fps, p50, p99, dropped in latencies(stdout):
            print(f"| {name} | {fps} | {p50} | {p99} | {dropped} |")
        print("\n    " + "\n    ".join(stdout.strip().splitlines()))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
