"""The export-target table, the trtexec fallback line, and the README documenting every option."""
from __future__ import annotations

from pathlib import Path

import click
import pytest

from dino_core.errors import OptionError, UserError
from dino_export import cli as export_cli
from dino_export.config import ExportConfig, check_img_size
from dino_export.onnx_export import read_metadata
from dino_export.targets import (
    COMMON,
    TARGETS,
    by_name,
    check_options,
    engine_path,
    markdown_table,
    select,
    source_path,
    target_for,
)
from dino_export.tensorrt import input_shapes

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def export_section() -> str:
    return readme_section("dino-export")


def test_readme_documents_every_cli_option():
    section = export_section()
    options = [opt for p in export_cli.cli.params if isinstance(p, click.Option)
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [o for o in options if o not in section]
    assert not missing, f"README ## Export lacks {missing}"


def test_readme_documents_every_dino_run_option():
    from dino_runtime import cli as run_cli
    section = readme_section("dino-run")
    options = [opt for p in run_cli.command.params if isinstance(p, click.Option)
               for opt in p.opts if opt.startswith("--") and opt != "--help"]
    missing = [o for o in options if o not in section]
    assert not missing, f"README ## dino-run lacks {missing}"


def test_readme_has_the_target_table():
    assert markdown_table() in export_section()


def test_target_table():
    assert {t.name for t in TARGETS} == {"onnx", "onnx-fp16", "onnx-int8", "onnx-int8-trt",
                                         "trt-fp32", "trt-fp16", "trt-int8"}
    assert all(t.needs_gpu == (t.kind == "engine") for t in TARGETS)
    assert engine_path(Path("out/m.onnx"), "fp16") == Path("out/m.fp16.engine")
    with pytest.raises(UserError, match="fp32, fp16, int8"):
        target_for("engine", "fp8")
    with pytest.raises(UserError, match="choose from fp32, fp16, int8$"):
        target_for("onnx", "int8-trt")  # a source graph only, not a --precision value


@pytest.mark.parametrize("precision, trt, rows, source", [
    ("fp32", "fp32", ["onnx", "trt-fp32"], "m.onnx"),
    ("fp32", "fp16", ["onnx", "trt-fp16", "onnx-fp16"], "m.fp16.onnx"),
    ("fp16", "fp16", ["onnx-fp16", "trt-fp16"], "m.onnx"),
    ("fp16", "fp32", ["onnx-fp16", "trt-fp32", "onnx"], "m.fp32.onnx"),
    ("int8", "int8", ["onnx-int8", "trt-int8", "onnx-int8-trt"], "m.int8-trt.onnx"),
    ("fp32", "int8", ["onnx", "trt-int8", "onnx-int8-trt"], "m.int8-trt.onnx"),
])
def test_an_engine_builds_from_the_graph_of_its_precision(precision, trt, rows, source):
    selected = select(precision, trt)
    assert [t.name for t in selected] == rows
    assert source_path(Path("out/m.onnx"), selected[0], selected[1]) == Path("out") / source
    assert by_name(selected[1].source).precision == selected[1].precision


def test_the_table_decides_which_options_an_export_takes():
    check_options(select("fp32", None), {"--img-size", "--outputs", "--verify-data"})
    check_options(select("int8", "int8"), {"--calib-data", "--calib-count", "--workspace"})
    with pytest.raises(OptionError, match=r"--workspace does not apply to this export \(onnx\)"):
        check_options(select("fp32", None), {"--workspace"})
    with pytest.raises(OptionError, match=r"onnx-int8 \(--precision int8\) needs --calib-data"):
        check_options(select("int8", None), set())
    # every option of the command is either common or taken by some row: none is orphaned
    options = {max(p.opts, key=len) for p in export_cli.cli.params if isinstance(p, click.Option)
               and p.name != "help"}
    assert options <= set(COMMON) | {o for t in TARGETS for o in t.options}


def test_img_size_error_names_nearest_sizes():
    with pytest.raises(UserError, match=r"H 224 or 232, W 480"):
        check_img_size((230, 480), 8)
    check_img_size((480, 640), 16)


def test_input_shapes_of_a_dynamic_file(tiny_pretrained, tmp_path):
    from dino_export import export_onnx
    path = export_onnx(tiny_pretrained, tmp_path / "m.onnx", ExportConfig(dynamic_batch=(1, 4, 16)))
    assert input_shapes(read_metadata(path)) == {"min": (1, 3, 224, 224), "opt": (4, 3, 224, 224),
                                                 "max": (16, 3, 224, 224)}
