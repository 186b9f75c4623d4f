"""What the teacher's diagnostics cost a training step (dino_train.diagnostics; target < 2%).

    /work/team/bench python benchmarks/bench_diagnostics.py            # the three shapes below

For each shape, one trainer (dino-train's CPU path: its precision, fused AdamW) takes the same
fixed batches twice over, steps alternating with the diagnostics on and off (``DINOLoss.diagnose``;
on, off, off, on, ... so that drift and load hit both alike), and reports:

* the median step time with and without them, and their ratio (whole steps: noisy);
* the diagnostics alone, timed directly on the step's real shapes (teacher targets (2B, K)),
  as a share of the median step: the same cost without the step's noise;
* what that costs a run: dino-train measures once per ``log.jsonl`` record, so at
  ``--log-every`` N (default 10) the cost per step is the direct cost / N (with
  ``--log-every 1``, the direct cost itself): the figure the target (< 2%) is about.

Shapes: the official crops (2 x 224 + 8 x 96 px) on ViT-Tiny/16 with K = 65,536 (bench_train's
model); the CIFAR-10 recipe of bench_quality (ViT-Tiny/4, 6 blocks, 28 + 4 x 12 px, batch 64,
K = 4,096); and a worst case for the diagnostics' share: 32 px crops on a 1-block ViT-Tiny/4
with K = 65,536 and batch 64, where the K-sized work is the largest part of the step. Each line
says the load average and the CPU share other processes took while it ran.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_runtime import Others  # noqa: E402
from dino_train import distributed as D  # noqa: E402
from dino_train.builders import build_trainer  # noqa: E402
from dino_train.config import TrainConfig  # noqa: E402
from dino_train.context import TrainContext, resolve_train_precision  # noqa: E402
from dino_train.cpu_tuning import cpu_model, keep_freed_memory  # noqa: E402
from dino_train.diagnostics import teacher_diagnostics  # noqa: E402
from dino_train.step import make_views, train_step  # noqa: E402


@dataclass(frozen=True)
class Shape:
    name: str
    options: dict


SHAPES = [
    Shape("official crops, vit_t16, K 65536, batch 16",
          dict(arch="vit_tiny", patch_size=16, out_dim=65536, batch_size_per_gpu=16,
               local_crops_number=8, global_crop_size=224, local_crop_size=96)),
    Shape("CIFAR recipe, vit_t4 depth 6, K 4096, batch 64",
          dict(arch="vit_tiny", patch_size=4, depth=6, out_dim=4096, batch_size_per_gpu=64,
               use_bn_in_head=True, head_hidden_dim=512, local_crops_number=4,
               global_crop_size=28, local_crop_size=12)),
    Shape("worst case, vit_t4 depth 1, 32 px, K 65536, batch 64",
          dict(arch="vit_tiny", patch_size=4, depth=1, out_dim=65536, batch_size_per_gpu=64,
               local_crops_number=2, global_crop_size=32, local_crop_size=16)),
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=12, help="timed steps per setting and shape")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--shapes", default="0,1,2", help="which shapes (indices, comma-separated)")
    p.add_argument("--log-every", type=int, default=10,
                   help="dino-train's --log-every for the per-run cost (default: its default)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: dino-train's choice on this CPU (bf16 where it is native)")
    return p.parse_args()


def images(n: int, side: int) -> Path:
    from PIL import Image
    folder = Path(tempfile.mkdtemp(prefix="bench_diag_"))
    rs = np.random.RandomState(0)
    for i in range(n):
        Image.fromarray(rs.randint(0, 256, (side, side, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg")
    return folder


def trainer_for(shape: Shape, precision: str):
    cfg = TrainConfig(data_path=str(images(2 * shape.options["batch_size_per_gpu"],
                                           max(64, shape.options["global_crop_size"]))),
                      output_dir=tempfile.mkdtemp(prefix="bench_diag_out_"), num_workers=0,
                      drop_path_rate=0.0, precision=precision, progress=False,
                      augmentation="batched", epochs=100, warmup_epochs=10, **shape.options)
    ctx = TrainContext(torch.device("cpu"), precision, D.DistInfo(device="cpu"))
    t = build_trainer(cfg, ctx)
    batch = next(iter(t.loader))[0]
    crops = make_views(t, batch)
    return t, crops


def timed_steps(t, crops, steps: int, warmup: int) -> dict[bool, list[float]]:
    """Steps on the same crops with the diagnostics on and off, in the order on, off, off, on."""
    times: dict[bool, list[float]] = {True: [], False: []}
    pattern = [True, False, False, True]
    for i in range(warmup + 2 * steps):
        on = pattern[i % 4]
        start = time.perf_counter()
        train_step(t, crops, diagnose=on)
        if on:
            t.loss.last_diagnostics.tolist()  # what a log record reads (a sync on a GPU)
        t.state.step += 1
        if i >= warmup:
            times[on].append(time.perf_counter() - start)
    return times


def direct_cost(t, crops, repeats: int = 20) -> float:
    """Median seconds of teacher_diagnostics on this step's shapes (targets (2B, K))."""
    k, n = t.cfg.out_dim, 2 * len(crops[0])
    q = torch.softmax(torch.randn(n, k) / 0.04, dim=-1)
    loss, center = torch.tensor(5.0), torch.zeros(1, k)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        teacher_diagnostics(q, loss, center).tolist()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def main() -> None:
    args = parse_args()
    args.precision = resolve_train_precision(args.precision, torch.device("cpu"))
    keep_freed_memory()
    torch.manual_seed(0)
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  machine: "
          f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.precision}; {args.warmup} warm-up + "
          f"{args.steps} timed steps per setting, on/off alternating")
    for index in (int(i) for i in args.shapes.split(",")):
        shape = SHAPES[index]
        t, crops = trainer_for(shape, args.precision)
        with Others() as others:
            times = timed_steps(t, crops, args.steps, args.warmup)
            alone = direct_cost(t, crops)
        on, off = float(np.median(times[True])), float(np.median(times[False]))
        print(f"{shape.name}:")
        print(f"  step with diagnostics {on * 1e3:8.1f} ms, without {off * 1e3:8.1f} ms "
              f"(medians): ratio {on / off:.4f} ({100 * (on / off - 1):+.2f}%)")
        print(f"  diagnostics alone {alone * 1e3:.2f} ms = {100 * alone / off:.2f}% of a step "
              f"(targets {2 * len(crops[0])} x {t.cfg.out_dim}); measured once per record: "
              f"{100 * alone / off / args.log_every:.3f}% of a run's steps at --log-every "
              f"{args.log_every}")
        print(f"  load average {os.getloadavg()[0]:.2f}, other processes took "
              f"{others.share:.0%} of the CPU")


if __name__ == "__main__":
    main()
