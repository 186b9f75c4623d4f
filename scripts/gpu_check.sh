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
# A failed check is remembered and the checks after it still run. A missing TensorRT is a
# failed check, never a pass: building and checking engines is what this section is for.
FAIL=0
EX="$OUT/export"
mkdir -p "$EX"
echo "== export: TensorRT and ONNX Runtime on this machine"
"$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" || {
    echo "export: FAIL: TensorRT is not installed here (pip install 'dino-edge[trt]'; on Jetson, JetPack's tensorrt module): no engine can be built or checked"
    FAIL=1
}
"$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
echo "== export: ViT-S/8 engines (fp32, fp16, int8) and ORT CUDA/TensorRT EP sessions, verified against PyTorch and timed"
"$PY" benchmarks/bench_export_gpu.py "$EX/bench" | tee "$OUT/export_summary.txt" || FAIL=1
echo "== export: dino-export --trt fp32|fp16|int8 on a ViT-S/8 checkpoint, then dino-run on each engine against CPU ONNX Runtime"
"$PY" - "$EX" <<'PYEOF'
import sys, cv2, torch
from pathlib import Path
from dino_export.images import synthetic_images
from dino_models import vit_small
out = Path(sys.argv[1])
torch.manual_seed(0)
torch.save(vit_small(patch_size=8).state_dict(), out / "vits8.pth")
for name, seed in (("frames", 11), ("calib", 5)):  # frames to compare on, images to calibrate on
    (out / name).mkdir(exist_ok=True)
    for i, img in enumerate(synthetic_images(16, (480, 640), seed=seed)):
        cv2.imwrite(str(out / name / f"{i:02d}.png"), img)
PYEOF
"$PY" scripts/gpu_engine_check.py "$EX/vits8.pth" "$EX/frames" "$EX/calib" "$EX/cli" \
    | tee -a "$OUT/export_summary.txt" || FAIL=1
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
from dino_models import vit_small
torch.manual_seed(0)
torch.save(vit_small(patch_size=8).state_dict(), f"{sys.argv[1]}/vits8.pth")
PYEOF
FAIL=0  # a failed check is remembered, and the checks after it still run
"$PY" -m dino_export.cli "$RT/vits8.pth" -o "$RT/vits8_480.onnx" --img-size 480 640 \
    --dynamic-batch 1 8 32 --outputs cls,attn --no-verify
if "$PY" -c "import tensorrt" 2>/dev/null; then
    # the fp16 engine, built (strongly typed) from the fp16 graph dino-export writes beside
    "$PY" -m dino_export.cli "$RT/vits8.pth" -o "$RT/vits8_480.onnx" --img-size 480 640 \
        --dynamic-batch 1 8 32 --outputs cls,attn --no-verify --trt fp16 \
        || { echo "runtime: FAIL: the TensorRT engine build failed (above)"; FAIL=1; }
else
    echo "runtime: FAIL: TensorRT is not installed here (pip install -e '.[trt]'); the TensorRT engine was not checked"
    FAIL=1
fi
"$PY" - "$RT" <<'PYEOF' | tee "$OUT/runtime_summary.txt" || FAIL=1
import importlib.util, sys, time
from pathlib import Path
import numpy as np
from dino_runtime import Runtime
from dino_runtime.backends.cuda import tensorrt_libraries_present

rt_dir = Path(sys.argv[1])
onnx = rt_dir / "vits8_480.onnx"
frames = np.random.default_rng(0).integers(0, 256, (32, 480, 640, 3), dtype=np.uint8)
ref = Runtime(onnx, backend="onnxruntime", device="cpu", batch_size=2,  # the fp32 reference
              threshold=None)(frames[:2])

# (min cls cosine, max abs attn difference) against the CPU: TF32 matmuls (the CUDA default on
# Ampere and later) keep ~1e-3 relative accuracy; bf16 the tolerance tests/runtime/test_backends.py
# gives the CPU bf16 path; fp16 the cosine dino-export verifies fp16 files with
BOUNDS = {"fp32": (0.999, 5e-3), "fp16": (0.999, 2e-2), "bf16": (0.99, 2e-2)}

def check(name, rt, precision="fp32"):
    out = rt(frames[:2])
    cos = (out.cls * ref.cls).sum(1) / np.linalg.norm(out.cls, axis=1) / np.linalg.norm(ref.cls, axis=1)
    d_cls, d_attn = np.abs(out.cls - ref.cls).max(), np.abs(out.attn - ref.attn).max()
    min_cos, max_attn = BOUNDS[precision]
    ok = cos.min() >= min_cos and d_attn <= max_attn
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
if tensorrt_libraries_present():  # dino-run's own choice on a GPU: the TensorRT EP first
    configs.append(("ORT TensorRT EP", onnx, dict(device="cuda"), "TensorrtExecutionProvider"))
else:
    print("ORT TensorRT EP: FAIL: the libnvinfer its provider links is not found; not checked")
    failed = True
engine = rt_dir / "vits8_480.fp16.engine"
if engine.exists():
    configs.append(("TensorRT engine fp16", engine, dict(backend="tensorrt", device="cuda"), "TensorRT"))
elif importlib.util.find_spec("tensorrt"):
    print(f"TensorRT engine fp16: FAIL: {engine.name} was not built")
    failed = True
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
    failed |= not check(name, rt, name.split()[-1] if name.endswith(("bf16", "fp16")) else "fp32")
    throughput(name, rt)
sys.exit(1 if failed else 0)
PYEOF
VIDEO=${DINO_VIDEO:-../shared/data/videos/01_dog.mp4}
if [ -f "$VIDEO" ]; then
    echo "== runtime: dino-run end to end on CUDA ($VIDEO, attention overlay to mp4, batch 8)"
    "$PY" -m dino_runtime.cli --model "$RT/vits8.pth" --device cuda --source "$VIDEO" \
        --show-attention --mask --save "$RT/dog_attention_torch.mp4" --embeddings "$RT/dog_torch.npy" \
        --batch 8 --overwrite --no-display | tee -a "$OUT/runtime_summary.txt" || FAIL=1
    "$PY" -m dino_runtime.cli --model "$RT/vits8_480.onnx" --device cuda --source "$VIDEO" \
        --show-attention --mask --save "$RT/dog_attention.mp4" --embeddings "$RT/dog.npy" \
        --batch 8 --overwrite --no-display | tee -a "$OUT/runtime_summary.txt" || FAIL=1
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
import sys, time
from pathlib import Path
import numpy as np
from dino_runtime import Runtime
d = Path(sys.argv[1])
frames = np.random.default_rng(0).integers(0, 256, (8, 448, 798, 3), dtype=np.uint8)
ref = Runtime(d / "v2_448.onnx", backend="onnxruntime", device="cpu", batch_size=2,
              threshold=None)(frames[:2])

def frames_per_second(rt, batch, seconds=3.0):
    x = np.stack([rt.preprocessor(f) for f in frames[:batch]])
    rt.backend.run(x)  # the first call plans and allocates
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        rt.backend.run(x)
        n += 1
    return n * batch / (time.perf_counter() - start)

for name, model, kwargs in (
        ("ORT CUDA EP", d / "v2_448.onnx", {"backend": "onnxruntime",
                                            "providers": ["CUDAExecutionProvider"]}),
        ("TensorRT fp16 engine", d / "v2_448.fp16.engine", {"backend": "tensorrt", "device": "cuda"})):
    out = Runtime(model, threshold=None, **kwargs)(frames[:2])
    cos = (out.cls * ref.cls).sum(1) / np.linalg.norm(out.cls, axis=1) / np.linalg.norm(ref.cls, axis=1)
    speeds = [frames_per_second(Runtime(model, threshold=None, batch_size=b, **kwargs), b) for b in (1, 8)]
    print(f"{name}: min cos vs CPU {cos.min():.5f}, max|d attn_registers| "
          f"{np.abs(out.attn_registers - ref.attn_registers).max():.2e}; frames/s at batch 1 "
          f"{speeds[0]:.1f}, batch 8 {speeds[1]:.1f}")
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
