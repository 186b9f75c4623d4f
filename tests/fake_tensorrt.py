"""A fake ``tensorrt`` module and cuda-python runtime, for CPU tests of the TensorRT code paths.

Its attributes are exactly those of one stored release (:mod:`tests.tensorrt_api`): reading or
setting a name the release lacks raises AttributeError, as the real bindings do, so code that
uses a removed API fails here as it would on that release. Its behaviour: the builder records
what it was asked for and "serialises" an engine as a header (profile, strong typing) plus the
ONNX graph it parsed; the runtime's engine runs that graph with ONNX Runtime on the CPU,
reading its input from and writing its outputs to the host memory that the fake ``cudaMalloc``
handed out, at the shapes the execution context was given. So the binding, shape, batch and
dtype logic of the toolkit runs for real. What it cannot test is TensorRT itself (parsing,
kernels, numerics): ``scripts/gpu_check.sh`` does that on a GPU.
"""
from __future__ import annotations

import ctypes
import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from .tensorrt_api import ApiNames, load

MAGIC = b"FAKE-TRT-ENGINE\n"
ORT_TYPES = {"tensor(float)": "FLOAT", "tensor(float16)": "HALF", "tensor(uint8)": "UINT8",
             "tensor(int8)": "INT8", "tensor(int32)": "INT32", "tensor(int64)": "INT64",
             "tensor(bool)": "BOOL"}
NUMPY = {"FLOAT": np.float32, "HALF": np.float16, "UINT8": np.uint8, "INT8": np.int8,
         "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


class EnumValue:
    """A member of a TensorRT enum (``BuilderFlag.TF32``): named, int-convertible, hashable."""

    def __init__(self, owner: str, name: str, value: int) -> None:
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    __index__ = __int__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EnumValue) and (self.owner, self.name) == (other.owner, other.name)

    def __hash__(self) -> int:
        return hash((self.owner, self.name))

    def __repr__(self) -> str:
        return f"{self.owner}.{self.name}"


class Strict:
    """A TensorRT object or class with exactly the members that ``cls`` has in ``api``'s
    release; what a member does comes from ``impl``."""

    def __init__(self, api: ApiNames, cls: str, impl: Any) -> None:
        object.__setattr__(self, "_api", api)
        object.__setattr__(self, "_cls", cls)
        object.__setattr__(self, "_impl", impl)

    def __getattr__(self, name: str) -> Any:
        self._api.require(f"{self._cls}.{name}")
        try:
            return getattr(self._impl, name)
        except AttributeError:
            raise NotImplementedError(f"the fake {self._cls} does not do {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._api.require(f"{self._cls}.{name}")
        setattr(self._impl, name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._impl(*args, **kwargs)


class _Constants:
    """A class's constants and enum values (``Logger.WARNING``, ``MemoryPoolType.WORKSPACE``),
    numbered by their order in the release; calling it makes an instance with ``make``."""

    def __init__(self, api: ApiNames, cls: str, make=None) -> None:
        self._members = sorted(n.split(".")[1] for n in api.names
                               if n.startswith(cls + ".") and n.count(".") == 1)
        self._cls, self._make = cls, make

    def __getattr__(self, name: str) -> EnumValue:
        if name.startswith("_") or name not in self._members:
            raise AttributeError(name)
        return EnumValue(self._cls, name, self._members.index(name))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._make is None:
            raise NotImplementedError(f"the fake does not construct {self._cls}")
        return self._make(*args, **kwargs)


@dataclass
class Build:
    """What one ``build_serialized_network`` call was given."""

    network_flags: int
    strongly_typed: bool
    flags_set: list = field(default_factory=list)    # set_flag calls (there should be none)
    flags_cleared: list = field(default_factory=list)
    pools: dict = field(default_factory=dict)        # MemoryPoolType name -> bytes
    profiles: list = field(default_factory=list)     # {input: (min, opt, max)}
    timing_cache_in: bytes = b""


class FakeTensorRT(types.ModuleType):
    """``import tensorrt`` in a test: one release's names, fake behaviour (module docstring)."""

    def __init__(self, role: str, output_dtype: str | None = None,
                 input_dtype: str | None = None) -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self._api = load(role)
        self._builds: list[Build] = []
        self._output_dtype = output_dtype  # e.g. "HALF": engines declare fp16 outputs
        self._input_dtype = input_dtype    # declared, not used to run: for refusal tests

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") and name != "__version__":
            raise AttributeError(name)
        self._api.require(name)
        if name == "__version__":
            return self._api.version
        if name == "nptype":
            return lambda dtype: NUMPY[dtype.name]
        makers = {"Logger": lambda *a: self._obj("Logger", object()),
                  "Builder": lambda logger: self._obj("Builder", _Builder(self)),
                  "OnnxParser": lambda network, logger: self._obj("OnnxParser", _Parser(network)),
                  "Runtime": lambda logger: self._obj("Runtime", _Runtime(self))}
        return Strict(self._api, name, _Constants(self._api, name, makers.get(name)))

    def _obj(self, cls: str, impl: Any) -> Strict:
        return Strict(self._api, cls, impl)

    def _enum(self, cls: str, name: str) -> EnumValue:
        return getattr(_Constants(self._api, cls), name)

    def _strongly_typed(self, flags: int) -> bool:
        if self._api.major >= 11:
            return True  # always, whatever the flags
        return bool(flags >> int(self._enum("NetworkDefinitionCreationFlag", "STRONGLY_TYPED")) & 1)


# -- builder side -------------------------------------------------------------------------------

class _Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.onnx = flags, b""


class _Parser:
    def __init__(self, network: Strict) -> None:
        self._network, self._errors = network._impl, []

    def parse_from_file(self, path: str) -> bool:
        try:
            proto = onnx.load(path)
            onnx.checker.check_model(proto)
        except Exception as e:  # noqa: BLE001 (any unreadable graph is a parser error)
            self._errors.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return False
        self._network.onnx = proto.SerializeToString()
        return True

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> str:
        return self._errors[index]


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))


class _TimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data + b"+timings"


class _Config:
    def __init__(self, fake: FakeTensorRT) -> None:
        self._fake = fake
        self.flags_set, self.flags_cleared = [], []
        self.pools, self.profiles, self.cache = {}, [], None

    def set_flag(self, flag: EnumValue) -> None:
        self.flags_set.append(flag)

    def clear_flag(self, flag: EnumValue) -> None:
        self.flags_cleared.append(flag)

    def set_memory_pool_limit(self, pool: EnumValue, size: int) -> None:
        self.pools[pool.name] = size

    def add_optimization_profile(self, profile: Strict) -> int:
        self.profiles.append(profile._impl.shapes)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> Strict:
        return self._fake._obj("ITimingCache", _TimingCache(data))

    def set_timing_cache(self, cache: Strict, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> Strict:
        return self.cache


class _Builder:
    def __init__(self, fake: FakeTensorRT) -> None:
        self._fake = fake

    def create_network(self, flags: int = 0) -> Strict:
        return self._fake._obj("INetworkDefinition", _Network(int(flags)))

    def create_builder_config(self) -> Strict:
        return self._fake._obj("IBuilderConfig", _Config(self._fake))

    def create_optimization_profile(self) -> Strict:
        return self._fake._obj("IOptimizationProfile", _Profile())

    def build_serialized_network(self, network: Strict, config: Strict) -> bytes | None:
        net, cfg = network._impl, config._impl
        build = Build(net.flags, self._fake._strongly_typed(net.flags), list(cfg.flags_set),
                      list(cfg.flags_cleared), dict(cfg.pools), list(cfg.profiles),
                      cfg.cache._impl.data if cfg.cache else b"")
        self._fake._builds.append(build)
        if not net.onnx or len(cfg.profiles) != 1:
            return None
        profile = {k: [list(s) for s in v] for k, v in cfg.profiles[0].items()}
        header = json.dumps({"profile": profile, "strongly_typed": build.strongly_typed})
        return MAGIC + header.encode() + b"\n" + net.onnx


# -- runtime side -------------------------------------------------------------------------------

class _Runtime:
    def __init__(self, fake: FakeTensorRT) -> None:
        self._fake = fake

    def deserialize_cuda_engine(self, data: bytes):
        if bytes(data[:len(MAGIC)]) != MAGIC:
            return None
        header, graph = bytes(data[len(MAGIC):]).split(b"\n", 1)
        return self._fake._obj("ICudaEngine", _Engine(self._fake, json.loads(header), graph))


class _Engine:
    def __init__(self, fake: FakeTensorRT, header: dict, graph: bytes) -> None:
        import onnxruntime as ort
        self._fake, self.header = fake, header
        # An int8 graph's Q/DQ pairs run as float ops: what TensorRT computes (int8 products
        # summed in int32), not ONNX Runtime's fused CPU kernels, which saturate 8-bit weights on
        # x86 CPUs without VNNI (dino_export.quantize).
        options = ort.SessionOptions()
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = {o.name: o for o in self.session.get_outputs()}

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return [*self.inputs, *self.outputs][index]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        arg = self.inputs.get(name) or self.outputs[name]
        return tuple(d if isinstance(d, int) else -1 for d in arg.shape)

    def get_tensor_dtype(self, name: str) -> EnumValue:
        dtype = ORT_TYPES[(self.inputs.get(name) or self.outputs[name]).type]
        if name in self.outputs and self._fake._output_dtype:
            dtype = self._fake._output_dtype
        if name in self.inputs and self._fake._input_dtype:
            dtype = self._fake._input_dtype
        return self._fake._enum("DataType", dtype)

    def get_tensor_profile_shape(self, name: str, profile: int) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.header["profile"][name]]

    def create_execution_context(self) -> Strict:
        return self._fake._obj("IExecutionContext", _Context(self))


class _Context:
    def __init__(self, engine: _Engine) -> None:
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(shape)
        lo, _, hi = self.engine.get_tensor_profile_shape(name, 0)
        if len(shape) != len(lo) or not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.engine.inputs:
            return self.shapes.get(name, self.engine.get_tensor_shape(name))
        batch = next(iter(self.shapes.values()))[0]
        return (batch,) + self.engine.get_tensor_shape(name)[1:]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        engine, feeds = self.engine, {}
        for name, arg in engine.inputs.items():
            dtype = NUMPY[ORT_TYPES[arg.type]]
            feeds[name] = _read(self.addresses[name], self.shapes[name], dtype)
        for name, value in zip(engine.outputs, engine.session.run(list(engine.outputs), feeds)):
            declared = NUMPY[engine.get_tensor_dtype(name).name]
            _write(self.addresses[name], np.ascontiguousarray(value, dtype=declared))
        return True


def _read(address: int, shape: tuple[int, ...], dtype) -> np.ndarray:
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * nbytes).from_address(address), dtype).reshape(shape).copy()


def _write(address: int, array: np.ndarray) -> None:
    ctypes.memmove(address, array.ctypes.data, array.nbytes)


# -- cuda-python ------------------------------------------------------------------------------

class FakeCudart(types.ModuleType):
    """``cuda.bindings.runtime``: device memory is host memory, copies are memmove."""

    class cudaMemcpyKind:  # cuda-python's names
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        super().__init__("cuda.bindings.runtime")
        self.allocations: dict[int, Any] = {}
        self.streams = 0

    def cudaMalloc(self, nbytes: int):
        buffer = (ctypes.c_char * max(int(nbytes), 1))()
        self.allocations[ctypes.addressof(buffer)] = buffer
        return 0, ctypes.addressof(buffer)

    def cudaFree(self, address: int):
        self.allocations.pop(int(address), None)
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind, stream):
        ctypes.memmove(int(dst), int(src), int(nbytes))
        return (0,)

    def cudaSetDevice(self, index: int):
        return (0,)

    def cudaStreamCreate(self):
        self.streams += 1
        return 0, self.streams

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return (0,)


def _modules(role: str, output_dtype: str | None, input_dtype: str | None
             ) -> tuple[FakeTensorRT, dict[str, types.ModuleType]]:
    fake = FakeTensorRT(role, output_dtype, input_dtype)
    cudart = FakeCudart()
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    package = types.ModuleType("cuda")
    package.bindings = bindings
    return fake, {"tensorrt": fake, "cuda": package, "cuda.bindings": bindings,
                  "cuda.bindings.runtime": cudart}


def install(monkeypatch, role: str, output_dtype: str | None = None,
            input_dtype: str | None = None) -> FakeTensorRT:
    """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` give the fakes, and the
    machine report one CUDA device, for the rest of the test."""
    from dino_runtime.backends import cuda
    fake, modules = _modules(role, output_dtype, input_dtype)
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cuda, "cuda_device_count", lambda: 1)
    return fake


def install_globally(role: str) -> FakeTensorRT:
    """The same for a whole process, and dino-export sees a GPU too: for the commands a test
    starts (``tests/fake_site/sitecustomize.py`` calls this at interpreter start-up)."""
    from dino_export import tensorrt as trt_export
    from dino_runtime.backends import cuda
    fake, modules = _modules(role, None, None)
    sys.modules.update(modules)
    cuda.cuda_device_count = lambda: 1
    trt_export.gpu_visible = lambda: True
    return fake
