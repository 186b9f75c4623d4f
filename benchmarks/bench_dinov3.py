"""DINOv3 speed on CPU: ViT-S/16 and ConvNeXt-Tiny through every CPU backend, beside DINOv2
ViT-S/14 and DINO ViT-S/16 at the same pixels.

    .venv/bin/python benchmarks/bench_dinov3.py                    # 224x224, about 10 minutes
    .venv/bin/python benchmarks/bench_dinov3.py --sizes 448x800    # a 16:9 frame, longer

For each model (random weights, seed 0: speed does not depend on the values; the accuracy
column is that of these weights) and input size (224x224 by default; 448x800 is a 16:9 frame at
short side 448, where DINOv2 runs at the nearest multiple of 14, 448x798), in one run:
  1. model-only frames/s of each CPU backend row at batch 1 and 8 on preprocessed frames, the
     best of ``--rounds`` windows, the worst in brackets (the cores are shared): for the DINOv3
     models every row (ONNX Runtime fp32 and int8, OpenVINO in the precision auto gives it,
     PyTorch fp32, and bf16 where the CPU has it natively, from the checkpoint); for the
     baselines ONNX Runtime fp32 and OpenVINO;
  2. ``dino-run`` end to end on a real 1280x720 video (decode, resize, batched inference, the
     view drawn at the source resolution, mp4 written), frames/s from its summary, the better
     of two runs. The ViTs draw the attention view (``--show-attention``), the ConvNeXt, which
     has no attention, the PCA parts view (``--pca``; its file exports the patch tokens);
  3. GFLOP per frame from the layer shapes, and the GFLOP/s the batch-8 row reaches;
  4. each exported row verified against PyTorch float32 through the backend it times
     (dino_export.verify on 16 Imagenette photos when present, synthetic scenes and noise):
     the worst max |err| of a float run, the worst cosine (and attention-mask IoU) otherwise,
     and whether the bounds of the precision it ran in hold.
Prints the load average and the other processes' CPU share at the start and the end, and
Markdown for docs/benchmarks/dinov3.md. Helpers come from bench_dinov2.py / bench_runtime.py.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dinov2 import Candidate, best_model_only, parse_size, run_dino_run  # noqa: E402
from bench_runtime import CORES, DATA, Others, calibration_folder, read_frames  # noqa: E402
from bench_runtime import verify_photos, vit_gflops  # noqa: E402

from dino_core.precision import cpu_has_native_bf16  # noqa: E402
from dino_export import ExportConfig, export_onnx  # noqa: E402
from dino_export.images import verification_sets  # noqa: E402
from dino_export.verify import verify_file  # noqa: E402
from dino_models.archs import resolve_arch  # noqa: E402
from dino_runtime.backends import BACKEND_CHOICES  # noqa: E402

# name -> every backend row (True) or the baseline rows only
MODELS = {"dinov3_s16": True, "dinov3_convnext_tiny": True, "dinov2_s14": False,
          "vit_s16": False}


def convnext_gflops(depths, dims, size: tuple[int, int]) -> float:
    """Multiply-adds x 2 of one frame through a ConvNeXt, in GFLOP: the 4x4 stem, per block
    a 7x7 depthwise conv and the two pointwise layers (4x wide), the 2x2 downsamplings."""
    h, w = size[0] // 4, size[1] // 4
    macs = h * w * 3 * 16 * dims[0]
    for i, (depth, dim) in enumerate(zip(depths, dims)):
        if i:
            h, w = h // 2, w // 2
            macs += h * w * dims[i - 1] * 4 * dim
        macs += depth * h * w * (49 * dim + 8 * dim * dim)
    return 2 * macs / 1e9


def gflops(name: str, model, size: tuple[int, int]) -> float:
    if not model.has_attention:
        return convnext_gflops(model.depths, model.embed_dims, size)
    weights, attention = vit_gflops(model.embed_dim, len(model.blocks), model.patch_size, size)
    return weights + attention


def accuracy(c: Candidate, model, size: tuple[int, int], photos: Path | None) -> str:
    """What the file's outputs are worth against PyTorch float32, on Imagenette photos (and the
    synthetic scenes) through the backend the row times: the worst max |err| for a float file,
    the worst cosine and the mean mask IoU otherwise; "reference" for PyTorch itself."""
    if c.runtime_kwargs["backend"] == "torch":
        return "reference" if c.runtime_kwargs["precision"] == "fp32" else "-"
    report = verify_file(c.model, model, verification_sets(size, photos),
                         backend=c.runtime_kwargs["backend"])
    rows = report.rows
    if report.precision == "fp32":
        worst = max(max(v for v in (r.cls_max_abs, r.attn_max_abs, r.patch_max_abs)
                        if v is not None) for r in rows)
        text = f"fp32 max abs {worst:.1e}"
    else:
        cos = min(min(v for v in (r.cls_cosine, r.patch_cosine) if v is not None) for r in rows)
        iou = min(r.mask_iou for r in rows)
        text = f"{report.precision} cos {cos:.4f}" + ("" if iou != iou else f", IoU {iou:.3f}")
    return text + (" PASS" if report.passed else " FAIL")


def checkpoint(name: str, work: Path):
    torch.manual_seed(0)
    model = resolve_arch(name).build().eval()
    path = work / f"{name}.pth"
    torch.save(model.state_dict(), path)
    return path, model


def candidates(ckpt: Path, model, size: tuple[int, int], work: Path, calib: Path | None,
               every_row: bool) -> list[Candidate]:
    """The CPU backend rows for one checkpoint and size; ``view`` is the dino-run view."""
    tag = f"{ckpt.stem}_{size[0]}x{size[1]}"
    outputs = ("cls", "attn") if model.has_attention else ("cls", "patch")
    cfg = ExportConfig(img_size=size, dynamic_batch=(1, 8, 8), outputs=outputs)
    fp32 = export_onnx(ckpt, work / f"{tag}_fp32.onnx", cfg)
    ort = ("--backend", "onnxruntime")
    rows = [Candidate("onnxruntime fp32", fp32, ort, {"backend": "onnxruntime"})]
    if "openvino" in BACKEND_CHOICES:  # in the precision auto gives it (bf16 on a bf16 CPU)
        rows.append(Candidate("openvino (fp32 file)", fp32, ("--backend", "openvino"),
                              {"backend": "openvino"}))
    if not every_row:
        return rows
    if calib is not None:
        int8 = export_onnx(ckpt, work / f"{tag}_int8.onnx", cfg.with_(
            precision="int8", calib_data=calib, calib_count=32))
        rows.append(Candidate("onnxruntime int8 (QDQ)", int8, ort, {"backend": "onnxruntime"}))
    hw = f"{size[0]}x{size[1]}"
    # torch refuses bf16 where the CPU has no native bf16 (slower than fp32 there)
    for precision in ("fp32", "bf16") if cpu_has_native_bf16() else ("fp32",):
        rows.append(Candidate(f"torch {precision}", ckpt, ("--precision", precision,
                                                           "--input-size", hw),
                              {"backend": "torch", "precision": precision, "input_size": size}))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--sizes", nargs="+", default=["224x224"],
                        help="input sizes HxW (each model at the nearest multiple of its "
                             "patch or stride below)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--video", default=str(DATA / "videos" / "01_dog.mp4"))
    parser.add_argument("--calib-video", default=str(DATA / "videos" / "02_cups.mp4"),
                        help="int8 calibration frames (no int8 rows without it)")
    parser.add_argument("--frames", type=int, default=24, help="frames per dino-run (best of 2)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per model-only window")
    parser.add_argument("--rounds", type=int, default=2, help="model-only windows (best kept)")
    args = parser.parse_args()
    video = Path(args.video)
    if not video.is_file():
        raise SystemExit(f"{video}: not found (see ../shared/data/README.md)")
    work = Path(tempfile.mkdtemp(prefix="bench_dinov3_"))
    torch.set_num_threads(CORES)
    frames = read_frames(video, 16)
    calib = (calibration_folder(work, Path(args.calib_video))
             if Path(args.calib_video).is_file() else None)
    photos = verify_photos(work)
    others = Others().__enter__()
    print(f"# bench_dinov3 {datetime.datetime.now().isoformat(timespec='seconds')}  "
          f"{platform.node()} {platform.machine()} {CORES} cores, torch {torch.__version__}; "
          f"{video.name} {frames.shape[2]}x{frames.shape[1]}, dino-run --save (ViTs "
          f"--show-attention, ConvNeXt --pca), {args.frames} frames, batch 8; random weights "
          f"(seed 0); CPU native bf16: {cpu_has_native_bf16()}")
    print(f"command: {' '.join(sys.argv)}")
    print(f"load average at the start: {os.getloadavg()[0]:.2f}")
    print("\n| model, input | backend | GFLOP/frame | model-only b1 frames/s (worst) | "
          "b8 frames/s (worst) | b8 GFLOP/s | dino-run frames/s | others' CPU | accuracy "
          "(vs PyTorch fp32, bounds) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for text in args.sizes:
        size = parse_size(text)
        for name in args.models:
            arch = resolve_arch(name)
            p = arch.patch_size if arch.family.kind != "dinov2" else 14
            run_size = (size[0] // p * p, size[1] // p * p)   # DINOv2: 448x798 for 448x800
            ckpt, model = checkpoint(name, work)
            rows = candidates(ckpt, model, run_size, work, calib, MODELS[name])
            flops = gflops(name, model, run_size)
            view = ("--show-attention",) if model.has_attention else ("--pca",)
            for c in rows:
                with Others() as row:
                    b1, b1_low = best_model_only(c, frames, 1, args.seconds, args.rounds)
                    b8, b8_low = best_model_only(c, frames, 8, args.seconds, args.rounds)
                    e2e = max(run_dino_run(c, video, args.frames, 8, work / "out.mp4", view)
                              for _ in range(2))
                checked = accuracy(c, model, run_size, photos)
                print(f"| {arch.short_name} {run_size[0]}x{run_size[1]} | {c.name} | "
                      f"{flops:.2f} | {b1:.2f} ({b1_low:.2f}) | {b8:.2f} ({b8_low:.2f}) | "
                      f"{b8 * flops:.0f} | {e2e:.2f} | {100 * row.share:.0f}% | {checked} |",
                      flush=True)
    others.__exit__(None, None, None)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; other processes took "
          f"{100 * others.share:.0f}% of the {CORES} cores over the whole run")


if __name__ == "__main__":
    main()
