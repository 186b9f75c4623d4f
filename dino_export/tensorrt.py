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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_bytes
from dino_core.metadata import InputFormat, ModelMetadata

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
    one = (h, w, 3) if meta.input_format is InputFormat.UINT8_NHWC else (3, h, w)
    b = meta.batch
    return {"min": (b.min, *one), "opt": (b.opt, *one), "max": (b.max, *one)}


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
    if meta.batch.is_dynamic:
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
    atomic_write_bytes(memoryview(config.get_timing_cache().serialize()), cache_path)
    atomic_write_bytes(memoryview(serialized), engine_path)
    engine_meta = meta.with_(precision=cfg.precision, tensorrt_version=trt.__version__)
    atomic_write_bytes(engine_meta.to_json().encode(),
                       engine_path.with_name(engine_path.name + ".json"))
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
            atomic_write_bytes(memoryview(cache), self.cache)

    return EntropyCalibrator()


