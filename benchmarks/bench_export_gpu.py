"""GPU export check (run by scripts/gpu_check.sh): ViT-S/8 TensorRT engines and ONNX Runtime GPU
sessions, each verified against PyTorch fp32 through the runtime users run, and timed.

    python benchmarks/bench_export_gpu.py OUT_DIR

For a ViT-S/8 with random weights at 224x224, dynamic batch 1..16 (opt 8):
  * the graphs dino-export writes: fp32, fp16 (LayerNorm and Softmax in fp32) and the int8 graph
    for TensorRT (symmetric Q/DQ, calibrated on 16 synthetic scenes);
  * a strongly typed TensorRT engine from each graph, built by dino_export.tensorrt (the --trt
    path) and run by the runtime's TensorRT backend;
  * ONNX Runtime on the CUDA execution provider (fp32, fp16 graphs) and on the TensorRT one with
    dino-run's options (fp32, fp16, int8 graphs);
  * PyTorch eager on the GPU (fp32 and fp16 autocast) as the baseline.
Every variant is verified with dino_export.verify.verify_file (the bounds of the precision it
runs in: fp32 max abs 1e-4, fp16 cosine 0.999, int8 cosine 0.99 and mask IoU 0.9) and timed at
batch 1 and 8 (the model call: preprocessed host input in, host outputs back). A missing
TensorRT, a missing execution provider or a session that fell back to another provider is
reported as a failure: the exit code is 1, never a silent pass.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from dino_core.batching import stack_padded
from dino_core.metadata import InputFormat
from dino_export import ExportConfig, read_metadata
from dino_export import tensorrt as trt_export
from dino_export.images import synthetic_images, verification_sets
from dino_export.onnx_export import export_fp32, finish, load_model, write_atomic
from dino_export.targets import by_name
from dino_export.verify import verify_file
from dino_models import vit_small
from dino_runtime import Runtime
from dino_runtime.backends.ort_backend import tensorrt_ep_options
from dino_runtime.preprocess import InputSpec, Preprocessor

SIZE = (224, 224)
SECONDS = 3.0  # timed per variant and batch, after 3 warm-up calls
GRAPHS = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8-trt"}  # precision -> row


def images_per_s(fn, batch: int) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < SECONDS:
        fn()
        n += 1
    torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - start)


def write_graphs(model, out: Path) -> dict[str, Path]:
    """precision -> the graph dino-export writes for it (as the --trt source graphs)."""
    calib = out / "calib"
    calib.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(synthetic_images(16, SIZE, seed=5)):
        cv2.imwrite(str(calib / f"{i:02d}.png"), img)
    model, source = load_model(model)
    cfg = ExportConfig(img_size=SIZE, dynamic_batch=(1, 8, 16), calib_data=calib, calib_count=16)
    fp32 = export_fp32(model, cfg)[0]
    paths = {}
    for precision, name in GRAPHS.items():
        row = by_name(name)
        proto = finish(fp32, model, source, cfg.with_(precision=precision), row)
        paths[precision] = write_atomic(proto, out / f"vits8{row.suffix}")
    return paths


class Check:
    """Verifies and times variants; remembers the failures."""

    def __init__(self, model, inputs, batches: dict[int, np.ndarray]) -> None:
        self.model, self.inputs, self.batches = model, inputs, batches
        self.rows: list[tuple[str, int, float | None, str]] = []
        self.failed: list[str] = []

    def fail(self, name: str, why: str) -> None:
        print(f"{name}: FAIL: {why}")
        self.failed.append(name)
        self.rows.append((name, 0, None, f"FAIL: {why}"))

    def file(self, name: str, path: Path, expect: str, **runtime) -> None:
        """Verify ``path`` as Runtime(path, **runtime) runs it, then time its model call."""
        try:
            report = verify_file(path, self.model, self.inputs, **runtime)
            rt = Runtime(path, threshold=None, batch_size=16, **runtime)
        except Exception as e:  # noqa: BLE001 (a missing provider or library: reported, not raised)
            self.fail(name, f"cannot run: {str(e).strip().splitlines()[0]}")
            return
        print(f"\n{name}: {report.runner} vs PyTorch float32:\n{report.table()}")
        if expect not in report.runner:  # a silent fallback would be a false pass
            self.fail(name, f"ran on {report.runner}, not {expect}")
            return
        status = "PASS" if report.passed else "FAIL"
        if not report.passed:
            self.failed.append(name)
        for b, bgr in self.batches.items():
            x = stack_padded([rt.preprocessor(f) for f in bgr], rt.pad_to)
            self.rows.append((name, b, images_per_s(lambda x=x: rt.backend.run(x), b), status))

    def baseline(self, model) -> None:
        """PyTorch eager on the GPU, fed and read back like the others."""
        gpu_model = copy.deepcopy(model).cuda()
        to_float = Preprocessor(InputSpec(SIZE, InputFormat.FLOAT_NCHW))
        for name, half in (("PyTorch eager fp32", False), ("PyTorch fp16 autocast", True)):
            for b, bgr in self.batches.items():
                x = torch.from_numpy(np.stack([to_float(f) for f in bgr]))

                def run(x=x, half=half):
                    with torch.inference_mode(), torch.autocast("cuda", torch.float16,
                                                                enabled=half):
                        [t.cpu() for t in gpu_model.forward_cls_and_attention(x.cuda())]
                self.rows.append((name, b, images_per_s(run, b), "baseline"))

    def table(self) -> str:
        lines = ["| variant | batch | images/s | verification |", "| --- | --- | --- | --- |"]
        lines += [f"| {n} | {b or '-'} | {'-' if ips is None else f'{ips:.1f}'} | {s} |"
                  for n, b, ips, s in self.rows]
        return "\n".join(lines)


def engines(check: Check, graphs: dict[str, Path], out: Path) -> None:
    reason = trt_export.unavailable_reason()
    if reason is not None:
        check.fail("TensorRT engines", f"not built: {reason}")
        return
    import tensorrt
    print(f"TensorRT {tensorrt.__version__}")
    for precision, graph in graphs.items():
        engine = out / f"vits8.{precision}.engine"
        start = time.perf_counter()
        try:
            trt_export.build_engine(graph, engine, trt_export.EngineConfig(workspace_gib=8),
                                    read_metadata(graph))
        except Exception as e:  # noqa: BLE001 (a build failure is a failed check)
            check.fail(f"TensorRT engine {precision}", f"build: {str(e).splitlines()[0]}")
            continue
        print(f"built {engine.name} from {graph.name} in {time.perf_counter() - start:.1f} s "
              f"({engine.stat().st_size / 1e6:.1f} MB)")
        check.file(f"TensorRT engine {precision}", engine, "TensorRT", backend="tensorrt",
                   device="cuda")


def execution_providers(check: Check, graphs: dict[str, Path]) -> None:
    import onnxruntime as ort
    available = ort.get_available_providers()
    print(f"onnxruntime {ort.__version__}: {available}")
    for precision, graph in graphs.items():
        for ep in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            name = f"ORT {ep.removesuffix('ExecutionProvider')} EP, {precision} graph"
            if ep == "CUDAExecutionProvider" and precision == "int8":
                continue  # Q/DQ graphs are for TensorRT; the CUDA EP has few int8 kernels
            if ep not in available:
                check.fail(name, f"not in this onnxruntime ({', '.join(available)})")
                continue
            options = tensorrt_ep_options(0, graph) if ep.startswith("Tensorrt") else {}
            check.file(name, graph, ep, device="cuda",
                       providers=[(ep, options), "CUDAExecutionProvider"])


def main(out: Path, model=None) -> int:
    """``model``: the ViT to export (default ViT-S/8, random weights, seed 0)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = model if model is not None else vit_small(patch_size=8).eval()
    inputs = verification_sets(SIZE)
    synthetic = inputs[0][1]
    check = Check(model, inputs, {1: synthetic[:1], 8: synthetic[:8]})
    check.baseline(model)
    graphs = write_graphs(model, out)
    engines(check, graphs, out)
    execution_providers(check, graphs)
    print("\n" + check.table())
    if check.failed:
        print(f"\nfailed: {', '.join(check.failed)}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_check_out/export")))
