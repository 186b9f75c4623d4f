"""How close ``dino_core.memory.inference_bytes`` comes to the memory one ONNX Runtime call takes.

Exports a random ViT-Tiny (depth 2) at a few sizes and opsets, then, in a fresh process per
case, opens the file with the runtime's CPU backend, resets the peak-RSS counter
(``/proc/self/clear_refs``), runs one call on a batch of zeros and reads the peak growth
(``VmHWM`` - ``VmRSS`` before). Linux only.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/bench_memory_estimate.py
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = [(8, 256, 18), (8, 448, 18), (16, 896, 18), (8, 448, 23)]  # (patch, side, opset)
BATCHES = (1, 4)


def _status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def child(path: str, batch: int) -> None:
    import numpy as np

    from dino_runtime.backends import BackendOptions, load_backend
    backend = load_backend(path, "onnxruntime", BackendOptions(device="cpu", threads=2))
    h, w = backend.metadata.img_size
    x = np.zeros((batch, 3, h, w), np.float32)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak (VmHWM) restarts from the current RSS
    before = _status("VmRSS:")
    backend.run(x)
    print(json.dumps({"peak_growth": _status("VmHWM:") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]))
        return
    import torch

    from dino_core.memory import SCORES_FACTOR, TOKENS_FACTOR, inference_bytes
    from dino_export import ExportConfig, export_onnx
    from dino_models import vit_tiny
    from dino_runtime import Runtime
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}  cores: "
          f"{len(os.sched_getaffinity(0))}  estimate = {SCORES_FACTOR} x scores + "
          f"{TOKENS_FACTOR} x tokens + 2 x image")
    print("| patch | input | opset | batch | tokens N | scores (B, 3, N, N) MiB | measured peak "
          "MiB | estimate MiB | estimate / measured |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for patch, side, opset in CASES:
            torch.manual_seed(0)
            path = Path(tmp) / f"t{patch}_{side}_{opset}.onnx"
            export_onnx(vit_tiny(patch_size=patch, depth=2).eval(), path, ExportConfig(
                img_size=(side, side), dynamic_batch=(1, 4, 8), opset=opset,
                outputs=("cls", "attn", "patch")))
            meta = Runtime(path, warmup=False).metadata
            n = meta.num_patches + 1
            for batch in BATCHES:
                out = subprocess.run([sys.executable, __file__, "--child", str(path), str(batch)],
                                     capture_output=True, text=True, check=True, cwd=ROOT)
                measured = json.loads(out.stdout.strip().splitlines()[-1])["peak_growth"]
                estimate = inference_bytes(meta, batch)
                scores = batch * meta.num_heads * n * n * 4
                print(f"| {patch} | {side}x{side} | {opset} | {batch} | {n} | {scores / 2**20:.0f} | "
                      f"{measured / 2**20:.0f} | {estimate / 2**20:.0f} | "
                      f"{estimate / measured:.2f} |", flush=True)


if __name__ == "__main__":
    main()
