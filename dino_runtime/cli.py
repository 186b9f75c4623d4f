"""``dino-run``: attention segmentation and embeddings on video, images and cameras.

    dino-run --model vits16.onnx --camera 0 --show-attention
    dino-run --model vits16.onnx --source clip.mp4 --mask --save out.mp4 --embeddings cls.npy --no-display
    dino-run --model vits16.onnx --source clip.mp4 --track first.png --masks-dir masks/ --no-display
    dino-run --model vits16.onnx --sources cameras.txt --show-attention --save runs/{stream}.mp4 --serve 8080

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
from .outputs import (
    OutputRequest,
    Outputs,
    check_stream_field,
    is_folder_path,
    open_stream_outputs,
    stream_file,
)
from .pca import PcaBasis, PcaOptions
from .pipeline import Pipeline, RunSummary, stream_pca_basis
from .postprocess import HeadSelection
from .preprocess import aspect_warning
from .render import RenderOptions
from .serve import FrameHub, LiveServer, ServeOptions
from .sources import ImageFiles, ReconnectPolicy, Source, SourceSpec
from .streams import Stream, StreamSpec, open_streams, read_sources_file, split_name, stream_specs
from .summary import overall_line, stream_line
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
        check_stream_field("--pca-save", self.save)
        if self.save and not self.save.endswith(".npz") and not is_folder_path(self.save):
            raise OptionError(f"--pca-save {self.save}: expected a .npz file name")


@dataclass(frozen=True)
class RunOptions:
    """Everything ``dino-run`` was asked to do, validated."""

    model: str
    streams: tuple[StreamSpec, ...]
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
    batch_wait: float | None = None  # seconds; None: as the streams say
    serve: ServeOptions | None = None
    tracks: tuple[TrackRequest, ...] = ()  # one per stream (none: no tracking asked)


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


def load_runtime(opts: RunOptions, streams: list[Stream]) -> Runtime:
    # No warm-up call: in a whole process it is one more batch of work (0.24 s for ViT-S/16
    # int8 at batch 8, 2 s for ViT-S/8 bf16), and the first batch of the run already pays the
    # one-time allocation it would have taken out (docs/benchmarks/runtime.md: start-up).
    runtime = Runtime(opts.model, backend=opts.backend, device=opts.device, batch_size=opts.batch,
                      heads=opts.heads.mode if opts.heads.mode != "index" else opts.heads.index,
                      threshold=opts.threshold, input_size=opts.input_size,
                      precision=opts.precision, frame_size=first_frame_hw(streams[0].source),
                      warmup=False)
    meta = runtime.metadata
    check_attention_options(opts, meta)
    if opts.render.pca and "patch" not in meta.outputs:
        raise UserError(f"--pca needs patch tokens, and {opts.model} exports only "
                               f"{', '.join(meta.outputs)}; re-export it with the patch output")
    if any(request.seeded for request in opts.tracks):
        runtime.require_patch("--track")
    for stream in streams:
        frame_hw = first_frame_hw(stream.source)
        hint = aspect_warning(frame_hw, meta.img_size, meta.patch_size) if frame_hw else None
        if hint:
            log.warning(hint if len(streams) == 1 else f"stream {stream.name}: {hint}")
    return runtime


def check_attention_options(opts: RunOptions, meta) -> None:
    """:class:`OptionError` (one line) for an attention view asked of a model without
    attention (a DINOv3 ConvNeXt), naming what it does give."""
    if meta.has_attention:
        return
    asked = [flag for flag, on in (
        ("--show-attention", opts.render.attention), ("--mask", opts.render.mask),
        ("--masks-dir", opts.outputs.masks_dir and not any(t.seeded for t in opts.tracks)),
        ("--heads", opts.heads.mode != "mean")) if on]
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


def save_pcas(streams: list[Stream], path: str | None) -> None:
    """Each stream's PCA basis, at ``path`` made per stream (``{stream}`` or a folder)."""
    for stream in streams:
        if path is not None:
            target = stream_file("--pca-save", path, stream.name, len(streams) > 1, ".npz")
            save_pca(stream_pca_basis(stream), target)


def consume(pipe: Pipeline, displays: dict[int, Display] | None, hub: FrameHub | None) -> None:
    """The main-thread stage: write every result, show it (window, live page), stop on q/Esc."""
    with contextlib.closing(pipe.run()) as results:
        for result in results:
            stream = pipe.stream_of(result)
            stream.outputs.write(result)
            shown = result.rendered if result.rendered is not None else result.frame.image
            if hub is not None:
                hub.publish(stream.index, shown)  # a reference: never waits for a viewer
            if displays is not None and not displays[stream.index].show(shown):
                pipe.stop("q pressed")
                break


def open_displays(streams: list[Stream]) -> dict[int, Display]:
    """One window per stream, named after it when there are several."""
    several = len(streams) > 1
    return {s.index: open_display(s, f"dino-run: {s.name}" if several else "dino-run")
            for s in streams}


def open_display(stream: Stream, title: str) -> Display:
    """A stream's window; with a tracker, a box drawn with the mouse (re)starts the stream's
    tracking and ``c`` clears it."""
    tracker = stream.post.tracker
    if tracker is None:
        return Display(title)
    from .tracking import Seed
    return Display(title,
                   on_box=lambda box: tracker.request(Seed(box=box, origin="the mouse box")),
                   keys={ord("c"): lambda: tracker.request(None)})


def about(stream: Stream) -> str:
    """How a stream is described in the banner and the summary."""
    size = stream.size or stream.source.info.size
    shown = f", {size[0]}x{size[1]}" if size else ""
    return (f"{stream.description}{shown} at {stream.source.info.fps:.1f} frames/s"
            f"{', live' if stream.live else ''}")


def banner(runtime: Runtime, streams: list[Stream]) -> str:
    meta = runtime.metadata
    registers = f" + {meta.num_registers} registers" if meta.num_registers else ""
    name = (f"{meta.arch}/{meta.patch_size}{registers}" if meta.has_attention
            else f"{meta.arch} (stride {meta.patch_size}, no attention)")
    if len(streams) == 1:
        info = streams[0].source.info
        what = f"{info.description}{' (live)' if info.live else ''}"
    else:
        what = f"{len(streams)} streams: " + ", ".join(
            f"{s.name} = {s.description}{' (live)' if s.live else ''}" for s in streams)
    return (f"dino-run: {meta.family} {name} "
            f"{meta.img_size[0]}x{meta.img_size[1]} on {runtime.backend.name}, device "
            f"{runtime.device}, precision {precision_text(runtime.backend)}, batch "
            f"{runtime.batch_size}; {what}")


def summary_text(pipe: Pipeline) -> str:
    """The closing lines: the run's, or each stream's and then the whole run's."""
    if len(pipe.streams) == 1:
        return pipe.summary.format()
    lines = [stream_line(s.name, about(s), s.summary) for s in pipe.streams]
    return "\n".join(lines + [overall_line(len(pipe.streams), pipe.summary)])


def open_server(options: ServeOptions | None, count: int) -> LiveServer | None:
    """Listen before the model loads (a port in use fails at once); serve after."""
    return None if options is None else LiveServer(options, FrameHub(count))


def pending(streams: list[Stream]) -> Outputs:
    """The outputs not committed yet: those of the streams that have not ended."""
    return Outputs([sink for s in streams if not s.finished for sink in s.outputs.sinks])


def empty_streams(streams: list[Stream]) -> SourceError:
    """The error of a run of several streams where some gave no frame at all."""
    empty = [s for s in streams if s.summary.frames == 0]
    details = "; ".join(f"{s.name} ({s.description}: {s.summary.dropped['corrupt']} corrupt, "
                        f"{s.summary.stop_reason})" for s in empty)
    return SourceError(f"no frame could be decoded from {len(empty)} of {len(streams)} streams: "
                       f"{details}; the other streams' outputs were written")


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
    streams = open_streams(list(opts.streams))
    # Seeds (the masks read, checked against each first frame) and every output check before
    # the model loads; files appear on the first write.
    requests = opts.tracks or (TrackRequest(),) * len(streams)
    seeds = [request.seed(first_frame_hw(stream.source))
             for stream, request in zip(streams, requests)]
    open_stream_outputs(opts.outputs, streams, [spec.source.path for spec in opts.streams],
                        tracked=[seed is not None for seed in seeds])
    server = open_server(opts.serve, len(streams))
    try:
        runtime = load_runtime(opts, streams)
        pca = pca_options(opts.pca, runtime) if opts.render.pca else PcaOptions()
    except BaseException:
        if server is not None:
            server.close()
        raise
    # A window to draw a box in, on a model with patch tokens: every stream's tracker waits
    # for one (a seeded stream starts from its seed).
    armed = (opts.display and "patch" in runtime.metadata.outputs
             and opts.heads.mode != "all")
    for stream, request, seed in zip(streams, requests, seeds):
        stream.track = request.config(seed, armed)
    click.echo(banner(runtime, streams), err=True)
    needs_image = opts.display or opts.outputs.save is not None or server is not None
    render = opts.render if needs_image or opts.pca.save else None
    pipe = runtime.pipeline(streams, max_frames=opts.max_frames, render=render,
                            keep_patch=False, pca=pca, batch_wait=opts.batch_wait,
                            on_stream_end=lambda stream: stream.outputs.commit())
    displays = open_displays(streams) if opts.display else None
    if server is not None:
        server.start(pipe.status)
        click.echo(f"dino-run: live view on {server.url}"
                   f"{'?token=...' if opts.serve.token else ''}", err=True)
    # Ctrl-C, SIGTERM, SIGHUP: stop the stages and commit the outputs; a second one aborts
    # the wait but still commits. Any other failure leaves earlier outputs as they were. A
    # stream that ends before the others has its outputs committed then (on_stream_end).
    with GracefulStop(pipe.stop) as stop:
        try:
            consume(pipe, displays, server.hub if server is not None else None)
            if pipe.summary.frames == 0 and not stop.requested:
                raise no_frames(streams[0].source, pipe.summary) if len(streams) == 1 \
                    else empty_streams(streams)
        except KeyboardInterrupt:
            pending(streams).commit()
            save_pcas(streams, opts.pca.save)
            raise
        except BaseException as e:
            pipe.fail(f"failed: {one_line(str(e))}")
            outputs = pending(streams)
            raise failed(e, outputs.failure_note(outputs.abort())) from None
        else:
            pending(streams).commit()
            save_pcas(streams, opts.pca.save)
        finally:
            for display in (displays or {}).values():
                display.close()
            if server is not None:
                server.close()
            click.echo(summary_text(pipe))
    if not stop.requested and any(s.summary.frames == 0 for s in streams):
        raise empty_streams(streams)
    return stop.exit_code if stop.requested else 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--model", required=True, help="Exported .onnx, TensorRT .engine (+ .json), or .pth checkpoint.")
@click.option("--camera", multiple=True, metavar="[NAME=]N", help="Camera index (e.g. 0 for /dev/video0); repeat for several cameras.")
@click.option("--source", multiple=True, metavar="[NAME=]S", help="Video file, image, folder, glob ('frames/*.jpg') or rtsp/http URL; repeat for several streams.")
@click.option("--sources", "sources_file", metavar="FILE", help="A file listing sources, one per line ([NAME=]SOURCE; a number is a camera; # comments).")
@click.option("--show-attention", is_flag=True, help="Draw the attention heat map over the frame.")
@click.option("--heads", default="mean", show_default=True, help="mean, all (a mosaic), or a head index K.")
@click.option("--mask", is_flag=True, help="Draw the mass-threshold mask as contours.")
@click.option("--threshold", type=float, default=0.6, show_default=True, help="Attention mass kept by the mask.")
@click.option("--pca", is_flag=True, help="Colour patches by the PCA of their tokens (needs the patch output).")
@click.option("--pca-fit", metavar="DIR|BASIS.npz", help="Fit the PCA basis on these images (or load a saved one) instead of the first frames.")
@click.option("--pca-save", metavar="BASIS.npz", help="Write the PCA basis used, for later runs ({stream} or a folder with several streams).")
@click.option("--pca-foreground", is_flag=True, help="Drop the background: patches whose first component is below --pca-threshold.")
@click.option("--pca-threshold", type=float, default=0.0, show_default=True, help="Background threshold on the first component, in standard deviations.")
@click.option("--save", metavar="OUT.mp4|DIR/", help="Write the overlay video (.mp4 or .avi) at source resolution and fps; with several streams put {stream} in the name or give a folder.")
@click.option("--embeddings", metavar="OUT.npy|OUT.jsonl|DIR/", help="Write one CLS vector per frame (.npy or .jsonl); {stream} or a folder as for --save.")
@click.option("--masks-dir", metavar="DIR", help="Write one PNG mask per frame into this folder (DIR/STREAM/ with several streams, or {stream} in it).")
@click.option("--overwrite", is_flag=True,
              help="Replace existing --save/--embeddings files and an earlier run's masks in "
                   "--masks-dir (once this run succeeds).")
@click.option("--track", "track_mask", multiple=True, metavar="[NAME=]MASK.png",
              help="Track the objects of this first-frame mask (a DAVIS palette PNG, or a 0/255 "
                   "mask for one object); with several streams NAME= says whose, repeat per stream.")
@click.option("--track-box", multiple=True, metavar="[NAME=]X,Y,W,H",
              help="Track the object in this box of the first frame (NAME= as for --track).")
@click.option("--track-json", metavar="OUT.jsonl|DIR/",
              help="Write each frame's tracked objects (area, box, centroid) as JSON lines, live; {stream} or a folder as for --save.")
@click.option("--track-context", type=int, default=TrackOptions.context, show_default=True,
              help="Last frames kept as context besides the first.")
@click.option("--track-radius", type=int, default=TrackOptions.radius, show_default=True,
              help="Neighbourhood half-size in patches (0: the whole frame).")
@click.option("--track-topk", type=int, default=TrackOptions.topk, show_default=True,
              help="Affinities kept per patch.")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Frames per inference call (from every stream).")
@click.option("--batch-wait", type=click.FloatRange(min=0), metavar="MS",
              help="How long a batch waits for more frames, from its oldest frame's decoding. "
                   "Default: files until full; one live source not at all; several with a live "
                   "one half a frame interval, at most 50 ms.")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N, or an Intel GPU/NPU by its OpenVINO name (GPU, NPU).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
              help="For backends that choose (openvino, torch): auto is bf16 where the CPU has "
                   "native bf16, else fp32. Other backends run a file in its exported precision.")
@click.option("--input-size", help="Checkpoints only: HxW to run at (default: short side 224, the source's aspect).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop each stream after this many frames.")
@click.option("--reconnects", type=click.IntRange(min=0), default=5, show_default=True,
              help="Reopen attempts of a camera or stream that stops delivering (back-off 0.5 s, 1, 2, 4, 8, 8 ...) before it ends.")
@click.option("--no-display", is_flag=True, help="No window (headless machines, batch jobs).")
@click.option("--serve", metavar="[HOST:]PORT",
              help="Serve a live page of every stream, /api/status and /metrics (127.0.0.1 unless HOST is given; no window then).")
@click.option("--serve-token", envvar="DINO_RUN_SERVE_TOKEN", metavar="TOKEN",
              help="Require this token (?token= or Authorization: Bearer); also from $DINO_RUN_SERVE_TOKEN.")
@click.option("--serve-viewers", type=click.IntRange(min=1, max=1000), metavar="N", help="Live page viewers at once (default 10).")
@click.option("--serve-kbps", type=click.IntRange(min=1), metavar="N", help="Bandwidth per viewer, kilobits/s (default 8000); frames over it are skipped.")
def command(model, camera, source, sources_file, show_attention, heads, mask, threshold, pca,
            pca_fit, pca_save, pca_foreground, pca_threshold, save, embeddings, masks_dir,
            overwrite, track_mask, track_box, track_json, track_context, track_radius, track_topk,
            batch, batch_wait, backend, device, precision, input_size, max_frames,
            reconnects, no_display, serve, serve_token, serve_viewers, serve_kbps) -> int:
    """Run a DINO model on videos, images, streams or cameras, one or several at once."""
    if not 0.0 < threshold <= 1.0:
        raise click.BadParameter(f"{threshold}: expected a mass fraction in (0, 1]",
                                 param_hint="--threshold")
    outputs = OutputRequest(save, embeddings, masks_dir, overwrite, track_json)
    outputs.check_fields()
    streams = tuple(parse_streams(source, camera, sources_file, reconnects))
    display = not no_display and serve is None
    tracks = parse_tracks(track_mask, track_box, track_json,
                          TrackOptions(track_context, track_radius, track_topk), streams,
                          display, parse_heads(heads).mode == "all")
    opts = RunOptions(
        model=model, streams=streams,
        render=RenderOptions(attention=show_attention, mask=mask, pca=pca),
        heads=parse_heads(heads),
        threshold=threshold if (mask or masks_dir) else None,
        outputs=outputs, batch=batch, backend=backend,
        device=device, precision=precision, input_size=parse_size(input_size),
        max_frames=max_frames, display=display,
        pca=PcaRequest(pca_fit, pca_save, pca_foreground, pca_threshold),
        batch_wait=batch_wait / 1000 if batch_wait is not None else None,
        serve=parse_serve(serve, serve_token, serve_viewers, serve_kbps), tracks=tracks)
    opts.pca.check(pca)
    return run(opts)


def parse_streams(sources: tuple[str, ...], cameras: tuple[str, ...], sources_file: str | None,
                  reconnects: int) -> list[StreamSpec]:
    """The streams asked for: --source, then --camera, then the --sources file's lines."""
    entries = [("source", s) for s in sources] + [("camera", c) for c in cameras]
    if sources_file is not None:
        entries += read_sources_file(sources_file)
    if not entries:
        raise click.UsageError("no source: give --camera N or --source PATH|URL (exactly one of "
                               "--camera and --source for one stream; repeat them, or give "
                               "--sources FILE, for several)")
    policy = ReconnectPolicy(attempts=reconnects)
    return stream_specs(entries, lambda **kw: SourceSpec(policy=policy, **kw))


def parse_tracks(masks: tuple[str, ...], boxes: tuple[str, ...], json: str | None,
                 options: TrackOptions, streams: tuple[StreamSpec, ...], display: bool,
                 heads_all: bool) -> tuple[TrackRequest, ...]:
    """Each stream's tracking request, in the streams' order: ``--track``/``--track-box``
    values are ``NAME=VALUE`` (the stream named NAME) or, with one stream, a plain VALUE; at
    most one seed per stream."""
    names = [s.name for s in streams]
    seeds: dict[str, tuple[str, str]] = {}
    for option, values in (("--track", masks), ("--track-box", boxes)):
        for text in values:
            name, value = split_name(text)
            if name is None or (len(names) == 1 and name not in names):
                if len(names) > 1:
                    raise OptionError(f"{option} {text}: with several streams, name the stream "
                                      f"it seeds: {option} NAME={text} (streams: "
                                      f"{', '.join(names)})")
                name, value = names[0], text
            elif name not in names:
                raise OptionError(f"{option} {text}: no stream is named {name!r} (streams: "
                                  f"{', '.join(names)})")
            if name in seeds:
                raise OptionError(f"stream {name}: one seed per stream; give one of --track "
                                  "MASK.png and --track-box X,Y,W,H, once")
            seeds[name] = (option, value)
    # --track-json without any seed needs a window to draw a box in (checked once, not per
    # unseeded stream).
    TrackRequest(json=json, options=options).check(display or bool(seeds), heads_all)
    requests = []
    for name in names:
        option, value = seeds.get(name, (None, None))
        request = TrackRequest(value if option == "--track" else None,
                               value if option == "--track-box" else None, json, options)
        request.check(display or bool(seeds), heads_all)
        requests.append(request)
    return tuple(requests)


def parse_serve(address: str | None, token: str | None, viewers: int | None,
                kbps: int | None) -> ServeOptions | None:
    if address is None:
        given = [name for name, v in (("--serve-token", token), ("--serve-viewers", viewers),
                                      ("--serve-kbps", kbps)) if v is not None]
        if given and not (given == ["--serve-token"] and "DINO_RUN_SERVE_TOKEN" in os.environ):
            raise OptionError(f"{given[0]} is an option of the live page: add --serve [HOST:]PORT")
        return None
    if token is not None and not (0 < len(token) <= 256 and token.isprintable()
                                  and token.isascii() and " " not in token):
        raise OptionError("--serve-token: expected 1..256 printable ASCII characters, no spaces")
    limits = {k: v for k, v in (("max_viewers", viewers), ("kbps", kbps)) if v is not None}
    return ServeOptions.parse(address, token=token, **limits)


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
