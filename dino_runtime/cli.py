"""``dino-run``: attention segmentation and embeddings on video, images and cameras.

    dino-run --model vits16.onnx --camera 0 --show-attention
    dino-run --model vits16.onnx --source clip.mp4 --mask --save out.mp4 --embeddings cls.npy --no-display
    dino-run --model vits16.onnx --source clip.mp4 --track first.png --masks-dir masks/ --no-display

Exit status (``dino_core.cli``): 0 done (also after q/Esc), 1 a problem with the input, 2 a
usage error (one line on stderr each), 128 + the signal after Ctrl-C (130), SIGTERM (143) or
SIGHUP (129), once the outputs written so far are finalised.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import click
import cv2

from dino_core.cli import one_line
from dino_core.cli import run as run_command
from dino_core.errors import OptionError, SourceError, UserError
from dino_core.fileio import atomic_output
from dino_core.metadata import MAX_SIDE
from dino_core.signals import GracefulStop

from .api import Runtime
from .backends import BACKEND_CHOICES
from .display import Display, check_display_available
from .outputs import OutputRequest, Outputs, open_outputs
from .pca import PcaBasis, PcaOptions
from .pipeline import Pipeline, RunSummary
from .postprocess import HeadSelection
from .preprocess import aspect_warning
from .render import RenderOptions
from .sources import ImageFiles, Source, SourceSpec, open_source
from .tracking import TrackOptions
from .tracking.request import TrackRequest

log = logging.getLogger("dino_runtime.cli")  # not __name__: "__main__" under python -m


@dataclass(frozen=True)
class PcaRequest:
    """The PCA view's options: where its basis comes from and where it goes."""

    fit: str | None = None         # a folder/glob of images to fit on, or a saved basis (.npz)
    save: str | None = None        # write the basis used here (.npz) for later runs
    foreground: bool = False       # drop the background by thresholding the 1st component
    threshold: float = 0.0         # that threshold, in standard deviations

    def check(self, pca: bool) -> None:
        given = [name for name, on in (("--pca-fit", self.fit), ("--pca-save", self.save),
                                       ("--pca-foreground", self.foreground)) if on]
        if given and not pca:
            raise OptionError(f"{given[0]} colours patches by their PCA: add --pca")
        if self.threshold and not self.foreground:
            raise OptionError("--pca-threshold is the background threshold: add --pca-foreground")
        if self.save and not self.save.endswith(".npz"):
            raise OptionError(f"--pca-save {self.save}: expected a .npz file name")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``dino-run`` was asked to do, validated."""

    model: str
    source: SourceSpec
    render: RenderOptions
    heads: HeadSelection
    threshold: float | None        # None when neither --mask nor --masks-dir asks for masks
    outputs: OutputRequest
    batch: int
    backend: str
    device: str
    precision: str
    input_size: tuple[int, int] | None
    max_frames: int | None
    display: bool
    pca: PcaRequest = PcaRequest()
    track: TrackRequest = TrackRequest()


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = text.lower().replace("x", " ").split()
    if len(parts) != 2 or not all(p.isdecimal() and 0 < int(p) <= MAX_SIDE for p in parts):
        raise click.BadParameter(f"{text!r}: expected HxW, each side 1..{MAX_SIDE}, e.g. 224x400",
                                 param_hint="--input-size")
    return int(parts[0]), int(parts[1])


def parse_heads(text: str) -> HeadSelection:
    try:
        return HeadSelection.parse(text)
    except ValueError as e:
        raise click.BadParameter(str(e).split(": ", 1)[-1], param_hint="--heads") from None


def first_frame_hw(source: Source) -> tuple[int, int] | None:
    """(H, W) of the source's frames when it can be known before the run."""
    if source.info.size is not None:
        return source.info.size[1], source.info.size[0]
    if isinstance(source, ImageFiles):
        image = cv2.imread(str(source.paths[0]), cv2.IMREAD_COLOR)
        return None if image is None else image.shape[:2]
    return None


def load_runtime(opts: RunOptions, frame_hw: tuple[int, int] | None) -> Runtime:
    # No warm-up call: in a whole process it is one more batch of work (0.24 s for ViT-S/16
    # int8 at batch 8, 2 s for ViT-S/8 bf16), and the first batch of the run already pays the
    # one-time allocation it would have taken out (docs/benchmarks/runtime.md: start-up).
    runtime = Runtime(opts.model, backend=opts.backend, device=opts.device, batch_size=opts.batch,
                      heads=opts.heads.mode if opts.heads.mode != "index" else opts.heads.index,
                      threshold=opts.threshold, input_size=opts.input_size,
                      precision=opts.precision, frame_size=frame_hw, warmup=False)
    meta = runtime.metadata
    check_attention_options(opts, meta)
    if opts.render.pca and "patch" not in meta.outputs:
        raise UserError(f"--pca needs patch tokens, and {opts.model} exports only "
                               f"{', '.join(meta.outputs)}; re-export it with the patch output")
    if opts.track.seeded:
        runtime.require_patch("--track")
    if frame_hw is not None:
        hint = aspect_warning(frame_hw, meta.img_size, meta.patch_size)
        if hint:
            log.warning(hint)
    return runtime


def check_attention_options(opts: RunOptions, meta) -> None:
    """:class:`OptionError` (one line) for an attention view asked of a model without
    attention (a DINOv3 ConvNeXt), naming what it does give."""
    if meta.has_attention:
        return
    asked = [flag for flag, on in (
        ("--show-attention", opts.render.attention), ("--mask", opts.render.mask),
        ("--masks-dir", opts.outputs.masks_dir), ("--heads", opts.heads.mode != "mean")) if on]
    if asked:
        raise OptionError(f"{asked[0]}: {opts.model} is a {meta.family} {meta.arch} without "
                          "attention (a ConvNeXt); it gives --embeddings and the --pca parts view")


def precision_text(backend) -> str:
    """``bf16``, or ``int8 (other ops bf16)`` for an int8 file whose float ops the engine chose."""
    other = getattr(backend, "float_precision", backend.precision)
    quantized = backend.precision == "int8" and other != "fp32"
    return f"{backend.precision} (other ops {other})" if quantized else backend.precision


def pca_options(request: PcaRequest, runtime: Runtime) -> PcaOptions:
    """The PCA view's basis: loaded from a .npz, fitted on a folder of images (the same colour
    for the same part across them), or None (fitted on the first batch of the run)."""
    basis = None
    if request.fit is not None and request.fit.endswith(".npz"):
        basis = PcaBasis.load(request.fit, runtime.metadata.embed_dim)
    elif request.fit is not None:
        basis = runtime.fit_pca(request.fit, foreground=request.foreground,
                                threshold=request.threshold)
        click.echo(f"dino-run: PCA basis fitted on {request.fit}", err=True)
    return PcaOptions(basis, request.foreground, request.threshold)


def save_pca(basis: PcaBasis | None, path: str | None) -> None:
    if path is None or basis is None:
        return
    with atomic_output(path) as tmp:
        basis.save(tmp)
    click.echo(f"dino-run: PCA basis written to {path}", err=True)


def open_display(pipe: Pipeline) -> Display:
    """The window; with a tracker, a box drawn with the mouse (re)starts it and ``c`` clears it."""
    tracker = pipe.tracker
    if tracker is None:
        return Display()
    from .tracking import Seed
    return Display(on_box=lambda box: tracker.request(Seed(box=box, origin="the mouse box")),
                   keys={ord("c"): lambda: tracker.request(None)})


def consume(pipe: Pipeline, outputs: Outputs, display: Display | None) -> None:
    """The main-thread stage: write every result, show it, stop on q/Esc."""
    with contextlib.closing(pipe.run()) as results:
        for result in results:
            outputs.write(result)
            shown = result.rendered if result.rendered is not None else result.frame.image
            if display is not None and not display.show(shown):
                pipe.stop("q pressed")
                break


def no_frames(source: Source, summary: RunSummary) -> SourceError:
    """The error of a run that ended without a single frame (every frame corrupt, or a live
    source that never delivered one)."""
    details = [f"{summary.dropped['corrupt']} corrupt"]
    if summary.stop_reason != "end of source":
        details.append(summary.stop_reason)
    return SourceError(f"{source.info.description}: no frame could be decoded "
                       f"({'; '.join(details)})")


def failed(error: BaseException, note: str) -> BaseException:
    """``error`` with what happened to the outputs added (one line for a UserError)."""
    if not note:
        return error
    if isinstance(error, UserError):
        added = type(error)(f"{error}{note}")
        added.exit_code = error.exit_code
        return added
    log.warning(note.lstrip("; "))  # a bug: its traceback follows, the outputs are named first
    return error


def run(opts: RunOptions) -> int:
    if opts.display:
        check_display_available()
    source = open_source(opts.source)
    frame_hw = first_frame_hw(source)
    seed = opts.track.seed(frame_hw)
    # Every output check before the model loads; files appear on the first write.
    outputs = open_outputs(opts.outputs, source, opts.source.path, source.info.fps)
    runtime = load_runtime(opts, frame_hw)
    track = opts.track.config(seed, armed=opts.display and "patch" in runtime.metadata.outputs
                              and opts.heads.mode != "all")
    pca = pca_options(opts.pca, runtime) if opts.render.pca else PcaOptions()
    meta = runtime.metadata
    registers = f" + {meta.num_registers} registers" if meta.num_registers else ""
    name = (f"{meta.arch}/{meta.patch_size}{registers}" if meta.has_attention
            else f"{meta.arch} (stride {meta.patch_size}, no attention)")
    click.echo(f"dino-run: {meta.family} {name} "
               f"{meta.img_size[0]}x{meta.img_size[1]} on {runtime.backend.name}, device "
               f"{runtime.device}, precision {precision_text(runtime.backend)}, batch "
               f"{runtime.batch_size}; {source.info.description}"
               f"{' (live)' if source.info.live else ''}", err=True)
    needs_image = opts.display or opts.outputs.save is not None
    render = opts.render if needs_image or opts.pca.save else None
    pipe = runtime.pipeline(source, max_frames=opts.max_frames, render=render,
                            keep_patch=False, pca=pca, track=track)
    display = open_display(pipe) if opts.display else None
    # Ctrl-C, SIGTERM, SIGHUP: stop the stages and commit the outputs; a second one aborts
    # the wait but still commits. Any other failure leaves earlier outputs as they were.
    with GracefulStop(pipe.stop) as stop:
        try:
            consume(pipe, outputs, display)
            if pipe.summary.frames == 0 and not stop.requested:
                raise no_frames(source, pipe.summary)
        except KeyboardInterrupt:
            outputs.commit()
            save_pca(pipe.pca_basis, opts.pca.save)
            raise
        except BaseException as e:
            pipe.summary.stop_reason = f"failed: {one_line(str(e))}"
            raise failed(e, outputs.failure_note(outputs.abort())) from None
        else:
            outputs.commit()
            save_pca(pipe.pca_basis, opts.pca.save)
        finally:
            if display is not None:
                display.close()
            click.echo(pipe.summary.format())
    return stop.exit_code if stop.requested else 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", required=True, help="Exported .onnx, TensorRT .engine (+ .json), or .pth checkpoint.")
@click.option("--camera", type=int, help="Camera index (e.g. 0 for /dev/video0).")
@click.option("--source", help="Video file, image, folder, glob ('frames/*.jpg') or rtsp/http URL.")
@click.option("--show-attention", is_flag=True, help="Draw the attention heat map over the frame.")
@click.option("--heads", default="mean", show_default=True, help="mean, all (a mosaic), or a head index K.")
@click.option("--mask", is_flag=True, help="Draw the mass-threshold mask as contours.")
@click.option("--threshold", type=float, default=0.6, show_default=True, help="Attention mass kept by the mask.")
@click.option("--pca", is_flag=True, help="Colour patches by the PCA of their tokens (needs the patch output).")
@click.option("--pca-fit", metavar="DIR|BASIS.npz", help="Fit the PCA basis on these images (or load a saved one) instead of the first frames.")
@click.option("--pca-save", metavar="BASIS.npz", help="Write the PCA basis used, for later runs.")
@click.option("--pca-foreground", is_flag=True, help="Drop the background: patches whose first component is below --pca-threshold.")
@click.option("--pca-threshold", type=float, default=0.0, show_default=True, help="Background threshold on the first component, in standard deviations.")
@click.option("--save", type=click.Path(dir_okay=False), help="Write the overlay video (.mp4 or .avi) at source resolution and fps.")
@click.option("--embeddings", type=click.Path(dir_okay=False), help="Write one CLS vector per frame (.npy or .jsonl).")
@click.option("--masks-dir", type=click.Path(file_okay=False), help="Write one PNG mask per frame into this folder.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing --save/--embeddings files and an earlier run's masks in "
                   "--masks-dir (once this run succeeds).")
@click.option("--track", "track_mask", metavar="MASK.png",
              help="Track the objects of this first-frame mask (a DAVIS palette PNG, or a 0/255 "
                   "mask for one object).")
@click.option("--track-box", metavar="X,Y,W,H", help="Track the object in this box of the first frame.")
@click.option("--track-json", type=click.Path(dir_okay=False),
              help="Write each frame's tracked objects (area, box, centroid) as JSON lines, live.")
@click.option("--track-context", type=int, default=TrackOptions.context, show_default=True,
              help="Last frames kept as context besides the first.")
@click.option("--track-radius", type=int, default=TrackOptions.radius, show_default=True,
              help="Neighbourhood half-size in patches (0: the whole frame).")
@click.option("--track-topk", type=int, default=TrackOptions.topk, show_default=True,
              help="Affinities kept per patch.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per inference call.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N, or an Intel GPU/NPU by its OpenVINO name (GPU, NPU).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="For backends that choose (openvino, torch): auto is bf16 where the CPU has "
                   "native bf16, else fp32. Other backends run a file in its exported precision.")
@click.option("--input-size", help="Checkpoints only: HxW to run at (default: short side 224, the source's aspect).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--no-display", is_flag=True, help="No window (headless machines, batch jobs).")
def command(model, camera, source, show_attention, heads, mask, threshold, pca, pca_fit, pca_save,
            pca_foreground, pca_threshold, save, embeddings, masks_dir, overwrite, track_mask,
            track_box, track_json, track_context, track_radius, track_topk, batch, backend,
            device, precision, input_size, max_frames, no_display) -> int:
    """Run a DINO model on a video, images, a stream or a camera."""
    if (camera is None) == (source is None):
        raise click.UsageError("give exactly one of --camera N and --source PATH|URL")
    if not 0.0 < threshold <= 1.0:
        raise click.BadParameter(f"{threshold}: expected a mass fraction in (0, 1]",
                                 param_hint="--threshold")
    opts = RunOptions(
        model=model, source=SourceSpec(camera=camera, path=source),
        render=RenderOptions(attention=show_attention, mask=mask, pca=pca),
        heads=parse_heads(heads),
        threshold=threshold if (mask or masks_dir) else None,
        outputs=OutputRequest(save, embeddings, masks_dir, overwrite, track_json,
                              track=bool(track_mask or track_box)), batch=batch,
        backend=backend,
        device=device, precision=precision, input_size=parse_size(input_size),
        max_frames=max_frames, display=not no_display,
        pca=PcaRequest(pca_fit, pca_save, pca_foreground, pca_threshold),
        track=TrackRequest(track_mask, track_box, track_json,
                           TrackOptions(track_context, track_radius, track_topk)))
    opts.pca.check(pca)
    opts.track.check(opts.display, opts.heads.mode == "all")
    return run(opts)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``dino-run``)."""
    # OpenCV and FFmpeg would print their own warnings for every bad frame or failed open;
    # the runtime counts and reports those itself.
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    # FFmpeg logs through its own channel ("moov atom not found"); -8 is AV_LOG_QUIET. Set in
    # main, not at import, and only when the user has not chosen a level.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    sys.exit(run_command(command, "dino-run", argv))


if __name__ == "__main__":
    main()
