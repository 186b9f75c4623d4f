"""Cost of making DINO's multi-crop views: the per-image PIL pipeline vs ``--augmentation batched``.

    flock /tmp/heavy.lock python benchmarks/bench_augment.py --data /tmp/inet/val \
        --global-size 224 --local-size 96 --local-crops 8
    flock /tmp/heavy.lock python benchmarks/bench_augment.py --data /tmp/cifar_sub/train \
        --global-size 32 --local-size 16 --local-crops 4 --global-scale 0.25 1 \
        --local-scale 0.05 0.25

One run, same images, batch after batch:

* PIL (the baseline, ``MultiCropAugmentation`` as dino-train's loader workers run it): decode +
  views of every image of a batch, one thread, as in a worker;
* batched: decode (what the workers still do) and, apart, the views of the whole batch by
  ``BatchedMultiCrop`` in the training process, on one thread and on all of them, and on the
  GPU when ``--device cuda`` (synchronised before each timing stops).

Reports the median seconds per batch and images/s of each; on a GPU, what a worker still
spends per batch (decoding) is what bounds the images/s a loader can feed.
"""
from __future__ import annotations

import argparse
import datetime
import os
import time

import numpy as np
import torch

from dino_train.batched_augment import BatchedMultiCrop, SourceImage, collate_sources
from dino_train.cpu_tuning import cpu_model
from dino_train.data import CropConfig, MultiCropAugmentation, MultiCropDataset, scan_folder


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="a folder of images")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--batches", type=int, default=5, help="timed batches per path")
    p.add_argument("--global-size", type=int, default=224)
    p.add_argument("--local-size", type=int, default=96)
    p.add_argument("--local-crops", type=int, default=8)
    p.add_argument("--global-scale", type=float, nargs=2, default=(0.4, 1.0))
    p.add_argument("--local-scale", type=float, nargs=2, default=(0.05, 0.4))
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    return p.parse_args()


def timed(fn, n: int, sync=lambda: None) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        sync()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    args = parse_args()
    samples = scan_folder(args.data).samples
    need = args.batch * (args.batches + 1)
    if len(samples) < need:
        raise SystemExit(f"bench_augment: {args.data} has {len(samples)} images; "
                         f"{args.batches} batches of {args.batch} (+1 warm-up) need {need}")
    cfg = CropConfig(tuple(args.global_scale), tuple(args.local_scale), args.local_crops,
                     args.global_size, args.local_size)
    pil = MultiCropDataset(samples, MultiCropAugmentation(cfg), seed=0)
    src = MultiCropDataset(samples, SourceImage(2 * args.global_size), seed=0)
    views = BatchedMultiCrop(cfg)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    threads = torch.get_num_threads()

    def batch_keys(i: int) -> range:
        return range(i * args.batch, (i + 1) * args.batch)

    torch.set_num_threads(1)  # a loader worker's single thread
    pil_t = timed(lambda i: [pil[(0, k)] for k in batch_keys(i)], args.batches + 1)[1:]
    decoded = []
    dec_t = timed(lambda i: decoded.append(collate_sources([src[(0, k)] for k in batch_keys(i)])),
                  args.batches + 1)[1:]

    def batched(i: int) -> None:
        (images, sizes), _ = decoded[i]
        views(images.to(device, non_blocking=True), sizes, torch.Generator().manual_seed(i))

    one_t = timed(batched, args.batches + 1, sync)[1:] if device.type == "cpu" else []
    torch.set_num_threads(threads)
    all_t = timed(batched, args.batches + 1, sync)[1:]

    def line(name: str, times: list[float]) -> str:
        med = float(np.median(times))
        return f"  {name:<46} {med * 1e3:8.1f} ms/batch  {args.batch / med:8.0f} images/s"

    cpu = cpu_model()
    gpu = f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  machine: {cpu}, "
          f"{os.cpu_count()} cores{gpu}, torch {torch.__version__}")
    print(f"data: {args.data} ({len(samples)} images); batch {args.batch}; views 2x"
          f"{args.global_size} + {args.local_crops}x{args.local_size}; medians of "
          f"{args.batches} batches after 1 warm-up")
    print(line("PIL pipeline, decode + views, 1 thread", pil_t))
    print(line("batched: decode only (worker), 1 thread", dec_t))
    if one_t:
        print(line("batched: views on cpu, 1 thread", one_t))
    print(line(f"batched: views on {args.device}, {threads} threads", all_t))
    worker = float(np.median(dec_t)) + (float(np.median(one_t)) if device.type == "cpu" else 0)
    print(f"per worker-equivalent CPU second: PIL {1 / float(np.median(pil_t)):.2f} batches, "
          f"batched {1 / worker:.2f} batches ({float(np.median(pil_t)) / worker:.1f}x)"
          + (" (decode only: the views run on the GPU)" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
