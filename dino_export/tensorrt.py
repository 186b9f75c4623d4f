"""ONNX -> TensorRT engine with the TensorRT Python API, plus the metadata JSON beside it.

    build_engine(onnx_path, engine_path, EngineConfig(...), meta) -> Path

The builder parses the exported ONNX, sets the workspace limit, one optimisation profile over
the batch (min/opt/max from the metadata), a timing cache that later builds reuse, and the
precision: fp16 keeps every LayerNorm (TensorRT ``NORMALIZATION`` layers) in float32 with
precision constraints obeyed, since its variance overflows in fp16; int8 uses the Q/DQ nodes of
an ``--precision int8`` file, or an entropy calibrator on ``--calib-data`` images for a float
file. The engine's metadata is ``<engine>.json`` (the runtime reads it, with the TensorRT
version that must match at load).

Without TensorRT or a GPU, :func:`unavailable_reason` says which is missing and
:func:`trtexec_command` gives the equivalent command for a machine that has them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dino_runtime.metadata import ModelMetadata
from dino_train.errors import UserError
from dino_train.fileio import atomic_output

GIB = 1 << 30


@dataclass(frozen=True)
class EngineConfig:
    """How to build one engine; ``calib_feeds`` only for int8 from a float ONNX file."""

    precision: str = "fp16"
    workspace_gib: float = 4.0
    timing_cache: Path | None = None          # default: trt_timing.cache beside the engine
    calib_feeds: tuple[np.ndarray, ...] = ()  # graph-format batches, one per calibration step


def input_shapes(meta: ModelMetadata) -> dict[str, tuple[int, ...]]:
    """min/opt/max input shapes from the metadata's batch spec and input format."""
    h, w = meta.img_size
    if meta.batch.startswith("dynamic:"):
        lo, opt, hi = (int(b) for b in meta.batch.split(":")[1].split(","))
    else:
        lo = opt = hi = int(meta.batch)
    one = (h, w, 3) if meta.input_format == "uint8_nhwc_bgr" else (3, h, w)
    return {"min": (lo, *one), "opt": (opt, *one), "max": (hi, *one)}


def unavailable_reason() -> str | None:
    """Why an engine cannot be built here (no TensorRT, no GPU), or ``None``."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (pip install 'dino-edge[trt]' on a machine with an NVIDIA GPU)"
    import torch
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (TensorRT builds engines for the GPU it runs on)"
    return None


def layernorm_names(onnx_path: Path) -> list[str]:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name for n in proto.graph.node if n.op_type == "LayerNormalization"]


def is_qdq(onnx_path: Path) -> bool:
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


def trtexec_command(onnx_path: Path, engine_path: Path, cfg: EngineConfig,
                    meta: ModelMetadata) -> str:
    """The ``trtexec`` line that builds the same engine on a machine with TensorRT."""
    shapes = input_shapes(meta)
    dims = {k: "x".join(str(d) for d in v) for k, v in shapes.items()}
    cache = cfg.timing_cache or engine_path.parent / "trt_timing.cache"
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
             f"--memPoolSize=workspace:{int(cfg.workspace_gib * 1024)}M",
             f"--timingCacheFile={cache}"]
    if meta.batch.startswith("dynamic:"):
        parts += [f"--{k}Shapes={meta.input_name}:{dims[k]}" for k in ("min", "opt", "max")]
    if cfg.precision in ("fp16", "int8"):
        ln = layernorm_names(onnx_path)
        parts += ["--fp16", "--precisionConstraints=obey",
                  "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in ln)]
    if cfg.precision == "int8":
        parts.append("--int8")  # Q/DQ scales come from the file; a float file needs --calib=CACHE
    return " ".join(parts)


def build_engine(onnx_path: Path, engine_path: Path, cfg: EngineConfig,
                 meta: ModelMetadata) -> Path:
    """Build, write ``engine_path`` and ``<engine_path>.json`` atomically; returns the path."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * GIB))
    _set_precision(trt, network, config, cfg, qdq=is_qdq(onnx_path))
    profile = _profile(builder, meta)
    config.add_optimization_profile(profile)
    calibrator = None
    if cfg.precision == "int8" and not is_qdq(onnx_path):
        calibrator = _calibrator(trt, cfg.calib_feeds, engine_path)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    cache_path = cfg.timing_cache or engine_path.parent / "trt_timing.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT {trt.__version__} could not build {engine_path.name} "
                        "(its log above says why); try a larger --workspace")
    _write_bytes(cache_path, memoryview(config.get_timing_cache().serialize()))
    _write_bytes(engine_path, memoryview(serialized))
    engine_meta = dataclasses.replace(meta, precision=cfg.precision,
                                      tensorrt_version=trt.__version__)
    _write_bytes(engine_path.with_name(engine_path.name + ".json"),
                 engine_meta.to_json().encode())
    return engine_path


def _network_flags(trt) -> int:
    # TensorRT 10 networks are always explicit-batch; 8.x needs the flag.
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _set_precision(trt, network, config, cfg: EngineConfig, qdq: bool) -> None:
    if cfg.precision in ("fp16", "int8"):
        # int8 engines also allow fp16 for the layers that stay unquantised (attention, GELU).
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    if cfg.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


def _profile(builder, meta: ModelMetadata):
    shapes = input_shapes(meta)
    profile = builder.create_optimization_profile()
    profile.set_shape(meta.input_name, shapes["min"], shapes["opt"], shapes["max"])
    return profile


def _calibrator(trt, feeds: tuple[np.ndarray, ...], engine_path: Path):
    """An entropy calibrator over graph-format batches (device copies through torch)."""
    if not feeds:
        raise UserError("--trt int8 from a float ONNX file needs --calib-data DIR")
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = iter(feeds)
            self.current = None
            self.cache = engine_path.with_name(engine_path.name + ".calib")

        def get_batch_size(self) -> int:
            return int(feeds[0].shape[0])

        def get_batch(self, names):
            batch = next(self.batches, None)
            if batch is None:
                return None
            self.current = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
            return [int(self.current.data_ptr())]

        def read_calibration_cache(self):
            return self.cache.read_bytes() if self.cache.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            _write_bytes(self.cache, memoryview(cache))

    return EntropyCalibrator()


def _write_bytes(path: Path, data) -> None:
    """Temporary file beside ``path``, then rename: never a half-written engine."""
    with atomic_output(path) as f:
        f.write(data)


class EngineRunner:
    """Runs an engine on uint8 BGR images (torch CUDA buffers), like :class:`verify.OnnxRunner`."""

    def __init__(self, engine_path: Path, meta: ModelMetadata) -> None:
        import tensorrt as trt
        import torch
        self.torch, self.meta = torch, meta
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise UserError(f"{engine_path}: TensorRT {trt.__version__} cannot load it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {trt.float32: torch.float32, trt.float16: torch.float16,
                       trt.uint8: torch.uint8, trt.int8: torch.int8}
        self.max_batch = input_shapes(meta)["max"][0]
        self.fixed = not meta.batch.startswith("dynamic:")

    def run_batch(self, feed: np.ndarray) -> dict[str, np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(feed)).cuda()
        self.context.set_input_shape(self.meta.input_name, tuple(x.shape))
        self.context.set_tensor_address(self.meta.input_name, x.data_ptr())
        outs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = self.dtypes[self.engine.get_tensor_dtype(name)]
            outs[name] = torch.empty(shape, dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outs[name].data_ptr())
        stream = torch.cuda.current_stream()
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return {k: v.float().cpu().numpy() for k, v in outs.items()}

    def __call__(self, bgr: np.ndarray) -> dict[str, np.ndarray]:
        from .images import normalize_bgr
        pieces = []
        for i in range(0, len(bgr), self.max_batch):
            part = bgr[i:i + self.max_batch]
            pad = self.max_batch - len(part) if self.fixed else 0
            if pad:
                part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
            feed = part if self.meta.input_format == "uint8_nhwc_bgr" else normalize_bgr(part)
            out = self.run_batch(feed)
            pieces.append({k: v[:len(part) - pad] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]) for k in self.outputs}


def read_engine_metadata(engine_path: Path) -> ModelMetadata:
    """The ``<engine>.json`` written by :func:`build_engine`."""
    return ModelMetadata.from_json(engine_path.with_name(engine_path.name + ".json").read_text())
