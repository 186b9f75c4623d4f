"""What ``dino-run`` writes, checked as a whole before anything runs, and committed as a whole.

Before the model is loaded (:func:`open_outputs`): an output that is also an input is refused
(``--save`` equal to ``--source``; ``--masks-dir`` equal to the source folder, or where a
``--source`` pattern would read the masks back as frames); an existing ``--save`` or
``--embeddings`` file, or a ``--masks-dir`` holding an earlier run's masks, needs
``--overwrite``; every output folder must accept a new file (the error gives the system's
reason). After the run, :meth:`Outputs.commit` when it succeeded or was stopped by a signal,
:meth:`Outputs.abort` when it failed (see :mod:`.writers`).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from dino_core.errors import OutputError, UserError
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


@dataclass(frozen=True)
class OutputRequest:
    """The outputs ``dino-run`` was asked for (paths as typed)."""

    save: str | None = None
    embeddings: str | None = None
    masks_dir: str | None = None
    overwrite: bool = False
    track_json: str | None = None  # tracked objects per frame, JSON lines
    track: bool = False            # --masks-dir holds the tracking's palette PNGs


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
                 fps: float) -> Outputs:
    """The sinks for ``request``, after every check in the module docstring."""
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
        _check_not_an_input(sink, source, source_text)
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
