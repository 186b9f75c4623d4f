"""Is there a usable NVIDIA GPU? Asked of the driver directly, so that no CUDA-enabled library
prints warnings on machines without one (onnxruntime-gpu lists its CUDA providers everywhere)."""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 without a driver (Linux ``libcuda.so.1``)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


@lru_cache(maxsize=1)
def tensorrt_libraries_present() -> bool:
    """True when TensorRT's runtime library can be loaded (for onnxruntime's TensorRT EP)."""
    for name in ("libnvinfer.so.10", "libnvinfer.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    try:  # the pip wheel keeps its libraries inside the tensorrt_libs package
        import tensorrt_libs  # noqa: F401
        return True
    except ImportError:
        return ctypes.util.find_library("nvinfer") is not None


def parse_device(device: str) -> tuple[str, int]:
    """``auto``/``cpu``/``cuda``/``cuda:N`` -> (kind, index); ValueError for anything else."""
    if device in ("auto", "cpu"):
        return device, 0
    if device == "cuda":
        return "cuda", 0
    if device.startswith("cuda:") and device[5:].isdigit():
        return "cuda", int(device[5:])
    from dino_core.errors import OptionError
    raise OptionError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


def require_cuda(index: int) -> None:
    """Raise BackendUnavailable when GPU ``index`` does not exist."""
    from dino_core.errors import BackendUnavailable
    count = cuda_device_count()
    if index >= count:
        found = f"{count} CUDA device(s)" if count else "no CUDA driver or device"
        raise BackendUnavailable(f"--device cuda:{index} asked for, but this machine has "
                                 f"{found}; use --device cpu")
