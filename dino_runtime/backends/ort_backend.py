"""ONNX Runtime backend: TensorRT EP, then CUDA EP, then CPU EP, chosen by what is available."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dino_core.constants import OUTPUT_NAMES
from dino_core.errors import ModelError
from dino_core.metadata import ModelMetadata

from .base import (
    BackendOptions,
    ModelOutputs,
    check_outputs,
    check_tensor,
    cpu_threads,
    expected_tensors,
)
from . import cuda  # by module: cuda.cuda_device_count() etc. see a test's or a caller's patch

# ONNX Runtime's names for the tensor types a dino-export graph uses (fp16 and int8 graphs keep
# float32 inputs and outputs).
ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
             "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
             "tensor(int8)": "int8", "tensor(bool)": "bool"}
CPU_EP = "CPUExecutionProvider"
DISABLE_QDQ_FUSION = "session.disable_quant_qdq"  # ONNX Runtime's session config key
CUDA_EP = "CUDAExecutionProvider"
TENSORRT_EP = "TensorrtExecutionProvider"


def choose_providers(device: str, model_path: Path) -> list:
    """Execution providers in order of preference for ``device`` on this machine."""
    kind, index = cuda.parse_device(device)
    if kind == "cpu" or (kind == "auto" and cuda.cuda_device_count() == 0):
        return [CPU_EP]  # never offer CUDA EPs without a GPU: they would log errors on load
    cuda.require_cuda(index)
    available = ort.get_available_providers()
    chain: list = []
    if TENSORRT_EP in available and cuda.tensorrt_libraries_present():
        chain.append((TENSORRT_EP, tensorrt_ep_options(index, model_path)))
    if CUDA_EP in available:
        chain.append((CUDA_EP, {"device_id": index}))
    return chain + [CPU_EP]


def tensorrt_ep_options(index: int, model_path: Path) -> dict:
    """TensorRT EP options (names as in onnxruntime-gpu 1.31's provider): strongly typed.

    With its precision switches off, the EP creates a strongly typed TensorRT network (ONNX
    Runtime's TensorRT EP sets ``kSTRONGLY_TYPED`` when neither fp16 nor int8 is enabled; TensorRT
    11 is strongly typed always), so each node runs in the type the file gives it: an fp16 file
    in fp16 with its LayerNorm and Softmax in fp32, an fp32 file in fp32. They are set
    explicitly because provider options override ``ORT_TENSORRT_FP16_ENABLE`` and
    ``ORT_TENSORRT_INT8_ENABLE`` from the environment, which would make TensorRT pick precisions
    the file was not verified in (and that TensorRT 11 no longer has). Built engines are cached
    beside the model, so only the first session of a shape pays for the build.
    """
    return {"device_id": index, "trt_fp16_enable": False, "trt_int8_enable": False,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(model_path.parent / f".{model_path.stem}.trt-cache")}


def session_options(threads: int | None, qdq_fusion: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    # ENABLE_ALL fuses LayerNorm, GELU, MatMul+Add and attention into single kernels.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not qdq_fusion:
        # DequantizeLinear -> float MatMul -> QuantizeLinear, as the ONNX graph says, instead of
        # one int8 kernel: what an engine that sums int8 products in int32 (TensorRT) computes.
        # On x86 without VNNI the fused u8 x s8 kernel adds product pairs into int16 with
        # saturation, which 8-bit weights overflow (see dino_export.quantize).
        opts.add_session_config_entry(DISABLE_QDQ_FUSION, "1")
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
            self.session = ort.InferenceSession(
                str(path), session_options(options.threads, options.qdq_fusion),
                providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind types for every failure
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{path}: not a readable ONNX model ({first})") from None
        self.path = path
        self.qdq_fusion = options.qdq_fusion  # False: int8 files run as float ops (verification)
        self.metadata = read_metadata(self.session, str(path))
        self.precision = self.metadata.precision
        self.device = self.session.get_providers()[0]
        self.runs_on_host = self.device == CPU_EP
        names = [o.name for o in self.session.get_outputs()]
        self._outputs = [n for n in OUTPUT_NAMES if n in names]
        check_outputs(self._outputs, self.metadata, str(path))
        inputs = [i.name for i in self.session.get_inputs()]
        if self.metadata.input_name not in inputs:
            raise ModelError(f"{path}: metadata names input {self.metadata.input_name!r}, "
                             f"the graph has {inputs}")
        check_graph(self.session, self.metadata, str(path))

    def run(self, images: np.ndarray) -> ModelOutputs:
        """(B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs, see ModelOutputs."""
        try:
            values = self.session.run(self._outputs, {self.metadata.input_name: images})
        except Exception as e:  # onnxruntime's pybind error types: a graph that cannot run
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{self.path}: ONNX Runtime cannot run this model ({first})") from None
        named = dict(zip(self._outputs, values))
        return ModelOutputs(named["cls"], named.get("attn"), named.get("patch"),
                            named.get("attn_registers"))


def check_graph(session: ort.InferenceSession, meta: ModelMetadata, where: str) -> None:
    """:class:`ModelError` (one line) when the graph's input or outputs differ in type or shape
    from what the metadata says (see :func:`~.base.check_tensor`)."""
    tensors = {i.name: ("input", i) for i in session.get_inputs()}
    tensors.update({o.name: ("output", o) for o in session.get_outputs()})
    for name, (dtype, shape) in expected_tensors(meta).items():
        if name not in tensors:
            raise ModelError(f"{where}: the metadata lists output {name!r}, the graph has "
                             f"{[o.name for o in session.get_outputs()]}; re-export it")
        kind, arg = tensors[name]
        dims = [d if isinstance(d, int) else None for d in arg.shape]
        check_tensor(where, f"graph {kind} {name}", ORT_TYPES.get(arg.type, arg.type), dims,
                     dtype, shape, meta.batch)
