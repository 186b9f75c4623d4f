"""ONNX Runtime backend: TensorRT EP, then CUDA EP, then CPU EP, chosen by what is available."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dino_core.constants import OUTPUT_NAMES
from dino_core.errors import ModelError
from dino_core.metadata import ModelMetadata

from .base import BackendOptions, ModelOutputs
from .cuda import cuda_device_count, parse_device, require_cuda, tensorrt_libraries_present

CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def cpu_threads() -> int:
    """Cores this process may run on (cgroup/affinity aware, unlike os.cpu_count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def choose_providers(device: str, model_path: Path) -> list:
    """Execution providers in order of preference for ``device`` on this machine."""
    kind, index = parse_device(device)
    if kind == "cpu" or (kind == "auto" and cuda_device_count() == 0):
        return [CPU_EP]  # never offer CUDA EPs without a GPU: they would log errors on load
    require_cuda(index)
    available = ort.get_available_providers()
    chain: list = []
    if TENSORRT_EP in available and tensorrt_libraries_present():
        cache = model_path.parent / f".{model_path.stem}.trt-cache"
        chain.append((TENSORRT_EP, {"device_id": index, "trt_engine_cache_enable": True,
                                    "trt_engine_cache_path": str(cache)}))
    if CUDA_EP in available:
        chain.append((CUDA_EP, {"device_id": index}))
    return chain + [CPU_EP]


def session_options(threads: int | None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # ENABLE_ALL fuses LayerNorm, GELU, MatMul+Add and attention into single kernels.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A ViT is a chain of ops: all cores go to each op (intra-op), none to running branches
    # side by side (inter-op), which only adds idle threads.
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads or cpu_threads()
    opts.inter_op_num_threads = 1
    # Busy-waiting workers would take the cores that the decode and render threads need
    # between two inference calls; sleeping costs a few microseconds per op.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # errors only: no provider chatter on CPU-only machines
    return opts


def read_metadata(session: ort.InferenceSession, where: str) -> ModelMetadata:
    """The file's :class:`ModelMetadata`, validated (a bad value is a one-line ModelError)."""
    return ModelMetadata.from_props(session.get_modelmeta().custom_metadata_map, where)


class OrtBackend:
    """An exported ``.onnx`` file run by ONNX Runtime."""

    name = "onnxruntime"

    def __init__(self, model_path: str | os.PathLike, options: BackendOptions = BackendOptions()):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: no such model file")
        providers = list(options.providers) if options.providers else choose_providers(
            options.device, path)
        try:
            self.session = ort.InferenceSession(str(path), session_options(options.threads),
                                                providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind types for every failure
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: not a readable ONNX model ({first})") from None
        self.metadata = read_metadata(self.session, str(path))
        self.precision = self.metadata.precision
        self.device = self.session.get_providers()[0]
        names = [o.name for o in self.session.get_outputs()]
        self._outputs = [n for n in OUTPUT_NAMES if n in names]
        if self._outputs[:2] != ["cls", "attn"]:
            raise ModelError(f"{path}: outputs {names} lack cls and attn; re-export it")
        inputs = [i.name for i in self.session.get_inputs()]
        if self.metadata.input_name not in inputs:
            raise ModelError(f"{path}: metadata names input {self.metadata.input_name!r}, "
                             f"the graph has {inputs}")

    def run(self, images: np.ndarray) -> ModelOutputs:
        """(B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs, see ModelOutputs."""
        values = self.session.run(self._outputs, {self.metadata.input_name: images})
        named = dict(zip(self._outputs, values))
        return ModelOutputs(named["cls"], named["attn"], named.get("patch"),
                            named.get("attn_registers"))
