"""What ``dino-export`` does, step by step, without the command-line parsing.

targets -> load -> export ONNX -> verify through the runtime on every CPU engine installed
(ONNX Runtime, and OpenVINO in the precision dino-run's auto gives it; on by default) -> commit ->
TensorRT engine (when asked): its source graph (``OUT.onnx``, or ``OUT.fp16.onnx`` etc. when
``--precision`` wrote another one, see :mod:`dino_export.targets`) is written and verified the
same way, then the engine is built from it and verified through the runtime's TensorRT backend.
Every failure is a :class:`~dino_core.errors.UserError` with one line a user can act on. A file
is written beside its final name and takes that name only once it has passed verification: a
file that fails is kept as ``OUT.onnx.unverified`` and an earlier ``OUT.onnx`` is left as it
was. A missing TensorRT or GPU comes after the graphs have been written and verified, with the
``trtexec`` command that builds the engine from the source graph.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

from dino_core.errors import OutputError, UserError
from dino_core.fileio import partial_path, probe_writable
from dino_models import backbone as bb
from dino_runtime.backends import BackendCannotRun, auto_rows

from .config import ExportConfig, check_img_size, resolve_outputs
from .images import ImageSet, verification_sets
from .onnx_export import export_fp32, finish, load_model, read_metadata, write_atomic
from .targets import Target, by_name, check_options, engine_path, select, source_path
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
    engine_source: Path | None = None  # the graph the engine was (or is to be) built from

    @property
    def report(self) -> VerifyReport | None:
        """The ONNX Runtime verification (the first one run; OpenVINO's follows when installed)."""
        return self.reports[0] if self.reports else None


def run_export(req: ExportRequest, log: Log = print) -> ExportResult:
    """Run the whole export; raises :class:`UserError` on any failure (see module docstring)."""
    rows = select(req.config.precision, req.trt)  # unknown values fail before any work
    check_options(rows, req.given)
    check_output_folder(req.out)
    model, source = load_model(req.checkpoint, req.config.checkpoint_key)
    check_img_size(req.config.img_size, model.patch_size)
    req = replace(req, config=resolve_outputs(req.config, model, source.arch))
    cfg = req.config
    log(f"loaded {source.name}: {describe(model, source.arch)}")
    inputs = verification_sets(cfg.img_size, req.verify_data) if req.verify else []
    start = time.perf_counter()
    graphs = _Graphs(req, model, source, export_fp32(model, cfg)[0], inputs, log)
    result = ExportResult(req.out)
    result.reports = graphs.write(rows[0], req.out, start)
    if req.trt is not None:
        engine = rows[1]
        graph = source_path(req.out, rows[0], engine)
        if graph != req.out:
            result.reports += graphs.write(by_name(engine.source), graph)
        result.engine_source = graph
        meta = read_metadata(graph)  # an engine carries the metadata of its source graph
        result.engine_path, result.engine_report = _engine(req, engine, graph, model, meta,
                                                           inputs, log)
    return result


@dataclass
class _Graphs:
    """Finishes the one float32 export into each graph row an export writes, and verifies it."""

    req: ExportRequest
    model: object
    source: object
    fp32: object          # the float32 ModelProto, simplified and checked
    inputs: list[ImageSet]
    log: Log

    def config(self, row: Target) -> ExportConfig:
        return self.req.config.with_(precision=row.precision)

    def write(self, row: Target, path: Path, start: float | None = None) -> list[VerifyReport]:
        """Write ``row``'s graph to ``path`` beside-then-rename, verified unless --no-verify;
        the time logged counts from ``start`` (default: now)."""
        start = time.perf_counter() if start is None else start
        proto = finish(self.fp32, self.model, self.source, self.config(row), row)
        tmp = partial_path(path)
        try:  # from here until the rename, a failure or a signal removes the file it wrote
            with _io_errors(path):
                write_atomic(proto, tmp)
            kind = row.precision + ("" if row.option == "--precision" else " for TensorRT")
            self.log(f"exported {path.name} ({tmp.stat().st_size / 1e6:.1f} MB, {kind}, "
                     f"{len(proto.graph.node)} nodes) in {time.perf_counter() - start:.1f} s")
            if not self.req.verify:
                with _io_errors(path):
                    os.replace(tmp, path)
                return []
            return _verified(tmp, path,
                             lambda p: _verify_onnx(p, row, self.model, self.inputs, self.log))
        except BaseException:
            tmp.unlink(missing_ok=True)  # a failed verification has already moved it aside
            raise


def describe(model, arch: str) -> str:
    """``dinov3 vit_small/16, depth 12, 384 wide, 6 heads, 4 registers`` (a ConvNeXt: its
    stride and no heads)."""
    if not model.has_attention:
        return (f"{model.family} {arch}, stride {model.patch_size}, depth {bb.depth(model)}, "
                f"{model.embed_dim} wide, no attention")
    registers = f", {model.num_registers} registers" if model.num_registers else ""
    return (f"{model.family} {arch}/{model.patch_size}, depth {bb.depth(model)}, "
            f"{model.embed_dim} wide, {model.num_heads} heads{registers}")


def check_output_folder(out: Path) -> None:
    """The folder of ``-o`` (created when missing) must take a new file: checked before any
    work, with the system's reason (an export is minutes of work to lose at the last step)."""
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"-o {out}: {folder} is not a folder")
    try:
        probe_writable(folder)
    except OSError as e:
        raise OutputError(f"-o {out}: cannot write in {folder} ({e.strerror or e})") from None


@contextlib.contextmanager
def _io_errors(out: Path) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise OutputError(f"-o {out}: cannot write ({e.strerror or e})") from None


def cpu_engines(path: Path) -> list[str]:
    """The engines that run ``path`` on CPUs: ONNX Runtime (every install has it), then the
    ones ``dino-run --backend auto`` would take before it on this machine (OpenVINO when
    installed), each in the precision auto gives it."""
    rows = [e.name for e in auto_rows(path, "cpu")]
    return ["onnxruntime"] + [name for name in rows if name != "onnxruntime"]


def cpu_checks(path: Path, row: Target) -> list[tuple[str, bool]]:
    """(engine, Q/DQ fusion) pairs that verify ``row``'s graph on this machine's CPU.

    A graph users run is checked on every CPU engine that runs it (:func:`cpu_engines`), with
    their int8 kernels. A graph only an engine runs (``row.engine_only``: the TensorRT int8
    source) is checked by its own arithmetic instead: ONNX Runtime with each Q/DQ pair run as
    float ops, which is what TensorRT computes (int8 products summed in int32 on the GPU).
    ONNX Runtime's or OpenVINO's int8 kernels would check code that never runs that graph, and
    on x86 CPUs without VNNI they saturate its 8-bit weights (see :mod:`~dino_export.quantize`),
    which TensorRT never does. What checks the engine is TensorRT, through the runtime's
    TensorRT backend, once it is built.
    """
    if row.engine_only:
        return [("onnxruntime", False)]
    return [(engine, True) for engine in cpu_engines(path)]


def _verify_onnx(path: Path, row: Target, model, inputs: list[ImageSet], log: Log
                 ) -> list[VerifyReport]:
    reports = []
    for engine, qdq_fusion in cpu_checks(path, row):
        try:
            report = verify_file(path, model, inputs, backend=engine, device="cpu",
                                 qdq_fusion=qdq_fusion)
        except BackendCannotRun as e:  # auto runs the file on the next engine: nothing to check
            log(f"{engine}: not verified: {e}; dino-run --backend auto runs it on onnxruntime")
            continue
        log(f"{report.runner} vs PyTorch float32:\n{report.table()}")
        reports.append(report)
    return reports


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
    failed = ([f"{r.runner}: {f}" for r in reports for f in r.failures]
              or ([] if reports else ["nothing compared"]))
    target = final if not failed else final.with_name(final.name + ".unverified")
    os.replace(tmp, target)
    for suffix in companions:
        os.replace(f"{tmp}{suffix}", f"{target}{suffix}")
    if failed:
        kept = f"; {final} is unchanged" if final.exists() else ""
        raise UserError(f"verification of {final.name} failed ({'; '.join(failed)}); the file is "
                        f"kept as {target}{kept}")
    return reports


def _engine(req: ExportRequest, row: Target, graph: Path, model, meta, inputs: list[ImageSet],
            log: Log):
    """Build ``row``'s engine from the written (and verified) ``graph``, whose metadata is
    ``meta``; verify it through the runtime's TensorRT backend; commit engine and sidecar."""
    from . import tensorrt as trt_export
    cfg = trt_export.EngineConfig(workspace_gib=req.workspace_gib)
    out = engine_path(req.out, row.precision)
    reason = trt_export.unavailable_reason()
    if reason is not None:
        files = " and ".join(str(p) for p in dict.fromkeys((req.out, graph)))
        verb = "are" if graph != req.out else "is"
        raise UserError(f"{reason}; {files} {verb} written{' and verified' if req.verify else ''}"
                        f"; {trt_export.fallback(graph, out, cfg, meta)}")
    start = time.perf_counter()
    tmp = partial_path(out)
    try:
        row.make(graph, tmp, cfg, meta)  # writes tmp and tmp.json
    except BaseException:  # a failed build or a signal leaves no partial engine
        for path in (tmp, Path(f"{tmp}.json")):
            path.unlink(missing_ok=True)
        raise
    log(f"built {out.name} from {graph.name} in {time.perf_counter() - start:.1f} s")
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
