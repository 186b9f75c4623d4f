"""The one table of export targets (Ultralytics-exporter style): it drives dispatch and options.

Each row: the option value that selects it, the file it writes, whether building it needs an
NVIDIA GPU, the options it takes beyond the common ones (and which of them it requires), and the
function that makes it. An export selects one graph row (``--precision``) and at most one engine
row (``--trt``); an option that none of the selected rows takes is a usage error naming the
rows that do. Adding a target is adding a row here and a module.
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
    from .quantize import quantize_int8
    return quantize_int8(proto, config)


def _engine(*args: Any, **kwargs: Any) -> Any:
    from .tensorrt import build_engine
    return build_engine(*args, **kwargs)


@dataclass(frozen=True)
class Target:
    name: str                      # e.g. "onnx-int8"
    option: str                    # the option that selects it: "--precision" or "--trt"
    precision: str                 # fp32 | fp16 | int8: the option's value
    suffix: str                    # the file: output stem + suffix
    needs_gpu: bool
    options: tuple[str, ...] = ()  # options it takes beyond COMMON
    requires: tuple[str, ...] = ()  # of those, the ones it cannot do without
    make: Callable[..., Any] | None = None  # graph rows: fp32 proto -> proto; engine rows: build

    @property
    def kind(self) -> str:
        return "engine" if self.option == "--trt" else "onnx"

    @property
    def selected_by(self) -> str:
        return f"{self.option} {self.precision}"


TARGETS: tuple[Target, ...] = (
    Target("onnx", "--precision", "fp32", ".onnx", False),
    Target("onnx-fp16", "--precision", "fp16", ".onnx", False, make=_fp16),
    Target("onnx-int8", "--precision", "int8", ".onnx", False,
           ("--calib-data", "--calib-count"), ("--calib-data",), make=_int8),
    Target("trt-fp32", "--trt", "fp32", ".fp32.engine", True, ("--workspace",), make=_engine),
    Target("trt-fp16", "--trt", "fp16", ".fp16.engine", True, ("--workspace",), make=_engine),
    Target("trt-int8", "--trt", "int8", ".int8.engine", True,
           ("--workspace", "--calib-data", "--calib-count"), ("--calib-data",), make=_engine),
)


def target_for(kind: str, precision: str) -> Target:
    """The row for (``onnx`` | ``engine``, precision); the error lists the valid choices."""
    for t in TARGETS:
        if t.kind == kind and t.precision == precision:
            return t
    option = "--trt" if kind == "engine" else "--precision"
    raise OptionError(f"unknown {option} value {precision!r}; choose from "
                      f"{', '.join(precisions(kind))}")


def precisions(kind: str) -> list[str]:
    return [t.precision for t in TARGETS if t.kind == kind]


def select(precision: str, trt: str | None) -> list[Target]:
    """The rows one export builds: its graph, and its engine when ``--trt`` is given."""
    rows = [target_for("onnx", precision)]
    if trt is not None:
        rows.append(target_for("engine", trt))
    return rows


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
    rows = ["| target | selected by | file | needs GPU | options beyond the common ones |",
            "| --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        extra = ", ".join(f"`{o}`" + (" (required)" if o in t.requires else "")
                          for o in t.options) or "none"
        rows.append(f"| {t.name} | `{t.selected_by}` | `OUT{t.suffix}` | "
                    f"{'yes' if t.needs_gpu else 'no'} | {extra} |")
    return "\n".join(rows)
