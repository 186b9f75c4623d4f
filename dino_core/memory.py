"""How much memory one inference batch needs, and whether this machine has it.

A model file is untrusted input: each metadata value can be in range while their product is
out of reach. 8192x8192 at patch 8 is 1,048,577 tokens, and one frame's last-block attention
scores, shape (1, heads, N, N) float32, would be 24 TiB at 6 heads. The runtime checks this
estimate before its warm-up allocates anything (:func:`check_inference_memory`). No torch.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ModelError
from .metadata import ModelMetadata

# Peak resident memory of one ONNX Runtime CPU call over the size of the attention scores
# (B, heads, N, N) float32, measured on ViT-Tiny depth 2 (N = 1025 and 3137, B = 1 and 4):
# 2.3 with opset 18 (scores and softmax are separate tensors), 1.5 with opset 23 (fused
# Attention). The token-sized tensors (qkv 3D, MLP 4D, residuals) add about 12 (B, N, D).
SCORES_FACTOR = 2.5
TOKENS_FACTOR = 12
# A backbone without attention (DINOv3's ConvNeXts, output stride 32, last width D): its
# largest activations are the first stage's, at stride 4 with D/8 channels and a 4x wider
# pointwise MLP: (H/4)(W/4) * D/2 floats = H * W * D / 32 per frame. Estimated from those layer
# shapes (3 such tensors live at once), not measured like the ViT factors above.
CONV_FACTOR = 3
FLOAT_BYTES = 4
GIB = 1 << 30


def inference_bytes(meta: ModelMetadata, batch: int) -> int:
    """Estimated peak activation memory of one call on ``batch`` frames, in bytes (float32)."""
    h, w = meta.img_size
    image = batch * 3 * h * w * FLOAT_BYTES
    if not meta.has_attention:
        return int(CONV_FACTOR * batch * h * w * meta.embed_dim / 32 * FLOAT_BYTES + 2 * image)
    n = meta.num_patches + 1 + meta.num_registers
    scores = batch * meta.num_heads * n * n * FLOAT_BYTES
    tokens = batch * n * meta.embed_dim * FLOAT_BYTES
    return int(SCORES_FACTOR * scores + TOKENS_FACTOR * tokens + 2 * image)


def available_bytes() -> int | None:
    """Memory this process can still get: ``MemAvailable``, capped by its cgroup's limit.
    None where neither can be read (not Linux)."""
    values = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    return min(values) if values else None


def largest_batch(meta: ModelMetadata, available: int | None = None) -> int | None:
    """The most frames one call may hold in the memory available (0: not even one); None
    where the available memory cannot be read."""
    available = available_bytes() if available is None else available
    return None if available is None else available // inference_bytes(meta, 1)


def check_inference_memory(meta: ModelMetadata, batch: int, where: str,
                           available: int | None = None,
                           smaller_size: str = "export it at a smaller --img-size") -> None:
    """:class:`ModelError` (one line) when one call on ``batch`` frames would not fit in the
    memory available (``available``, default :func:`available_bytes`); ``smaller_size`` is the
    advice when even one frame does not fit."""
    available = available_bytes() if available is None else available
    need = inference_bytes(meta, batch)
    if available is None or need <= available:
        return
    h, w = meta.img_size
    n = meta.num_patches + 1 + meta.num_registers
    fits = largest_batch(meta, available)
    if fits < 1:
        advice = smaller_size
    elif meta.batch.fixed is not None:
        advice = "export it with a smaller --batch or --img-size"
    else:
        advice = f"run with --batch {fits} or less"
    what = (f"attention scores ({batch}, {meta.num_heads}, {n}, {n}) float32"
            if meta.has_attention else "the first stage's activations")
    raise ModelError(f"{where}: one batch of {batch} frame{'s' if batch > 1 else ''} at "
                     f"{h}x{w} needs about {format_bytes(need)} ({what}), and this machine has "
                     f"{format_bytes(available)} available; {advice}")


def format_bytes(nbytes: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1024
    raise AssertionError("unreachable")


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """limit - usage of this process's memory cgroup (v2, then v1), or None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            cap = Path(limit).read_text().strip()
            if cap == "max" or int(cap) >= 1 << 60:  # v1 says "no limit" with a huge number
                return None
            return max(0, int(cap) - int(Path(usage).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None
