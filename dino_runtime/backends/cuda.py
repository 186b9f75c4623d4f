"""Is there a usable NVIDIA GPU? Asked of the driver directly, so that no CUDA-enabled library
prints warnings on machines without one (onnxruntime-gpu lists its CUDA providers everywhere)."""
from __future__ import annotations

import ctypes
import importlib.util
import re
from functools import lru_cache
from pathlib import Path


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
    """True when the TensorRT runtime library that onnxruntime's TensorRT EP links against can
    be loaded (the EP of onnxruntime-gpu 1.31 from PyPI links ``libnvinfer.so.10``: a TensorRT 11
    install alone does not serve it)."""
    names = nvinfer_sonames(_ort_tensorrt_provider())
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    # the pip wheels keep the libraries inside the tensorrt_libs package
    spec = importlib.util.find_spec("tensorrt_libs")
    folders = (spec.submodule_search_locations or []) if spec else []
    return any((Path(folder) / name).is_file() for folder in folders for name in names)


def nvinfer_sonames(provider: Path | None) -> list[str]:
    """The ``libnvinfer.so.N`` names the TensorRT provider library ``provider`` links against
    (read from its dynamic string table); both majors when it cannot be read."""
    if provider is not None and provider.is_file():
        found = sorted({m.decode() for m in re.findall(rb"libnvinfer\.so\.\d+",
                                                       provider.read_bytes())})
        if found:
            return found
    return ["libnvinfer.so.10", "libnvinfer.so.11"]


def _ort_tensorrt_provider() -> Path | None:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "capi" / "libonnxruntime_providers_tensorrt.so"


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
