"""What ``dino-export`` does, step by step, without the command-line parsing.

targets -> load -> export ONNX -> verify through the runtime (on by default) -> commit ->
TensorRT engine (when asked). Every failure is a :class:`~dino_core.errors.UserError` with one
line a user can act on. A file is written beside its final name and takes that name only once it
has passed verification: a file that fails is kept as ``OUT.onnx.unverified`` and an earlier
``OUT.onnx`` is left as it was. A missing TensorRT or GPU comes after the ONNX file has been
written and verified, with the equivalent ``trtexec`` command.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dino_core.errors import UserError
from dino_core.fileio import partial_path

from .config import ExportConfig, check_img_size
from .images import ImageSet, verification_sets
from .onnx_export import build_metadata, export_fp32, finish, load_model, write_atomic
from .targets import Target, check_options, engine_path, select
from .verify import VerifyReport, verify_file

Log = Callable[[str], None]


@dataclass(frozen=True)
class ExportRequest:
    """One ``dino-export`` invocation."""

    checkpoint: str
    out: Path
    config: ExportConfig
    trt: str | None = None           # engine precision, or None for ONNX only
    workspace_gib: float = 4.0
    verify: bool = True
    verify_data: Path | None = None  # the user's photos, verified on beside synthetic images
    given: frozenset[str] = field(default_factory=frozenset)  # options given on the command line


@dataclass
class ExportResult:
    onnx_path: Path
    reports: list[VerifyReport] = field(default_factory=list)
    engine_path: Path | None = None
    engine_report: VerifyReport | None = None

    @property
    def report(self) -> VerifyReport | None:
        """The ONNX Runtime verification (the first one run)."""
        return self.reports[0] if self.reports else None


def run_export(req: ExportRequest, log: Log = print) -> ExportResult:
    """Run the whole export; raises :class:`UserError` on any failure (see module docstring)."""
    rows = select(req.config.precision, req.trt)  # unknown values fail before any work
    check_options(rows, req.given)
    cfg = req.config
    model, source = load_model(req.checkpoint, cfg.checkpoint_key)
    check_img_size(cfg.img_size, model.patch_size)
    registers = f", {model.num_register_tokens} registers" if model.num_register_tokens else ""
    log(f"loaded {source.name}: {model.family} {source.arch}/{model.patch_size}, depth "
        f"{len(model.blocks)}, {model.embed_dim} wide, {model.num_heads} heads{registers}")
    inputs = verification_sets(cfg.img_size, req.verify_data) if req.verify else []
    start = time.perf_counter()
    proto = finish(export_fp32(model, cfg)[0], model, source, cfg)
    meta = build_metadata(model, source, cfg)
    tmp = write_atomic(proto, partial_path(req.out))
    log(f"exported {req.out.name} ({tmp.stat().st_size / 1e6:.1f} MB, {cfg.precision}, "
        f"{len(proto.graph.node)} nodes) in {time.perf_counter() - start:.1f} s")
    result = ExportResult(req.out)
    if req.verify:
        result.reports = _verified(tmp, req.out, lambda p: _verify_onnx(p, model, inputs, log))
    else:
        os.replace(tmp, req.out)
    if len(rows) > 1:
        result.engine_path, result.engine_report = _engine(req, rows[1], model, meta, inputs, log)
    return result


def _verify_onnx(path: Path, model, inputs: list[ImageSet], log: Log) -> list[VerifyReport]:
    report = verify_file(path, model, inputs, backend="onnxruntime", device="cpu")
    log(f"{report.runner} vs PyTorch float32:\n{report.table()}")
    return [report]


def _verified(tmp: Path, final: Path, check: Callable[[Path], list[VerifyReport]],
              companions: tuple[str, ...] = ()) -> list[VerifyReport]:
    """Verify ``tmp``; rename it (and ``tmp + suffix`` for each companion) to ``final`` when
    every report passes, else to ``final.unverified`` and stop with one line."""
    try:
        reports = check(tmp)
    except BaseException:
        for path in [tmp] + [Path(f"{tmp}{c}") for c in companions]:
            path.unlink(missing_ok=True)
        raise
    failed = [f for r in reports for f in r.failures] or ([] if reports else ["nothing compared"])
    target = final if not failed else final.with_name(final.name + ".unverified")
    os.replace(tmp, target)
    for suffix in companions:
        os.replace(f"{tmp}{suffix}", f"{target}{suffix}")
    if failed:
        kept = f"; {final} is unchanged" if final.exists() else ""
        raise UserError(f"verification of {final.name} failed ({'; '.join(failed)}); the file is "
                        f"kept as {target}{kept}")
    return reports


def _engine(req: ExportRequest, row: Target, model, meta, inputs: list[ImageSet], log: Log):
    from . import tensorrt as trt_export
    cfg = trt_export.EngineConfig(precision=row.precision, workspace_gib=req.workspace_gib,
                                  calib_feeds=_engine_calibration(req, row))
    out = engine_path(req.out, row.precision)
    reason = trt_export.unavailable_reason()
    if reason is not None:
        raise UserError(f"{reason}; {req.out} is written"
                        f"{' and verified' if req.verify else ''}; build the engine on a GPU "
                        f"machine with: {trt_export.trtexec_command(req.out, out, cfg, meta)}")
    start = time.perf_counter()
    tmp = partial_path(out)
    row.make(req.out, tmp, cfg, meta)  # writes tmp and tmp.json
    log(f"built {out.name} in {time.perf_counter() - start:.1f} s")
    if not req.verify:
        os.replace(tmp, out)
        os.replace(f"{tmp}.json", f"{out}.json")
        return out, None

    def check(path: Path) -> list[VerifyReport]:
        report = verify_file(path, model, inputs, backend="tensorrt", device="cuda")
        log(f"{report.runner} vs PyTorch float32:\n{report.table()}")
        return [report]

    (report,) = _verified(tmp, out, check, companions=(".json",))
    log(f"wrote {out} and {out.name}.json")
    return out, report


def _engine_calibration(req: ExportRequest, row: Target) -> tuple:
    """Calibration batches for ``--trt int8`` from a float file (a QDQ file needs none)."""
    if row.precision != "int8" or req.config.precision == "int8":
        return ()
    from .quantize import calibration_feeds
    cfg = req.config
    # TensorRT calibrates at the profile's opt shape, so the batches have that size.
    return tuple(calibration_feeds(cfg, batch=cfg.batch_spec.opt))
