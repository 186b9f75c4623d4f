"""Verified ONNX graph -> strongly typed TensorRT engine, plus the metadata JSON beside it.

    build_engine(onnx_path, engine_path, EngineConfig(...), meta) -> Path

The engine computes in exactly the types of the graph it is built from (strong typing): the
precision lives in the graph, which ``dino-export`` has verified on the CPU just before. The fp32
engine comes from the fp32 graph, the fp16 engine from the fp16 graph (LayerNorm and Softmax kept
in float32 inside it), the int8 engine from a Q/DQ graph with TensorRT's symmetric int8 (see
:mod:`dino_export.quantize`). No builder precision flags, no calibrator, no per-layer precision:
TensorRT 11 removed them all (NVIDIA, "Migrating from TensorRT 10.x to 11.x"), and a strongly
typed TensorRT 10 network refuses them. TensorRT 10.x (10.3 is JetPack 6's) builds strongly
typed when the network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; 11.x
always does, and ignores that flag (deprecated in 11.0), so none is passed there.

The builder parses the graph, sets the workspace limit, turns TF32 off (float32 stays float32),
adds one optimisation profile over the batch (min/opt/max from the metadata) and a timing cache
that later builds reuse. The engine's metadata is ``<engine>.json`` (the runtime reads it, with
the TensorRT version that must match at load). Without TensorRT or a GPU,
:func:`unavailable_reason` says which is missing and :func:`fallback` gives the ``trtexec``
command for a machine that has them (it keeps trtexec's TF32 default: whether trtexec 11 still
takes ``--noTF32`` could not be checked here, and a flag it refuses would break the line).
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_bytes
from dino_core.metadata import InputFormat, ModelMetadata

GIB = 1 << 30
MIN_VERSION = (10, 3)  # JetPack 6; strongly typed networks parse Q/DQ and fp16 graphs from 10.0
SUPPORTED = "TensorRT 10.3 or later (10.x, 11.x)"


@dataclass(frozen=True)
class EngineConfig:
    """How to build one engine. There is no precision here: the graph carries it."""

    workspace_gib: float = 4.0
    timing_cache: Path | None = None  # default: trt_timing.cache beside the engine


def input_shapes(meta: ModelMetadata) -> dict[str, tuple[int, ...]]:
    """min/opt/max input shapes from the metadata's batch spec and input format."""
    h, w = meta.img_size
    one = (h, w, 3) if meta.input_format is InputFormat.UINT8_NHWC else (3, h, w)
    b = meta.batch
    return {"min": (b.min, *one), "opt": (b.opt, *one), "max": (b.max, *one)}


def version_tuple(version: str) -> tuple[int, ...]:
    """``"10.16.1.11"`` -> (10, 16, 1, 11); non-numeric parts (``post1``) end the tuple."""
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def check_version(version: str) -> int:
    """The major version, or :class:`UserError` for a TensorRT older than :data:`MIN_VERSION`."""
    numbers = version_tuple(version)
    if numbers[:2] < MIN_VERSION:
        raise UserError(f"TensorRT {version} is installed; dino-export builds strongly typed "
                        f"engines with {SUPPORTED}")
    return numbers[0]


def network_flags(trt) -> int:
    """``create_network`` flags for a strongly typed network on the installed TensorRT."""
    if check_version(trt.__version__) == 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0  # 11.x: always strongly typed; the flag is deprecated and ignored


def unavailable_reason() -> str | None:
    """Why an engine cannot be built here (no TensorRT, a TensorRT too old, no GPU), or ``None``."""
    try:
        import tensorrt
    except ImportError:
        return ("TensorRT is not installed (pip install 'dino-edge[trt]' on a machine with an "
                "NVIDIA GPU; on Jetson, the tensorrt module of JetPack)")
    try:
        check_version(tensorrt.__version__)
    except UserError as e:
        return str(e)
    if not gpu_visible():
        return "no CUDA GPU is visible (TensorRT builds engines for the GPU it runs on)"
    return None


def gpu_visible() -> bool:
    import torch
    return torch.cuda.is_available()


def installed_major() -> int | None:
    """The major version of an importable TensorRT, else ``None``."""
    try:
        import tensorrt
    except ImportError:
        return None
    numbers = version_tuple(tensorrt.__version__)
    return numbers[0] if numbers else None


def trtexec_command(onnx_path: Path, engine_path: Path, cfg: EngineConfig,
                    meta: ModelMetadata, major: int = 10) -> str:
    """The shell-quoted ``trtexec`` line that builds the same engine with TensorRT ``major``.x:
    ``--stronglyTyped`` on 10.x, nothing on 11.x (always strongly typed), no precision flags."""
    dims = {k: "x".join(str(d) for d in v) for k, v in input_shapes(meta).items()}
    cache = cfg.timing_cache or engine_path.parent / "trt_timing.cache"
    parts = ["trtexec", f"--onnx={onnx_path}", f"--saveEngine={engine_path}",
             f"--memPoolSize=workspace:{int(cfg.workspace_gib * 1024)}M",
             f"--timingCacheFile={cache}"]
    if meta.batch.is_dynamic:
        parts += [f"--{k}Shapes={meta.input_name}:{dims[k]}" for k in ("min", "opt", "max")]
    if major == 10:
        parts.append("--stronglyTyped")
    return shlex.join(parts)


def fallback(onnx_path: Path, engine_path: Path, cfg: EngineConfig, meta: ModelMetadata) -> str:
    """What to run instead, for the message that says why no engine was built here: the command
    for the installed TensorRT's major version, else 10.x (Jetson), with the other major's change;
    the command comes last, so it can be copied from the end of the line."""
    major = installed_major() or 10
    other = ("on 11.x leave out --stronglyTyped, always on there" if major == 10 else
             "on 10.x add --stronglyTyped")
    return (f"build {engine_path.name} on a GPU machine with TensorRT {major}.x ({other}): "
            f"{trtexec_command(onnx_path, engine_path, cfg, meta, major)}")


def build_engine(onnx_path: Path, engine_path: Path, cfg: EngineConfig,
                 meta: ModelMetadata) -> Path:
    """Build from the graph ``onnx_path`` (whose metadata is ``meta``); write ``engine_path`` and
    ``<engine_path>.json`` atomically; returns the path."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"{onnx_path}: TensorRT {trt.__version__} cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg.workspace_gib * GIB))
    # TF32 (on by default) rounds float32 matmul inputs to 10-bit mantissas: about 1e-3
    # relative error, ten times the fp32 bound the engine is verified against. Off, float32 in
    # the graph means float32 on the GPU, as on the CPU that verified the graph.
    config.clear_flag(trt.BuilderFlag.TF32)
    config.add_optimization_profile(_profile(builder, meta))
    cache_path = cfg.timing_cache or engine_path.parent / "trt_timing.cache"
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise UserError(f"TensorRT {trt.__version__} could not build {engine_path.name} "
                        "(its log above says why); try a larger --workspace")
    atomic_write_bytes(memoryview(config.get_timing_cache().serialize()), cache_path)
    atomic_write_bytes(memoryview(serialized), engine_path)
    engine_meta = meta.with_(tensorrt_version=trt.__version__)  # precision: the graph's
    atomic_write_bytes(engine_meta.to_json().encode(),
                       engine_path.with_name(engine_path.name + ".json"))
    return engine_path


def _profile(builder, meta: ModelMetadata):
    shapes = input_shapes(meta)
    profile = builder.create_optimization_profile()
    profile.set_shape(meta.input_name, shapes["min"], shapes["opt"], shapes["max"])
    return profile
