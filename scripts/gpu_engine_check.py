"""The engine half of ``scripts/gpu_check.sh export``: each ``--trt`` precision, as a user runs it.

    python scripts/gpu_engine_check.py CHECKPOINT FRAMES CALIB OUT [--precisions fp32,fp16,int8]

For each precision P: ``dino-export CHECKPOINT -o OUT/m.onnx --dynamic-batch 1 8 16 --trt P``
(``--calib-data CALIB`` for int8), which writes and verifies the graph of P, builds the strongly
typed engine ``OUT/m.P.engine`` from it and verifies that through the runtime's TensorRT backend;
then ``dino-run`` on the engine (``--device cuda``) and on the fp32 graph ``OUT/m.onnx`` on the
CPU (ONNX Runtime), over the images in FRAMES, and the [CLS] embeddings of the two compared:

    fp32: max abs difference <= 1e-3;  fp16: cosine >= 0.999;  int8: cosine >= 0.99

(minimum cosine over the frames). One line per precision, ``OK`` or ``FAIL: why``; exit 1 when
any failed. Without TensorRT or a GPU, dino-export stops with its one-line reason: that is a
failed check, never a pass.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

BOUNDS = {"fp32": ("max abs", 1e-3), "fp16": ("cosine", 0.999), "int8": ("cosine", 0.99)}


def run(args: list[str], log: Path) -> tuple[int, str]:
    """Run a command of the toolkit; (exit code, its last stderr line). Output goes to ``log``."""
    proc = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          check=False)
    log.write_text(f"$ {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
    lines = proc.stderr.strip().splitlines()
    return proc.returncode, lines[-1] if lines else f"exit {proc.returncode}"


def embeddings(model: Path, device: str, frames: Path, out: Path) -> tuple[np.ndarray | None, str]:
    """The [CLS] embeddings dino-run writes for ``frames`` (N, D), or (None, why). The CPU
    reference runs on ONNX Runtime in float32 (auto would take OpenVINO, in bf16 here)."""
    backend = ["--backend", "onnxruntime"] if device == "cpu" else []
    code, last = run(["dino_runtime.cli", "--model", str(model), "--device", device, *backend,
                      "--source", str(frames), "--embeddings", str(out), "--batch", "8",
                      "--overwrite", "--no-display"], out.with_suffix(".log"))
    if code != 0:
        return None, f"dino-run --model {model.name} --device {device}: {last}"
    return np.load(out)["cls"], ""


def compare(precision: str, got: np.ndarray, ref: np.ndarray) -> tuple[bool, str]:
    kind, bound = BOUNDS[precision]
    if got.shape != ref.shape:
        return False, f"{got.shape} embeddings against {ref.shape} from the CPU"
    if kind == "max abs":
        value = float(np.abs(got - ref).max())
        return value <= bound, f"max abs difference {value:.2e} (bound {bound:.0e})"
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    value = float(cos.min())
    return value >= bound, f"min cosine {value:.6f} (bound {bound})"


def check(precision: str, args: argparse.Namespace, reference: dict) -> str:
    out: Path = args.out
    calib = ["--calib-data", str(args.calib)] if precision == "int8" else []
    code, last = run(["dino_export.cli", str(args.checkpoint), "-o", str(out / "m.onnx"),
                      "--dynamic-batch", "1", "8", "16", "--trt", precision, *calib],
                     out / f"export_{precision}.log")
    if code != 0:
        return f"FAIL: dino-export --trt {precision}: {last}"
    if "cls" not in reference:  # the CPU reference, once: the fp32 graph every run rewrote
        reference["cls"], why = embeddings(out / "m.onnx", "cpu", args.frames, out / "cpu.npy")
        if reference["cls"] is None:
            return f"FAIL: {why}"
    got, why = embeddings(out / f"m.{precision}.engine", "cuda", args.frames,
                          out / f"{precision}.npy")
    if got is None:
        return f"FAIL: {why}"
    ok, text = compare(precision, got, reference["cls"])
    return f"{'OK' if ok else 'FAIL'}: {len(got)} frames, {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("frames", type=Path, help="folder of images to run and compare on")
    parser.add_argument("calib", type=Path, help="folder of images to calibrate int8 on")
    parser.add_argument("out", type=Path)
    parser.add_argument("--precisions", default="fp32,fp16,int8")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    unknown = [p for p in precisions if p not in BOUNDS]
    if unknown:
        parser.error(f"--precisions: unknown {unknown[0]!r}; choose from {', '.join(BOUNDS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    reference: dict = {}
    failed = 0
    for precision in precisions:
        line = check(precision, args, reference)
        failed += not line.startswith("OK")
        print(f"engine {precision}: {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
