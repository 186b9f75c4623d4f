"""What ``dino-run`` writes, checked as a whole before anything runs, and committed as a whole.

Before the model is loaded (:func:`open_outputs`): an output that is also an input is refused
(``--save`` equal to ``--source``; ``--masks-dir`` equal to the source folder, or where a
``--source`` pattern would read the masks back as frames); an existing ``--save`` or
``--embeddings`` file, or a ``--masks-dir`` holding an earlier run's masks, needs
``--overwrite``; every output folder must accept a new file (the error gives the system's
reason). After the run, :meth:`Outputs.commit` when it succeeded or was stopped by a signal,
:meth:`Outputs.abort` when it failed (see :mod:`.writers`).

With several streams each has its own :class:`Outputs` (:func:`open_stream_outputs`), at paths
made from what was typed by :meth:`OutputRequest.for_stream`: ``{stream}`` replaced by the
stream's name, or a folder holding ``NAME.mp4`` / ``NAME.npy`` / ``NAME/``; a stream's outputs
are committed when that stream ends, and the checks above run against every stream's source.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dino_core.errors import OptionError, OutputError, UserError
from dino_core.fileio import probe_writable

from .results import FrameResult
from .sources import ImageFiles, Source, glob_matches
from .tracking.sinks import TrackJsonl, TrackPngs
from .writers import (
    MASK_NAME,
    MaskPngs,
    Sink,
    StagedFile,
    VideoSink,
    earlier_masks,
    embeddings_sink,
)


STREAM_FIELD = "{stream}"
_FIELD = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True)
class OutputRequest:
    """The outputs ``dino-run`` was asked for (paths as typed)."""

    save: str | None = None
    embeddings: str | None = None
    masks_dir: str | None = None
    overwrite: bool = False
    track_json: str | None = None  # tracked objects per frame, JSON lines
    track: bool = False            # --masks-dir holds the tracking's palette PNGs

    def check_fields(self) -> None:
        """:class:`OptionError` for a ``{...}`` in a path other than ``{stream}``."""
        for option, path in (("--save", self.save), ("--embeddings", self.embeddings),
                             ("--masks-dir", self.masks_dir), ("--track-json", self.track_json)):
            check_stream_field(option, path)

    def for_stream(self, name: str, several: bool, tracked: bool = False) -> "OutputRequest":
        """The paths stream ``name`` writes (see :func:`stream_file`); ``tracked``: it starts
        from a tracking seed (its ``--masks-dir`` holds the tracked objects)."""
        return OutputRequest(stream_file("--save", self.save, name, several, ".mp4"),
                             stream_file("--embeddings", self.embeddings, name, several, ".npy"),
                             stream_folder(self.masks_dir, name, several), self.overwrite,
                             stream_file("--track-json", self.track_json, name, several,
                                         ".jsonl"),
                             track=tracked)


def check_stream_field(option: str, path: str | None) -> None:
    if path is None:
        return
    other = [f for f in _FIELD.findall(path) if f != STREAM_FIELD]
    if other:
        raise OptionError(f"{option} {path}: unknown field {other[0]}; the one field an output "
                          f"path takes is {STREAM_FIELD} (the stream's name)")


def is_folder_path(path: str) -> bool:
    """A path given as a folder: one that ends with a separator, or an existing folder."""
    return path.endswith(("/", os.sep)) or Path(path).is_dir()


def stream_file(option: str, path: str | None, name: str, several: bool,
                suffix: str) -> str | None:
    """A per-stream file: ``{stream}`` replaced by ``name``; a folder -> ``FOLDER/name+suffix``;
    else the path itself, which only one stream may write."""
    if path is None:
        return None
    if STREAM_FIELD in path:
        return path.replace(STREAM_FIELD, name)
    if is_folder_path(path):
        return str(Path(path) / f"{name}{suffix}")
    if several:
        stem = Path(path)
        example = stem.with_name(f"{stem.stem}_{STREAM_FIELD}{stem.suffix}")
        raise OptionError(f"{option} {path}: several streams cannot write one file; put "
                          f"{STREAM_FIELD} in the name ({example}) or give a folder "
                          f"({stem.parent / 'out'}/)")
    return path


def stream_folder(path: str | None, name: str, several: bool) -> str | None:
    """``--masks-dir``: ``{stream}`` replaced, else ``DIR/name`` with several streams."""
    if path is None:
        return None
    if STREAM_FIELD in path:
        return path.replace(STREAM_FIELD, name)
    return str(Path(path) / name) if several else path


class Outputs:
    """Every sink of one run; written, committed and aborted together."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def write(self, result: FrameResult) -> None:
        for sink in self.sinks:
            sink.write(result)

    def commit(self) -> None:
        """Give every output its final name; the first failure is raised after trying all."""
        errors = []
        for sink in self.sinks:
            try:
                sink.commit()
            except Exception as e:  # keep committing the others; reported below
                errors.append(e)
        if errors:
            raise errors[0]

    def abort(self) -> list[Path]:
        """Leave every destination as it was; returns where partial output was kept."""
        return [kept for sink in self.sinks if (kept := sink.abort()) is not None]

    def failure_note(self, kept: list[Path]) -> str:
        """What a failed run says about its outputs ('' when it wrote nothing)."""
        if not kept:
            return ""
        untouched = [str(s.path) for s in self.sinks if s.path not in kept]  # live files keep theirs
        return (f"; nothing was written to {', '.join(untouched)}; "
                f"partial output kept as {', '.join(str(p) for p in kept)}")


def open_outputs(request: OutputRequest, source: Source, source_text: str | None,
                 fps: float, inputs: list[tuple[Source, str | None]] | None = None) -> Outputs:
    """The sinks for ``request``, after every check in the module docstring; ``inputs``: every
    (source, text as typed) of the run when it has several (default: this one)."""
    sinks: list[Sink] = []
    if request.save:
        sinks.append(VideoSink(request.save, fps))
    if request.embeddings:
        sinks.append(embeddings_sink(request.embeddings))
    if request.masks_dir:
        pngs = TrackPngs if request.track else MaskPngs
        sinks.append(pngs(request.masks_dir, request.overwrite))
    if request.track_json:
        sinks.append(TrackJsonl(request.track_json))
    for sink in sinks:
        for other, text in inputs or [(source, source_text)]:
            _check_not_an_input(sink, other, text)
    for sink in sinks:
        _check_not_earlier_output(sink, request.overwrite)
    for sink in sinks:
        _check_writable(sink)
    return Outputs(sinks)


def _input_files(source: Source) -> list[Path]:
    if isinstance(source, ImageFiles):
        return list(source.paths)
    target = getattr(source, "target", None)
    return [Path(target)] if isinstance(target, str) and Path(target).is_file() else []


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def _check_not_an_input(sink: Sink, source: Source, source_text: str | None) -> None:
    inputs = _input_files(source)
    if isinstance(sink, StagedFile):
        if any(_same(sink.path, p) for p in inputs):
            raise UserError(f"{sink.option} {sink.path} is also the --source; write it to "
                            "another file")
        return
    folder = sink.path
    if source_text and Path(source_text).expanduser().is_dir() and _same(
            folder, Path(source_text).expanduser()):
        raise UserError(f"--masks-dir {folder} is the --source folder: the masks would "
                        "overwrite or join its images; choose another folder")
    if source_text and glob.has_magic(source_text) and any(
            glob_matches(source_text, folder / name) for name in ("000000.png",
                                                                   "000000_head0.png")):
        raise UserError(f"--masks-dir {folder}: its masks would be read as frames by --source "
                        f"{source_text!r} on the next run; choose a folder the pattern does "
                        "not match")
    clash = next((p for p in inputs if MASK_NAME.fullmatch(p.name) and _same(p.parent, folder)),
                 None)
    if clash is not None:
        raise UserError(f"--masks-dir {folder} holds the --source image {clash.name}, which a "
                        "mask would replace; choose another folder")


def _check_not_earlier_output(sink: Sink, overwrite: bool) -> None:
    if overwrite:
        return
    if isinstance(sink, StagedFile):
        if sink.path.exists():
            raise OutputError(f"{sink.option} {sink.path} exists; add --overwrite to replace "
                              "it (it is replaced only when the run succeeds)")
        return
    count = len(earlier_masks(sink.path))
    if count:
        raise OutputError(f"--masks-dir {sink.path} holds {count} masks of an earlier run; add "
                          "--overwrite to replace them (only when the run succeeds), or choose "
                          "an empty folder")


def _check_writable(sink: Sink) -> None:
    path = sink.path
    folder = path if isinstance(sink, MaskPngs) and path.is_dir() else path.parent
    try:
        probe_writable(folder)
    except OSError as e:
        raise OutputError(f"{sink.option} {path}: cannot write in {folder} "
                          f"({e.strerror or e})") from None


def open_stream_outputs(request: OutputRequest, streams: list, texts: list[str | None],
                        tracked: list[bool] | None = None) -> None:
    """Give each stream (:class:`dino_runtime.streams.Stream`) its :class:`Outputs`, at the
    paths :meth:`OutputRequest.for_stream` makes; ``texts``: each source as typed; ``tracked``:
    which streams start from a tracking seed. Every check of :func:`open_outputs`, against
    every stream's source, and no two streams on one path."""
    several = len(streams) > 1
    tracked = tracked if tracked is not None else [request.track] * len(streams)
    inputs = [(stream.source, text) for stream, text in zip(streams, texts)]
    base = request.masks_dir
    if several and base and STREAM_FIELD not in base and Path(base).parent.is_dir():
        try:  # DIR of DIR/STREAM/, made like a single stream's --masks-dir is
            Path(base).mkdir(exist_ok=True)
        except OSError:
            pass  # the writability check below names the reason
    for stream, text, seeded in zip(streams, texts, tracked):
        stream.outputs = open_outputs(request.for_stream(stream.name, several, seeded),
                                      stream.source, text, stream.source.info.fps, inputs)
    owner: dict[str, str] = {}
    for stream in streams:
        for sink in stream.outputs.sinks:
            key = os.path.realpath(sink.path)
            if key in owner:
                raise OptionError(f"{sink.option} {sink.path}: streams {owner[key]} and "
                                  f"{stream.name} would both write it")
            owner[key] = stream.name
