"""The one table of export targets (Ultralytics-exporter style).

Each row: the CLI flag value that selects it, the file suffix, whether building it needs an
NVIDIA GPU, and which options it accepts. Adding a target is adding a row here and a module.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dino_train.errors import UserError


@dataclass(frozen=True)
class Target:
    name: str                 # e.g. "onnx-int8"
    flag: str                 # "--precision int8" or "--trt fp16"
    format: str               # "onnx" | "engine"
    precision: str            # fp32 | fp16 | int8
    suffix: str               # appended to the output stem
    needs_gpu: bool
    args: tuple[str, ...]     # options that apply to this target
    module: str               # where it is built


COMMON = ("--img-size", "--batch", "--dynamic-batch", "--outputs", "--opset", "--preprocess",
          "--no-verify", "--checkpoint-key")
TARGETS: tuple[Target, ...] = (
    Target("onnx", "--precision fp32", "onnx", "fp32", ".onnx", False, COMMON,
           "dino_export.onnx_export"),
    Target("onnx-fp16", "--precision fp16", "onnx", "fp16", ".onnx", False, COMMON,
           "dino_export.fp16"),
    Target("onnx-int8", "--precision int8", "onnx", "int8", ".onnx", False,
           COMMON + ("--calib-data",), "dino_export.quantize"),
    Target("trt-fp32", "--trt fp32", "engine", "fp32", ".fp32.engine", True,
           COMMON + ("--workspace",), "dino_export.tensorrt"),
    Target("trt-fp16", "--trt fp16", "engine", "fp16", ".fp16.engine", True,
           COMMON + ("--workspace",), "dino_export.tensorrt"),
    Target("trt-int8", "--trt int8", "engine", "int8", ".int8.engine", True,
           COMMON + ("--workspace", "--calib-data"), "dino_export.tensorrt"),
)


def target_for(fmt: str, precision: str) -> Target:
    """The row for (``onnx`` | ``engine``, precision); the error lists the valid choices."""
    for t in TARGETS:
        if t.format == fmt and t.precision == precision:
            return t
    valid = ", ".join(t.precision for t in TARGETS if t.format == fmt)
    flag = "--trt" if fmt == "engine" else "--precision"
    raise UserError(f"unknown {flag} value {precision!r}; choose from {valid}")


def precisions(fmt: str) -> list[str]:
    return [t.precision for t in TARGETS if t.format == fmt]


def engine_path(onnx_path: Path, precision: str) -> Path:
    """``OUT.onnx`` -> ``OUT.<precision>.engine``."""
    return onnx_path.with_name(onnx_path.stem + target_for("engine", precision).suffix)


def markdown_table() -> str:
    """The table for the README (kept in sync by a test)."""
    rows = ["| target | selected by | file | needs GPU | options |", "| --- | --- | --- | --- | --- |"]
    for t in TARGETS:
        file = f"`OUT{t.suffix}`"
        extra = ", ".join(f"`{a}`" for a in t.args if a not in COMMON) or "common only"
        rows.append(f"| {t.name} | `{t.flag}` | {file} | {'yes' if t.needs_gpu else 'no'} | {extra} |")
    return "\n".join(rows)
