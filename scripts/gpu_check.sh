#!/usr/bin/env bash
# One command for the checks that need a CUDA GPU:  bash scripts/gpu_check.sh
# Each area appends its own section below, between its BEGIN/END markers; a section exits
# non-zero on failure, so the script fails if any check fails. Output: $OUT (default gpu_check_out).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2
    exit 1
fi
"$PY" -c "import torch; print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

# ===== BEGIN training (dino_train) =====
echo "== training: GPU tests (fp16/bf16/fp32 steps finite, fp16 scaler in checkpoints)"
"$PY" -m pytest -q -m gpu tests/train -rs
echo "== training: fp32 / bf16 / fp16 throughput, ViT-S/16, 2x224 + 8x96 crops, batch 64"
TRAIN_DATA=$(mktemp -d)
"$PY" - "$TRAIN_DATA" <<'PYEOF'
import sys, numpy as np
from PIL import Image
rs = np.random.RandomState(0)
for i in range(256):
    Image.fromarray(rs.randint(0, 256, (256, 320, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/{i}.jpg")
PYEOF
for PREC in fp32 bf16 fp16; do
    RUN="$OUT/train_$PREC"
    rm -rf "$RUN"
    "$PY" -m dino_train.cli --arch vit_s16 --data-path "$TRAIN_DATA" --output-dir "$RUN" \
        --device cuda --precision "$PREC" --batch-size-per-gpu 64 --num-workers 8 \
        --max-steps 30 --log-every 10 --no-progress
    "$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; \
print(f'{sys.argv[2]}: {r[\"images_per_s\"]:.1f} images/s (steps 21-30), loss {r[\"loss\"]:.4f}, data share {100*r[\"data_share\"]:.1f}%')" \
        "$RUN/log.jsonl" "$PREC" | tee -a "$OUT/train_summary.txt"
done
rm -rf "$TRAIN_DATA"
# ===== END training =====

# ===== BEGIN export (dino_export) =====
echo "== export: ViT-S/8 TensorRT engines (fp16, fp32) and ORT CUDA/TensorRT EP sessions, verified and timed"
"$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" \
    || echo "export: TensorRT is not installed here (pip install 'dino-edge[trt]'); engines will be reported as not built"
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
"$PY" benchmarks/bench_export_gpu.py "$OUT/export" | tee "$OUT/export_summary.txt"
echo "== export: the CLI path, dino-export --trt fp16 on a ViT-S/8 checkpoint"
"$PY" - "$OUT/export/vits8_ckpt.pth" <<'PYEOF'
import sys, torch
from dino_train.models import vit_small
torch.manual_seed(0)
torch.save(vit_small(patch_size=8).state_dict(), sys.argv[1])
PYEOF
"$PY" -m dino_export.cli "$OUT/export/vits8_ckpt.pth" -o "$OUT/export/cli_vits8.onnx" \
    --dynamic-batch 1 8 16 --trt fp16 | tee -a "$OUT/export_summary.txt"
# ===== END export =====

# ===== BEGIN runtime (dino_runtime) =====
# ViT-S/8 (random weights) at 480x640, batch 1/8/32: ORT CUDA EP, ORT TensorRT EP and a
# TensorRT engine when TensorRT is installed; every GPU output checked against the CPU EP.
echo "== runtime: ViT-S/8 480x640 on CUDA, batch 1/8/32, checked against CPU"
RT="$OUT/runtime"
mkdir -p "$RT"
"$PY" - "$RT" <<'PYEOF'
import sys, torch
from dino_train.models import vit_small
torch.manual_seed(0)
torch.save(vit_small(patch_size=8).state_dict(), f"{sys.argv[1]}/vits8.pth")
PYEOF
"$PY" -m dino_export.cli "$RT/vits8.pth" -o "$RT/vits8_480.onnx" --img-size 480 640 \
    --dynamic-batch 1 8 32 --outputs cls,attn --no-verify
if "$PY" -c "import tensorrt" 2>/dev/null; then
    "$PY" -m dino_export.cli "$RT/vits8.pth" -o "$RT/vits8_480.onnx" --img-size 480 640 \
        --dynamic-batch 1 8 32 --outputs cls,attn --no-verify --trt fp32 \
        || echo "runtime: TensorRT engine build failed (above); the engine check will say so"
else
    echo "runtime: tensorrt not installed; TensorRT engine check skipped (pip install -e '.[trt]')"
fi
"$PY" - "$RT" <<'PYEOF' | tee "$OUT/runtime_summary.txt"
import sys, time
from pathlib import Path
import numpy as np
from dino_runtime import Runtime
from dino_runtime.backends.cuda import tensorrt_libraries_present

rt_dir = Path(sys.argv[1])
onnx = rt_dir / "vits8_480.onnx"
frames = np.random.default_rng(0).integers(0, 256, (32, 480, 640, 3), dtype=np.uint8)
ref = Runtime(onnx, device="cpu", batch_size=2, threshold=None)(frames[:2])  # the reference

def check(name, rt):
    out = rt(frames[:2])
    cos = (out.cls * ref.cls).sum(1) / np.linalg.norm(out.cls, axis=1) / np.linalg.norm(ref.cls, axis=1)
    d_cls, d_attn = np.abs(out.cls - ref.cls).max(), np.abs(out.attn - ref.attn).max()
    # TF32 matmuls (the CUDA default on Ampere and later) keep ~1e-3 relative accuracy
    ok = cos.min() > 0.999 and d_attn < 5e-3
    print(f"{name}: vs CPU max|d cls| {d_cls:.2e}, min cos {cos.min():.6f}, max|d attn| {d_attn:.2e} "
          f"-> {'OK' if ok else 'FAIL'}")
    return ok

def throughput(name, rt):
    for batch in (1, 8, 32):
        x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
        for _ in range(3):
            rt.backend.run(x)
        n, start = 0, time.perf_counter()
        while n < 5 or time.perf_counter() - start < 3:
            rt.backend.run(x)
            n += 1
        print(f"{name}: batch {batch:2d}: {n * batch / (time.perf_counter() - start):8.1f} frames/s")

failed = False
configs = [("ORT CUDA EP", dict(providers=["CUDAExecutionProvider"]), "CUDAExecutionProvider")]
if tensorrt_libraries_present():
    configs.append(("ORT TensorRT EP", dict(providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"]),
                    "TensorrtExecutionProvider"))
else:
    print("ORT TensorRT EP: libnvinfer not found, skipped")
engine = rt_dir / "vits8_480.fp32.engine"
if engine.exists():
    configs.append(("TensorRT engine", dict(backend="tensorrt", device="cuda"), "TensorRT"))
for name, kwargs, expect in configs:
    try:
        rt = Runtime(engine if "backend" in kwargs else onnx, batch_size=32, threshold=None, **kwargs)
    except Exception as e:
        print(f"{name}: could not load: {e}")
        failed = True
        continue
    if not rt.device.startswith(expect):  # a silent fallback to the CPU would be a false pass
        print(f"{name}: runs on {rt.device}, not {expect} -> FAIL")
        failed = True
        continue
    failed |= not check(name, rt)
    throughput(name, rt)
sys.exit(1 if failed else 0)
PYEOF
VIDEO=../shared/data/videos/01_dog.mp4
if [ -f "$VIDEO" ]; then
    echo "== runtime: dino-run end to end on CUDA ($VIDEO, attention overlay to mp4, batch 8)"
    "$PY" -m dino_runtime.cli --model "$RT/vits8_480.onnx" --device cuda --source "$VIDEO" \
        --show-attention --mask --save "$RT/dog_attention.mp4" --embeddings "$RT/dog.npy" \
        --batch 8 --no-display | tee -a "$OUT/runtime_summary.txt"
fi
# ===== END runtime =====
