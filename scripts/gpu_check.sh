#!/usr/bin/env bash
# One command for the checks that need a CUDA GPU:  bash scripts/gpu_check.sh [SECTION...]
# Each area has its own section below, between its BEGIN/END markers (training, export, runtime;
# name some to run only those). Every section runs, also after an earlier one failed; the
# script ends with one line per section and exits 1 if any failed. Output files:
# $GPU_CHECK_OUT (default gpu_check_out). Python: $PY (default the project's .venv, else
# python3). The official repository for the training baseline:
# $OFFICIAL_REPO (optional; without it an in-repo stand-in written the official way is timed).
# The video for the end-to-end runtime check: $DINO_VIDEO (default ../shared/data's dog video).
set -uo pipefail
cd "$(dirname "$0")/.."
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(training export runtime dinov2)
for SECTION in "${SECTIONS[@]}"; do
    case "$SECTION" in
        training|export|runtime|dinov2) ;;
        *) echo "gpu_check: no section '$SECTION' (training, export, runtime, dinov2)" >&2; exit 2 ;;
    esac
done
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2
    exit 1
fi
"$PY" -c "import torch; print('gpu:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"

# ===== BEGIN training (dino_train) =====
section_training() {
echo "== training: GPU tests (fp16/bf16/fp32 steps finite, fp16 scaler in checkpoints)"
"$PY" -m pytest -q -m gpu tests/train -rs -p no:cacheprovider
echo "== training: fp32 / bf16 / fp16 throughput, ViT-S/16, 2x224 + 8x96 crops, batch 64"
TRAIN_DATA=$(mktemp -d)
"$PY" - "$TRAIN_DATA" <<'PYEOF'
import sys, numpy as np
from PIL import Image
rs = np.random.RandomState(0)
for i in range(2048):  # 32 steps per epoch: the 30 timed ones see no epoch restart
    Image.fromarray(rs.randint(0, 256, (256, 320, 3), dtype=np.uint8)).save(f"{sys.argv[1]}/{i}.jpg")
PYEOF
# PIL views made by 8 workers (the default), then bf16 with the views made on the GPU
for RUNSPEC in fp32:pil bf16:pil fp16:pil bf16:batched; do
    PREC=${RUNSPEC%%:*} AUG=${RUNSPEC##*:}
    RUN="$OUT/train_${PREC}_$AUG"
    rm -rf "$RUN"
    "$PY" -m dino_train.cli --arch vit_s16 --data-path "$TRAIN_DATA" --output-dir "$RUN" \
        --device cuda --precision "$PREC" --augmentation "$AUG" --batch-size-per-gpu 64 \
        --num-workers 8 --max-steps 30 --log-every 10 --no-progress
    "$PY" -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; \
print(f'{sys.argv[2]}: {r[\"images_per_s\"]:.1f} images/s (steps 21-30), loss {r[\"loss\"]:.4f}, data share {100*r[\"data_share\"]:.1f}%')" \
        "$RUN/log.jsonl" "$PREC, --augmentation $AUG" | tee -a "$OUT/train_summary.txt"
    rm -f "$RUN"/checkpoint*.pth
done
echo "== training: making the views, PIL per image (1 worker thread) vs batched on the GPU"
"$PY" benchmarks/bench_augment.py --data "$TRAIN_DATA" --device cuda --batches 10 \
    | tee -a "$OUT/train_summary.txt"
rm -rf "$TRAIN_DATA"
echo "== training: the official step (fp32 eager) against ours, same batches, ViT-Tiny/16, batch 64"
OFFICIAL=()
[ -n "${OFFICIAL_REPO:-}" ] && OFFICIAL=(--official-repo "$OFFICIAL_REPO")
for EXTRA in "" "--compile" "--augmentation batched"; do
    "$PY" benchmarks/bench_train.py --device cuda --precision bf16 --batch 64 --steps 10 \
        --warmup 3 --num-workers 8 "${OFFICIAL[@]}" $EXTRA | tee -a "$OUT/train_summary.txt"
done
}
# ===== END training =====

# ===== BEGIN export (dino_export) =====
section_export() {
echo "== export: ViT-S/8 TensorRT engines (fp16, fp32) and ORT CUDA/TensorRT EP sessions, verified and timed"
"$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" \
    || echo "export: TensorRT is not installed here (pip install 'dino-edge[trt]'); engines will be reported as not built"
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
# a failed check is remembered, and the checks after it still run
FAIL=0
"$PY" benchmarks/bench_export_gpu.py "$OUT/export" | tee "$OUT/export_summary.txt" || FAIL=1
echo "== export: the CLI path, dino-export --trt fp16 on a ViT-S/8 checkpoint"
"$PY" - "$OUT/export/vits8_ckpt.pth" <<'PYEOF'
import sys, torch
from dino_train.models import vit_small
torch.manual_seed(0)
torch.save(vit_small(patch_size=8).state_dict(), sys.argv[1])
PYEOF
"$PY" -m dino_export.cli "$OUT/export/vits8_ckpt.pth" -o "$OUT/export/cli_vits8.onnx" \
    --dynamic-batch 1 8 16 --trt fp16 | tee -a "$OUT/export_summary.txt" || FAIL=1
return $FAIL
}
# ===== END export =====

# ===== BEGIN runtime (dino_runtime) =====
section_runtime() {
# ViT-S/8 (random weights) at 480x640, batch 1/8/32: ORT CUDA EP, ORT TensorRT EP and a
# TensorRT engine when TensorRT is installed, and the PyTorch backend (.pth) on CUDA; every GPU
# output checked against the CPU EP.
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
FAIL=0  # a failed check is remembered, and the checks after it still run
"$PY" - "$RT" <<'PYEOF' | tee "$OUT/runtime_summary.txt" || FAIL=1
import sys, time
from pathlib import Path
import numpy as np
from dino_runtime import Runtime
from dino_runtime.backends.cuda import tensorrt_libraries_present

rt_dir = Path(sys.argv[1])
onnx = rt_dir / "vits8_480.onnx"
frames = np.random.default_rng(0).integers(0, 256, (32, 480, 640, 3), dtype=np.uint8)
ref = Runtime(onnx, device="cpu", batch_size=2, threshold=None)(frames[:2])  # the reference

def check(name, rt, bf16=False):
    out = rt(frames[:2])
    cos = (out.cls * ref.cls).sum(1) / np.linalg.norm(out.cls, axis=1) / np.linalg.norm(ref.cls, axis=1)
    d_cls, d_attn = np.abs(out.cls - ref.cls).max(), np.abs(out.attn - ref.attn).max()
    # TF32 matmuls (the CUDA default on Ampere and later) keep ~1e-3 relative accuracy
    # bf16: the tolerance tests/runtime/test_backends.py gives the CPU bf16 path
    ok = cos.min() > 0.99 and d_attn < 2e-2 if bf16 else cos.min() > 0.999 and d_attn < 5e-3
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
pth = rt_dir / "vits8.pth"
torch_kw = dict(backend="torch", device="cuda", input_size=(480, 640))
configs = [("ORT CUDA EP", onnx, dict(providers=["CUDAExecutionProvider"]), "CUDAExecutionProvider"),
           ("PyTorch backend fp32", pth, dict(torch_kw, precision="fp32"), "torch cuda"),
           ("PyTorch backend bf16", pth, dict(torch_kw, precision="bf16"), "torch cuda")]
if tensorrt_libraries_present():
    configs.append(("ORT TensorRT EP", onnx,
                    dict(providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"]),
                    "TensorrtExecutionProvider"))
else:
    print("ORT TensorRT EP: libnvinfer not found, skipped")
engine = rt_dir / "vits8_480.fp32.engine"
if engine.exists():
    configs.append(("TensorRT engine", engine, dict(backend="tensorrt", device="cuda"), "TensorRT"))
for name, model, kwargs, expect in configs:
    try:
        rt = Runtime(model, batch_size=32, threshold=None, **kwargs)
    except Exception as e:
        print(f"{name}: could not load: {e}")
        failed = True
        continue
    if not rt.device.startswith(expect):  # a silent fallback to the CPU would be a false pass
        print(f"{name}: runs on {rt.device}, not {expect} -> FAIL")
        failed = True
        continue
    failed |= not check(name, rt, bf16=name.endswith("bf16"))
    throughput(name, rt)
sys.exit(1 if failed else 0)
PYEOF
VIDEO=${DINO_VIDEO:-../shared/data/videos/01_dog.mp4}
if [ -f "$VIDEO" ]; then
    echo "== runtime: dino-run end to end on CUDA ($VIDEO, attention overlay to mp4, batch 8)"
    "$PY" -m dino_runtime.cli --model "$RT/vits8.pth" --device cuda --source "$VIDEO" \
        --show-attention --mask --save "$RT/dog_attention_torch.mp4" --embeddings "$RT/dog_torch.npy" \
        --batch 8 --no-display | tee -a "$OUT/runtime_summary.txt" || FAIL=1
    "$PY" -m dino_runtime.cli --model "$RT/vits8_480.onnx" --device cuda --source "$VIDEO" \
        --show-attention --mask --save "$RT/dog_attention.mp4" --embeddings "$RT/dog.npy" \
        --batch 8 --no-display | tee -a "$OUT/runtime_summary.txt" || FAIL=1
else
    echo "runtime: no video at $VIDEO (set DINO_VIDEO); dino-run end-to-end check not run"
    FAIL=1
fi
return $FAIL
}
# ===== END runtime =====

# ===== BEGIN dinov2 (DINOv2 export, TensorRT attention fusion, runtime) =====
section_dinov2() {
# ViT-S/14 with 4 registers (random weights) at 448x798: dino-export --trt fp16 (verified
# against PyTorch through the runtime), the engine's layers listed to see whether TensorRT fused
# each block's attention, ORT CUDA EP vs the engine at batch 1/8, then dino-run with --pca.
V2="$OUT/dinov2"
mkdir -p "$V2"
FAIL=0
"$PY" - "$V2/dinov2_vits14_reg4_pretrain.pth" <<'PYEOF'
import sys, torch
from dino_models.archs import resolve_arch
torch.manual_seed(0)
torch.save(resolve_arch("dinov2_s14_reg").build().state_dict(), sys.argv[1])
PYEOF
"$PY" -m dino_export.cli "$V2/dinov2_vits14_reg4_pretrain.pth" -o "$V2/v2_448.onnx" \
    --img-size 448 798 --dynamic-batch 1 8 8 --outputs cls,attn,patch,attn_registers \
    --trt fp16 | tee "$OUT/dinov2_summary.txt" || FAIL=1
ENGINE="$V2/v2_448.fp16.engine"
if [ -f "$ENGINE" ]; then
    echo "== dinov2: engine layers (attention fusion: one MHA/Myelin region per block expected)"
    "$PY" - "$ENGINE" <<'PYEOF' | tee -a "$OUT/dinov2_summary.txt" || FAIL=1
import json, re, sys
import tensorrt as trt
engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(open(sys.argv[1], "rb").read())
info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
names = [l if isinstance(l, str) else l.get("Name", "") for l in info["Layers"]]
mha = [n for n in names if re.search(r"mha|attention|fmha", n, re.I)]
softmax = [n for n in names if re.search(r"softmax", n, re.I)]
print(f"{len(names)} layers; {len(mha)} named like fused attention; {len(softmax)} with a separate softmax")
for n in names:
    print("   ", n[:160])
PYEOF
    "$PY" - "$V2" <<'PYEOF' | tee -a "$OUT/dinov2_summary.txt" || FAIL=1
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "benchmarks")
from bench_runtime import Candidate, model_only
from dino_runtime import Runtime
d = Path(sys.argv[1])
frames = np.random.default_rng(0).integers(0, 256, (8, 448, 798, 3), dtype=np.uint8)
ref = Runtime(d / "v2_448.onnx", device="cpu", batch_size=2, threshold=None)(frames[:2])
for c in (Candidate("ORT CUDA EP", d / "v2_448.onnx", (), {"providers": ["CUDAExecutionProvider"]}),
          Candidate("TensorRT fp16 engine", d / "v2_448.fp16.engine", (),
                    {"backend": "tensorrt", "device": "cuda"})):
    out = Runtime(c.model, threshold=None, **c.runtime_kwargs)(frames[:2])
    cos = (out.cls * ref.cls).sum(1) / np.linalg.norm(out.cls, axis=1) / np.linalg.norm(ref.cls, axis=1)
    print(f"{c.name}: min cos vs CPU {cos.min():.5f}, max|d attn_registers| "
          f"{np.abs(out.attn_registers - ref.attn_registers).max():.2e}; frames/s at batch 1 "
          f"{model_only(c, frames, 1, 3):.1f}, batch 8 {model_only(c, frames, 8, 3):.1f}")
PYEOF
else
    echo "dinov2: no engine was built (TensorRT missing or the build failed, above)"
    FAIL=1
fi
VIDEO=${DINO_VIDEO:-../shared/data/videos/01_dog.mp4}
if [ -f "$VIDEO" ]; then
    "$PY" -m dino_runtime.cli --model "$V2/v2_448.onnx" --device cuda --source "$VIDEO" \
        --show-attention --pca --pca-foreground --save "$V2/dog_dinov2.mp4" --batch 8 \
        --no-display | tee -a "$OUT/dinov2_summary.txt" || FAIL=1
fi
return $FAIL
}
# ===== END dinov2 =====

FAILED=()
: > "$OUT/sections.txt"
for SECTION in "${SECTIONS[@]}"; do
    ( set -e; "section_$SECTION" )
    RC=$?
    echo "gpu_check: section $SECTION: $([ $RC = 0 ] && echo passed || echo "FAILED (exit $RC)")" \
        | tee -a "$OUT/sections.txt"
    [ $RC = 0 ] || FAILED+=("$SECTION")
done
[ ${#FAILED[@]} = 0 ] || { echo "gpu_check: failed: ${FAILED[*]}"; exit 1; }
echo "gpu_check: all sections passed"
