"""One precision vocabulary and one resolver, for training and for every runtime backend.

``auto`` means: on a GPU, the device default the caller names (fp16 for training, as the
official ``--use_fp16 true``; bf16 for inference); on a CPU, bf16 where the CPU multiplies bf16
natively (AVX512-BF16 or AMX: about twice fp32's matrix throughput), else fp32. A precision the
caller cannot honour is an error that names what it can do, never a silent substitute.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

from .errors import BackendUnavailable, OptionError

PRECISIONS = ("fp32", "bf16", "fp16", "int8")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# x86 instructions that sum u8 x s8 products into int32 (AVX512-VNNI, AVX-VNNI, AMX-INT8)
INT32_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``/proc/cpuinfo``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when this CPU has bf16 dot-product instructions (AVX512-BF16) or AMX tiles."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


def int8_products_saturate() -> bool:
    """True on an x86 CPU without VNNI or AMX-INT8: its int8 kernels multiply u8 x s8 with
    ``(v)pmaddubsw``, which adds each pair of products into an int16 with saturation, so that
    8-bit weights can overflow it (7-bit ones cannot: see dino_export.quantize). False on other
    CPUs, and where the flags cannot be read."""
    flags = cpu_flags()
    return "ssse3" in flags and not any(flag in flags for flag in INT32_DOT_FLAGS)


def resolve_precision(requested: str, device: str, choices: Sequence[str], *,
                      gpu_auto: str = "bf16", gpu_bf16: bool = True,
                      what: str = "this backend") -> str:
    """``requested`` (``auto`` or one of ``choices``) on ``device`` (``cpu``/``cuda``/other
    accelerator) -> the precision to run in.

    :class:`OptionError` for a precision ``what`` does not take; :class:`BackendUnavailable`
    for bf16 on a CPU without native bf16 or a GPU without bf16 (``gpu_bf16`` False).
    """
    if requested != "auto" and requested not in choices:
        takes = ", ".join(("auto",) + tuple(choices)) if choices else "only auto"
        raise OptionError(f"--precision {requested}: {what} takes {takes}")
    on_cpu = device == "cpu"
    if requested == "auto":
        if not on_cpu:
            return gpu_auto if gpu_auto in choices else "fp32"
        return "bf16" if "bf16" in choices and cpu_has_native_bf16() else "fp32"
    if requested == "bf16" and on_cpu and not cpu_has_native_bf16():
        raise BackendUnavailable("--precision bf16: this CPU has no native bf16 (AVX512-BF16 "
                                 "or AMX), where it is slower than fp32; use --precision fp32")
    if requested == "bf16" and not on_cpu and not gpu_bf16:
        raise BackendUnavailable("--precision bf16: this GPU has no bf16 support; use fp16 or "
                                 "fp32")
    return requested
