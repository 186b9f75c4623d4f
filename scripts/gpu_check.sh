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
