"""``dino-export CHECKPOINT [-o OUT.onnx] [options]``: see ``dino-export --help`` and the README.

Bad input gives one line on stderr (``dino-export: ...``) and exit code 2 for a usage error,
1 for anything else; never a traceback (:mod:`dino_core.cli`). Which options an export takes
comes from the target table (:mod:`dino_export.targets`).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from dino_core.cli import run
from dino_core.errors import OptionError
from dino_core.extras import require_extra

from .config import DEFAULT_OPSET, OUTPUT_CHOICES, ExportConfig
from .targets import precisions

PROG = "dino-export"


def default_output(checkpoint: str, precision: str) -> Path:
    """``ckpt.pth`` -> ``./ckpt.onnx`` (``./ckpt.fp16.onnx`` etc. for other precisions)."""
    stem = Path(checkpoint).stem if Path(checkpoint).suffix else Path(checkpoint).name
    return Path(stem + ("" if precision == "fp32" else f".{precision}") + ".onnx")


def parse_outputs(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--outputs cls,attn --outputs patch`` -> ("cls", "attn", "patch")."""
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in OUTPUT_CHOICES]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} is not one of {', '.join(OUTPUT_CHOICES)}",
                                 param_hint="'--outputs'")
    return tuple(names)


def given_options(ctx: click.Context) -> frozenset[str]:
    """The long names of the options typed on the command line (not left at their default)."""
    return frozenset(max(p.opts, key=len) for p in ctx.command.params
                     if isinstance(p, click.Option)
                     and ctx.get_parameter_source(p.name) is ParameterSource.COMMANDLINE)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write [default: CHECKPOINT stem + .onnx in the current folder].")
@click.option("--img-size", nargs=2, type=int, default=(224, 224), show_default=True,
              metavar="H W", help="Input size in pixels; both multiples of the patch size.")
@click.option("--batch", type=int, default=None, help="Fixed batch size  [default: 1].")
@click.option("--dynamic-batch", nargs=3, type=int, default=None, metavar="MIN OPT MAX",
              help="Symbolic batch instead of --batch; OPT is TensorRT's tuning point.")
@click.option("--outputs", multiple=True,
              help="Any of cls, attn, patch, attn_registers (registers: DINOv2 _reg, DINOv3); "
                   "comma-separated or repeated  [default: cls,attn; cls,patch for a ConvNeXt, "
                   "which has no attention].")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True,
              help="ONNX opset (17..23); 23 turns the fused attention into ONNX Attention ops.")
@click.option("--precision", type=click.Choice(precisions("onnx")), default="fp32",
              show_default=True, help="fp16 is for GPU execution providers; int8 for CPUs.")
@click.option("--calib-data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Folder of images for int8 calibration (required for int8).")
@click.option("--calib-count", type=int, default=64, show_default=True,
              help="How many --calib-data images to calibrate on.")
@click.option("--preprocess", is_flag=True,
              help="Graph input uint8 BGR (B, H, W, 3): normalisation baked into the graph.")
@click.option("--trt", type=click.Choice(precisions("engine")), default=None,
              help="Also build OUT.<precision>.engine with TensorRT (needs an NVIDIA GPU), "
                   "strongly typed from the verified graph of that precision.")
@click.option("--workspace", type=float, default=4.0, show_default=True, metavar="GIB",
              help="TensorRT builder workspace limit in GiB.")
@click.option("--no-verify", is_flag=True, help="Skip the comparison with PyTorch.")
@click.option("--verify-data", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Also verify on these photos (besides synthetic and noise images).")
@click.option("--checkpoint-key", default="teacher", show_default=True,
              help="Which network of a training checkpoint: teacher or student.")
@click.pass_context
def cli(ctx, checkpoint, output, img_size, batch, dynamic_batch, outputs, opset, precision,
        calib_data, calib_count, preprocess, trt, workspace, no_verify, verify_data,
        checkpoint_key) -> None:
    """Export a DINO, DINOv2 or DINOv3 CHECKPOINT (a file, a transformers folder, or a hub name
    such as dino_vits8, dinov2_vits14_reg or dinov3_vits16) to verified ONNX with its [CLS]
    embedding and last-block attention (a ConvNeXt: its patch tokens), and optionally a
    TensorRT engine."""
    require_extra("export", PROG)
    from .pipeline import ExportRequest, run_export
    if batch is not None and dynamic_batch is not None:
        raise OptionError("--batch and --dynamic-batch exclude each other: give one of them")
    for option, folder in (("--calib-data", calib_data), ("--verify-data", verify_data)):
        if folder is not None and not folder.is_dir():
            raise OptionError(f"{option} {folder}: not a directory of images")
    if workspace <= 0:
        raise OptionError(f"--workspace must be positive, got {workspace}")
    config = ExportConfig(
        img_size=tuple(img_size), batch=1 if batch is None else batch,
        dynamic_batch=dynamic_batch, outputs=parse_outputs(outputs) if outputs else None,
        opset=opset,
        precision=precision, preprocess=preprocess, calib_data=calib_data,
        calib_count=calib_count, checkpoint_key=checkpoint_key)
    out = output or default_output(checkpoint, precision)
    run_export(ExportRequest(checkpoint, out, config, trt, workspace, not no_verify, verify_data,
                             given_options(ctx)),
               log=lambda line: click.echo(line))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(cli, PROG, argv))


if __name__ == "__main__":
    main()
