"""GPU export check (run by scripts/gpu_check.sh): ViT-S/8 engines and ORT GPU sessions,
each verified against PyTorch fp32 and timed.

    python benchmarks/bench_export_gpu.py OUT_DIR

For a ViT-S/8 with random weights at 224x224, dynamic batch 1..16 (opt 8):
  * TensorRT engines fp16 and fp32 built with dino_export.tensorrt (the ``--trt`` path);
  * ONNX Runtime sessions on the CUDA and TensorRT execution providers, fp32 and fp16 files;
  * PyTorch eager on the GPU (fp32 and fp16 autocast) as the baseline.
Every variant is verified with dino_export.verify (tolerance of its precision) and timed at
batch 1 and 8. What is missing (TensorRT, an EP) is reported as such, not skipped silently.
Exit code 1 if any variant that could run failed its tolerance.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from dino_export import ExportConfig, export_onnx, read_metadata
from dino_export.images import normalize_bgr, random_images, real_images
from dino_export.verify import OnnxRunner, verify_runner
from dino_models import vit_small


def images_per_s(fn, batch: int, seconds: float = 3.0) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - start < seconds:
        fn()
        n += 1
    torch.cuda.synchronize()
    return n * batch / (time.perf_counter() - start)


def main(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = vit_small(patch_size=8).eval()
    size = (224, 224)
    label, real = real_images(8, size)
    inputs = [(label, real), ("random", random_images(4, size, seed=1))]
    batches = {b: np.concatenate([real] * 2)[:b] for b in (1, 8)}
    rows, failed = [], False

    gpu_model = model.cuda()
    for name, half in (("PyTorch eager fp32", False), ("PyTorch fp16 autocast", True)):
        for b, bgr in batches.items():
            def run(bgr=bgr, half=half):  # host uint8 in, host outputs out, like the others
                x = torch.from_numpy(normalize_bgr(bgr)).cuda()
                with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=half):
                    [t.cpu() for t in gpu_model.forward_cls_and_attention(x)]
            rows.append((name, b, images_per_s(run, b), "baseline"))
    model = gpu_model.cpu()

    cfg = ExportConfig(img_size=size, dynamic_batch=(1, 8, 16))
    files = {p: export_onnx(model, out / f"vits8.{p}.onnx", cfg.with_(precision=p))
             for p in ("fp32", "fp16")}

    def check(name: str, runner, meta, feed_fn):
        nonlocal failed
        report = verify_runner(runner, model, meta, inputs)
        print(f"\n{name} vs PyTorch fp32:\n{report.table()}")
        failed |= not report.passed
        for b, bgr in batches.items():
            rows.append((name, b, images_per_s(lambda: feed_fn(bgr), b),
                         "PASS" if report.passed else "FAIL"))

    from dino_export import tensorrt as trt_export
    reason = trt_export.unavailable_reason()
    if reason:
        print(f"TensorRT engines: not built: {reason}")
    else:
        import tensorrt
        print(f"TensorRT {tensorrt.__version__}")
        for precision in ("fp16", "fp32"):
            engine = out / f"vits8.{precision}.engine"
            start = time.perf_counter()
            trt_export.build_engine(files["fp32"], engine,
                                    trt_export.EngineConfig(precision, workspace_gib=8),
                                    read_metadata(files["fp32"]))
            print(f"built {engine.name} in {time.perf_counter() - start:.1f} s "
                  f"({engine.stat().st_size / 1e6:.1f} MB)")
            meta = trt_export.read_engine_metadata(engine)
            runner = trt_export.EngineRunner(engine, meta)
            check(f"TensorRT engine {precision}", runner, meta,
                  lambda bgr, r=runner: r.run_batch(normalize_bgr(bgr)))

    import onnxruntime as ort
    available = ort.get_available_providers()
    eps = {"CUDA": ("CUDAExecutionProvider", {}),
           "TensorRT EP": ("TensorrtExecutionProvider",
                           {"trt_fp16_enable": True, "trt_engine_cache_enable": True,
                            "trt_engine_cache_path": str(out / "ort_trt_cache")})}
    for ep_name, (provider, options) in eps.items():
        if provider not in available:
            print(f"ONNX Runtime {ep_name}: not available in this onnxruntime ({available})")
            continue
        for precision, path in files.items():
            if ep_name == "TensorRT EP" and precision == "fp16":
                continue  # the TensorRT EP converts the fp32 file itself (trt_fp16_enable)
            meta = read_metadata(path)
            if ep_name == "TensorRT EP":
                meta.precision = "fp16"  # judged by the fp16 tolerance: it runs in fp16
            try:
                runner = OnnxRunner(path, meta, providers=[(provider, options),
                                                           "CPUExecutionProvider"])
            except Exception as e:  # an EP whose libraries are missing fails here
                print(f"ONNX Runtime {ep_name} {precision}: cannot start: {e}".splitlines()[0])
                continue
            used = runner.session.get_providers()[0]
            if used != provider:
                print(f"ONNX Runtime {ep_name} {precision}: fell back to {used}; not timed")
                continue
            check(f"ORT {ep_name} {precision} file", runner, meta,
                  lambda bgr, r=runner: r(bgr))

    print("\n| variant | batch | images/s | verification |\n| --- | --- | --- | --- |")
    for name, b, ips, status in rows:
        print(f"| {name} | {b} | {ips:.1f} | {status} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_check_out")))
