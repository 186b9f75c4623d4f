"""The one table of export targets (Ultralytics-exporter style): it drives dispatch and options.

Each row: the option value that selects it, the file it writes, whether building it needs an
NVIDIA GPU, the options it takes beyond the common ones (and which of them it requires), and the
function that makes it. An export selects one graph row (``--precision``) and at most one engine
row (``--trt``); an option that none of the selected rows takes is a usage error naming the
rows that do. Adding a target is adding a row here and a module.

Engines are strongly typed: an engine row names the graph row it is built from (``source``), and
the engine computes in that graph's types. That graph is ``OUT.onnx`` when ``--precision``
selected it, else it is written and verified beside it as ``OUT`` + its row's suffix
(``--trt fp16`` with the default ``--precision fp32`` writes ``OUT.onnx``, ``OUT.fp16.onnx`` and
``OUT.fp16.engine``). The int8 engine has its own graph, ``onnx-int8-trt``: TensorRT takes only
symmetric int8 (zero points of 0), so the CPU int8 file cannot be its source.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from dino_core.errors import OptionError

# Options every export takes.
COMMON = ("--output", "--img-size", "--batch", "--dynamic-batch", "--outputs", "--opset",
          "--precision", "--preprocess", "--trt", "--no-verify", "--verify-data",
          "--checkpoint-key")


def _fp16(proto: Any, config: Any) -> Any:
    from .fp16 import to_fp16
    return to_fp16(proto)


def _int8(proto: Any, config: Any) -> Any:
    from .quantize import CPU
    return _quantized(proto, config, CPU)


def _int8_tensorrt(proto: Any, config: Any) -> Any:
    from .quantize import TENSORRT
    return _quantized(proto, config, TENSORRT)


def _quantized(proto: Any, config: Any, scheme: Any) -> Any:
    """``config`` is an :class:`~dino_export.config.ExportConfig` (not imported: config imports
    this table); quantize takes only the calibration part of it."""
    from .quantize import Calibration, quantize_int8
    # A dynamic-batch graph calibrates one image per call; a fixed one needs full batches.
    batch = config.example_batch if config.dynamic_batch is None else 1
    calib = Calibration(config.calib_data, config.calib_count, config.img_size,
                        config.preprocess, batch)
    return quantize_int8(proto, calib, scheme)


def _engine(*args: Any, **kwargs: Any) -> Any:
    from .tensorrt import build_engine
    return build_engine(*args, **kwargs)


@dataclass(frozen=True)
class Target:
    name: str                      # e.g. "onnx-int8"
    option: str                    # the option that selects it: "--precision" or "--trt"
    precision: str                 # fp32 | fp16 | int8: the option's value
    suffix: str                    # engines: OUT stem + suffix; graphs: the same when written
    needs_gpu: bool                # beside OUT as an engine's source (a --precision graph is OUT)
    options: tuple[str, ...] = ()  # options it takes beyond COMMON
    requires: tuple[str, ...] = ()  # of those, the ones it cannot do without
    make: Callable[..., Any] | None = None  # graph rows: fp32 proto -> proto; engine rows: build
    source: str = ""               # engine rows: the name of the graph row it is built from

    @property
    def kind(self) -> str:
        return "engine" if self.suffix.endswith(".engine") else "onnx"

    @property
    def selected_by(self) -> str:
        return f"{self.option} {self.precision}"


CALIBRATION = ("--calib-data", "--calib-count")

TARGETS: tuple[Target, ...] = (
    Target("onnx", "--precision", "fp32", ".fp32.onnx", False),
    Target("onnx-fp16", "--precision", "fp16", ".fp16.onnx", False, make=_fp16),
    Target("onnx-int8", "--precision", "int8", ".int8.onnx", False, CALIBRATION,
           ("--calib-data",), make=_int8),
    Target("onnx-int8-trt", "--trt", "int8", ".int8-trt.onnx", False, CALIBRATION,
           ("--calib-data",), make=_int8_tensorrt),
    Target("trt-fp32", "--trt", "fp32", ".fp32.engine", True, ("--workspace",), make=_engine,
           source="onnx"),
    Target("trt-fp16", "--trt", "fp16", ".fp16.engine", True, ("--workspace",), make=_engine,
           source="onnx-fp16"),
    Target("trt-int8", "--trt", "int8", ".int8.engine", True, ("--workspace",), make=_engine,
           source="onnx-int8-trt"),
)


def _selectable(kind: str) -> list[Target]:
    """The rows an option value names: ``--precision`` graphs, ``--trt`` engines."""
    option = "--trt" if kind == "engine" else "--precision"
    return [t for t in TARGETS if t.kind == kind and t.option == option]


def target_for(kind: str, precision: str) -> Target:
    """The row for (``onnx`` | ``engine``, precision); the error lists the valid choices."""
    for t in _selectable(kind):
        if t.precision == precision:
            return t
    option = "--trt" if kind == "engine" else "--precision"
    raise OptionError(f"unknown {option} value {precision!r}; choose from "
                      f"{', '.join(precisions(kind))}")


def precisions(kind: str) -> list[str]:
    return [t.precision for t in _selectable(kind)]


def by_name(name: str) -> Target:
    return next(t for t in TARGETS if t.name == name)


def select(precision: str, trt: str | None) -> list[Target]:
    """The rows one export builds: its graph; with ``--trt``, the engine and (when it is not the
    first) the graph the engine is built from."""
    rows = [target_for("onnx", precision)]
    if trt is not None:
        engine = target_for("engine", trt)
        rows.append(engine)
        if by_name(engine.source) is not rows[0]:
            rows.append(by_name(engine.source))
    return rows


def source_path(onnx_path: Path, precision_row: Target, engine: Target) -> Path:
    """The graph ``engine`` is built from: ``OUT.onnx`` itself when ``--precision`` selected that
    graph, else ``OUT`` + the source row's suffix (``OUT.fp16.onnx``, ``OUT.int8-trt.onnx``)."""
    source = by_name(engine.source)
    if source is precision_row:
        return onnx_path
    return onnx_path.with_name(onnx_path.stem + source.suffix)


def check_options(rows: list[Target], given: Iterable[str]) -> None:
    """:class:`OptionError` for a given option that none of ``rows`` takes, or a required one
    that is missing."""
    names = ", ".join(r.name for r in rows)
    for option in given:
        if option in COMMON or any(option in r.options for r in rows):
            continue
        takers = [t for t in TARGETS if option in t.options]
        how = "; ".join(f"{t.name} ({t.selected_by})" for t in takers)
        raise OptionError(f"{option} does not apply to this export ({names}); it is for {how}")
    given = set(given)
    for row in rows:
        missing = [o for o in row.requires if o not in given]
        if missing:
            raise OptionError(f"{row.name} ({row.selected_by}) needs {missing[0]} DIR: a folder "
                              "of images like the ones you will run on, to calibrate on")


def engine_path(onnx_path: Path, precision: str) -> Path:
    """``OUT.onnx`` -> ``OUT.<precision>.engine``."""
    return onnx_path.with_name(onnx_path.stem + target_for("engine", precision).suffix)


def markdown_table() -> str:
    """The table for the README (kept in sync by a test)."""
    head = "| target | selected by | file | needs GPU | built from | options beyond the common ones |"
    rows = [head, "| --- | --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        extra = ", ".join(f"`{o}`" + (" (required)" if o in t.requires else "")
                          for o in t.options) or "none"
        file = "OUT.onnx" if t.option == "--precision" else f"OUT{t.suffix}"
        rows.append(f"| {t.name} | `{t.selected_by}` | `{file}` | "
                    f"{'yes' if t.needs_gpu else 'no'} | {_built_from(t)} | {extra} |")
    return "\n".join(rows)


def _built_from(t: Target) -> str:
    if t.kind == "onnx":
        return "the checkpoint"
    source = by_name(t.source)
    if source.option == "--precision":
        return (f"{source.name}: `OUT.onnx` with `{source.selected_by}`, "
                f"else `OUT{source.suffix}`")
    return f"{source.name}: `OUT{source.suffix}`"
