"""This machine's matrix-multiply peak in fp32, bf16 and int8, through OpenVINO and PyTorch.

    flock /tmp/heavy.lock .venv/bin/python benchmarks/gemm_peak.py

The peak a model's throughput is read against (bench_runtime.py prints model GFLOP/s as a
fraction of it). Each figure is the best of ``--repeats`` calls of one (M, K) x (K, N) product
on all cores, counted as 2*M*N*K operations whatever the precision (GOP/s for int8):

* OpenVINO (the engine ``dino-run`` runs on CPUs): a MatMul graph compiled with
  ``INFERENCE_PRECISION_HINT`` f32 or bf16; int8 as OpenVINO runs a QDQ file's products
  (activations through a u8 FakeQuantize, int8 weights dequantized by a per-channel scale),
  which its low-precision transformations turn into one u8 x i8 FullyConnected on the VNNI
  units. The compiled graph's runtime precision is printed, so a product that silently stayed
  float would show.
* PyTorch (oneDNN): ``a @ b`` in fp32 and bf16, ``torch._int_mm`` for int8 x int8.

Shapes: a square 2048^3 product, and ViT-S's MLP product at 8 frames of 224x400 (M = 8 x 351
tokens, K = 384, N = 1536), the shape that dominates dino-run's model.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"2048^3": (2048, 2048, 2048), "ViT-S/16 MLP, 8x224x400": (8 * 351, 384, 1536)}


def best_seconds(call, repeats: int) -> float:
    call()
    call()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def openvino_product(m: int, k: int, n: int, precision: str):
    """(compiled model, its input, runtime precision of the product) for one MatMul."""
    from dino_runtime.backends.openvino_backend import ov
    ops = ov.opset13
    rng = np.random.default_rng(0)
    a = ops.parameter([m, k], ov.Type.f32, name="a")
    if precision == "int8":
        lo, hi = ops.constant(np.float32(0)), ops.constant(np.float32(4))
        x = ops.fake_quantize(a, lo, hi, lo, hi, 256)          # u8 activations
        w = ops.constant(rng.integers(-127, 128, (n, k), dtype=np.int8))
        scale = ops.constant(rng.uniform(0.01, 0.02, (n, 1)).astype(np.float32))
        weights = ops.multiply(ops.convert(w, ov.Type.f32), scale)  # per-channel dequantize
    else:
        x = a
        weights = ops.constant(rng.standard_normal((n, k), dtype=np.float32))
    product = ops.matmul(x, weights, False, True)
    model = ov.Model([product], [a], "gemm")
    hint = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision]
    compiled = ov.Core().compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": len(os.sched_getaffinity(0))})
    runtime = [op.get_rt_info() for op in compiled.get_runtime_model().get_ordered_ops()
               if op.get_rt_info()["layerType"].astype(str) in ("FullyConnected", "MatMul")]
    ran_in = runtime[0]["runtimePrecision"].astype(str) if runtime else "?"
    x_in = rng.uniform(0, 4, (m, k)).astype(np.float32)
    return compiled, x_in, ran_in


def openvino_peak(shape: tuple[int, int, int], precision: str, repeats: int) -> tuple[float, str]:
    m, k, n = shape
    compiled, x, ran_in = openvino_product(m, k, n, precision)
    request = compiled.create_infer_request()
    seconds = best_seconds(lambda: request.infer({0: x}, share_inputs=True), repeats)
    return 2 * m * n * k / seconds / 1e9, ran_in


def torch_peak(shape: tuple[int, int, int], precision: str, repeats: int) -> float:
    import torch
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    m, k, n = shape
    if precision == "int8":
        a = torch.randint(-127, 128, (m, k), dtype=torch.int8)
        b = torch.randint(-127, 128, (k, n), dtype=torch.int8)
        call = lambda: torch._int_mm(a, b)  # noqa: E731
    else:
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        call = lambda: a @ b  # noqa: E731
    with torch.inference_mode():
        return 2 * m * n * k / best_seconds(call, repeats) / 1e9


def measure(repeats: int) -> dict[tuple[str, str, str], float]:
    """{(engine, shape, precision): GFLOP/s}; prints one line each."""
    out = {}
    for label, shape in SHAPES.items():
        for precision in ("fp32", "bf16", "int8"):
            rate, ran_in = openvino_peak(shape, precision, repeats)
            out[("openvino", label, precision)] = rate
            torch_rate = torch_peak(shape, precision, repeats)
            out[("torch", label, precision)] = torch_rate
            print(f"| {label} | {precision} | {rate:.0f} (ran in {ran_in}) | {torch_rate:.0f} |",
                  flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(f"# gemm_peak {time.strftime('%Y-%m-%dT%H:%M:%S')}, {len(os.sched_getaffinity(0))} "
          f"cores, load average {os.getloadavg()[0]:.2f}")
    print("| product | precision | OpenVINO GFLOP/s (GOP/s int8) | PyTorch |")
    print("|---|---|---|---|")
    measure(args.repeats)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
