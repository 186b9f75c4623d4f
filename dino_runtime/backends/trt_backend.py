"""TensorRT backend: a serialised engine plus its JSON metadata (``<engine>.json``).

The engine is deserialised with the installed TensorRT (10.x or 11.x), tensors are bound by name
(``images`` float32 or ``images_bgr`` uint8 in; ``cls``, ``attn``, ``patch`` out, in whatever
type the engine declares, returned as float32), and device buffers come from cuda-python,
allocated once for the largest batch. Fixed-batch engines take exactly their batch (the runtime
pads to it); dynamic ones any batch up to the profile's max, padded here up to its min. This is
also what ``dino-export`` verifies a new engine with. Engines are specific to a TensorRT version
and a GPU: a mismatch is an error that says to rebuild, never a crash.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dino_core.constants import OUTPUT_NAMES
from dino_core.errors import BackendUnavailable, ModelError
from dino_core.metadata import InputFormat, ModelMetadata

from .base import BackendOptions, ModelOutputs, check_tensor, expected_tensors
from .cuda import parse_device, require_cuda

REBUILD = "rebuild it on this machine with dino-export"


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailable("the tensorrt backend needs TensorRT and cuda-python: "
                                 "pip install 'dino-edge[trt]' on a machine with an NVIDIA GPU; "
                                 "or run the .onnx file with --backend onnxruntime") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BackendUnavailable("the tensorrt backend needs cuda-python for its GPU "
                                     "buffers: pip install cuda-python") from None
    return trt, cudart


def read_sidecar(engine_path: Path) -> ModelMetadata:
    """The engine's ``.engine.json`` metadata, validated (a bad file is one ModelError line)."""
    sidecar = engine_path.with_name(engine_path.name + ".json")
    if not sidecar.is_file():
        raise ModelError(f"{engine_path}: metadata {sidecar.name} not found beside the engine; "
                         f"{REBUILD}")
    return ModelMetadata.from_json_file(sidecar)


class _Cuda:
    """The few cuda-python runtime calls used here, with errors turned into exceptions."""

    def __init__(self, cudart) -> None:
        self.rt = cudart

    def check(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self.check(self.rt.cudaMalloc(nbytes)))

    def copy(self, dst: int, src: int, nbytes: int, kind: str, stream) -> None:
        direction = getattr(self.rt.cudaMemcpyKind, f"cudaMemcpy{kind}")
        self.check(self.rt.cudaMemcpyAsync(dst, src, nbytes, direction, stream))


class TensorRTBackend:
    """A serialised TensorRT engine (``.engine``/``.plan``) with its JSON sidecar."""

    name = "tensorrt"
    runs_on_host = False

    def __init__(self, model_path: str | os.PathLike, options: BackendOptions = BackendOptions()):
        path = Path(model_path)
        if not path.is_file():
            raise ModelError(f"{path}: no such engine file")
        kind, index = parse_device(options.device)
        if kind == "cpu":
            raise BackendUnavailable("TensorRT engines run on GPUs only; with --device cpu use "
                                     "the .onnx file and --backend onnxruntime")
        trt, cudart = _import_trt()
        require_cuda(index)
        self.metadata = read_sidecar(path)
        self.precision = self.metadata.precision
        built = self.metadata.tensorrt_version
        if built and built != trt.__version__:
            raise ModelError(f"{path}: built with TensorRT {built}, this machine has "
                             f"{trt.__version__}; {REBUILD}")
        self.cuda = _Cuda(cudart)
        self.cuda.check(cudart.cudaSetDevice(index))
        self.engine = self._deserialize(trt, path)
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.check(cudart.cudaStreamCreate())
        self.trt = trt
        self.device = f"TensorRT {trt.__version__} cuda:{index}"
        self._bind_all()
        self._check_shapes()

    def _deserialize(self, trt, path: Path):
        self.logger = trt.Logger(trt.Logger.ERROR)
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:  # TensorRT logs why; the usual cause is a version or GPU mismatch
            raise ModelError(f"{path}: TensorRT {trt.__version__} cannot load this engine "
                             f"(built by another TensorRT version or for another GPU); {REBUILD}")
        return engine

    def _bind_all(self) -> None:
        """One device buffer per I/O tensor, sized for the largest batch."""
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = self.metadata.input_name
        if self.input_name not in names:
            raise ModelError(f"engine has no input {self.input_name!r} (tensors: {names}); {REBUILD}")
        shape = tuple(engine.get_tensor_shape(self.input_name))
        self.min_batch = self.max_batch = self.metadata.batch.max
        if shape[0] < 0:  # dynamic batch: the optimisation profile bounds it
            lo, _, hi = engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(lo[0]), min(int(hi[0]), self.metadata.batch.max)
        self.outputs = [n for n in OUTPUT_NAMES if n in names]
        self._check_input_type(np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name))))
        self.buffers: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        self._set_batch(self.max_batch, shape[1:])
        for name in [self.input_name] + self.outputs:
            dims = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            ptr = self.cuda.malloc(int(np.prod(dims)) * dtype.itemsize)
            self.context.set_tensor_address(name, ptr)
            self.buffers[name] = (ptr, dtype, dims[1:])

    def _check_input_type(self, dtype: np.dtype) -> None:
        expected = np.dtype(np.uint8 if self.metadata.input_format is InputFormat.UINT8_NHWC
                            else np.float32)
        if dtype != expected:
            raise ModelError(f"engine input {self.input_name!r} is {dtype}, its metadata says "
                             f"{self.metadata.input_format.value}; {REBUILD}")

    def _set_batch(self, batch: int, tail: tuple[int, ...]) -> None:
        if not self.context.set_input_shape(self.input_name, (batch, *tail)):
            raise ModelError(f"engine refuses input shape {(batch, *tail)} (batch "
                             f"{self.min_batch}..{self.max_batch}); {REBUILD}")

    def _check_shapes(self) -> None:
        """The engine's tensor shapes against the sidecar (-1: a dynamic dimension); their
        types are the engine's own (outputs are returned as float32)."""
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name, (_, shape) in expected_tensors(self.metadata).items():
            if name not in names:
                raise ModelError(f"the sidecar lists output {name!r}, the engine has {names}; "
                                 f"{REBUILD}")
            dims = [d if d >= 0 else None for d in self.engine.get_tensor_shape(name)]
            kind = "input" if name == self.input_name else "output"
            check_tensor("engine", f"{kind} {name}", None, dims, None, shape,
                         self.metadata.batch)

    def run(self, images: np.ndarray) -> ModelOutputs:
        """(B, 3, H, W) float32 or (B, H, W, 3) uint8 -> outputs, B <= the engine's largest batch."""
        batch = images.shape[0]
        if batch > self.max_batch:
            raise ValueError(f"batch {batch} > the engine's largest batch {self.max_batch}")
        ptr, dtype, _ = self.buffers[self.input_name]
        if batch < self.min_batch:  # below the profile: repeat the last frame, drop its outputs
            images = np.concatenate([images, np.repeat(images[-1:], self.min_batch - batch, 0)])
        host = np.ascontiguousarray(images, dtype=dtype)
        self._set_batch(host.shape[0], host.shape[1:])
        self.cuda.copy(ptr, host.ctypes.data, host.nbytes, "HostToDevice", self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise RuntimeError("TensorRT execution failed")
        results = {}
        for name in self.outputs:
            ptr, dtype, tail = self.buffers[name]
            out = np.empty((batch,) + tail, dtype)
            self.cuda.copy(out.ctypes.data, ptr, out.nbytes, "DeviceToHost", self.stream)
            results[name] = out
        self.cuda.check(self.cuda.rt.cudaStreamSynchronize(self.stream))
        named = {name: out.astype(np.float32) for name, out in results.items()}
        return ModelOutputs(named["cls"], named.get("attn"), named.get("patch"),
                            named.get("attn_registers"))

    def __del__(self) -> None:
        for ptr, _, _ in getattr(self, "buffers", {}).values():
            self.cuda.rt.cudaFree(ptr)
        if getattr(self, "stream", None) is not None:
            self.cuda.rt.cudaStreamDestroy(self.stream)
