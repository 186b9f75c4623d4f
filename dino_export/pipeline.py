"""What ``dino-export`` does, step by step, without the command-line parsing.

load -> export ONNX -> verify (on by default) -> TensorRT engine (when asked). Every failure is
a :class:`~dino_train.errors.UserError` with one line a user can act on; a file that fails
verification is kept as ``OUT.onnx.unverified``, and a missing TensorRT or GPU comes after the
ONNX file has been written and verified, with the equivalent ``trtexec`` command.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dino_train.errors import UserError

from .config import ExportConfig, check_img_size
from .onnx_export import build_metadata, export_fp32, finish, load_model, write_atomic
from .targets import engine_path, target_for
from .verify import VerifyReport, verify_onnx, verify_runner


@dataclass(frozen=True)
class ExportRequest:
    """One ``dino-export`` invocation."""

    checkpoint: str
    out: Path
    config: ExportConfig
    trt: str | None = None           # engine precision, or None for ONNX only
    workspace_gib: float = 4.0
    verify: bool = True


@dataclass
class ExportResult:
    onnx_path: Path
    report: VerifyReport | None = None
    engine_path: Path | None = None
    engine_report: VerifyReport | None = None


def run_export(req: ExportRequest, log: Callable[[str], None] = print) -> ExportResult:
    """Run the whole export; raises :class:`UserError` on any failure (see module docstring)."""
    if req.trt is not None:
        target_for("engine", req.trt)  # an unknown value fails before any work
        if req.trt == "int8" and req.config.precision != "int8" and req.config.calib_data is None:
            raise UserError("--trt int8 needs calibration images: pass --calib-data DIR")
    cfg = req.config
    model, source = load_model(req.checkpoint, cfg.checkpoint_key)
    check_img_size(cfg.img_size, model.patch_size)
    log(f"loaded {source.name}: {source.arch}/{model.patch_size}, depth {len(model.blocks)}, "
        f"{model.embed_dim} wide, {model.num_heads} heads")
    start = time.perf_counter()
    proto, _ = export_fp32(model, cfg)
    proto = finish(proto, model, source, cfg)
    meta = build_metadata(model, source, cfg)
    path = write_atomic(proto, req.out)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {cfg.precision}, "
        f"{len(proto.graph.node)} nodes) in {time.perf_counter() - start:.1f} s")
    result = ExportResult(path)
    if req.verify:
        result.report = _verify(path, model, meta, log)
    if req.trt is not None:
        result.engine_path, result.engine_report = _engine(req, path, model, meta, log)
    return result


def _verify(path: Path, model, meta, log) -> VerifyReport:
    report = verify_onnx(path, model, meta)
    log(f"ONNX Runtime (CPU) vs PyTorch float32:\n{report.table()}")
    _fail_unless_passed(report, path, "verification")
    return report


def _fail_unless_passed(report: VerifyReport, path: Path, what: str) -> None:
    """Outside tolerance: keep the file as ``<name>.unverified`` and stop with one line."""
    if report.passed:
        return
    kept = path.with_name(path.name + ".unverified")
    path.replace(kept)
    raise UserError(f"{what} failed ({'; '.join(report.failures)}); the file is kept as {kept}")


def _engine(req: ExportRequest, onnx_path: Path, model, meta, log):
    from . import tensorrt as trt_export
    cfg = trt_export.EngineConfig(precision=req.trt, workspace_gib=req.workspace_gib,
                                  calib_feeds=_engine_calibration(req))
    out = engine_path(onnx_path, req.trt)
    reason = trt_export.unavailable_reason()
    if reason is not None:
        raise UserError(f"{reason}; {onnx_path} is written"
                        f"{' and verified' if req.verify else ''}; build the engine on a GPU "
                        f"machine with: {trt_export.trtexec_command(onnx_path, out, cfg, meta)}")
    start = time.perf_counter()
    trt_export.build_engine(onnx_path, out, cfg, meta)
    log(f"wrote {out} and {out.name}.json in {time.perf_counter() - start:.1f} s")
    if not req.verify:
        return out, None
    engine_meta = trt_export.read_engine_metadata(out)
    report = verify_runner(trt_export.EngineRunner(out, engine_meta), model, engine_meta)
    log(f"TensorRT vs PyTorch float32:\n{report.table()}")
    _fail_unless_passed(report, out, "engine verification")
    return out, report


def _engine_calibration(req: ExportRequest) -> tuple:
    """Calibration batches for ``--trt int8`` from a float file (a QDQ file needs none)."""
    if req.trt != "int8" or req.config.precision == "int8":
        return ()
    from .quantize import calibration_feeds
    cfg = req.config
    # TensorRT calibrates at the profile's opt shape, so the batches have that size.
    batch = cfg.dynamic_batch[1] if cfg.dynamic_batch is not None else cfg.batch
    return tuple(calibration_feeds(cfg, batch=batch))
