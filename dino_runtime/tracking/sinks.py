"""What ``dino-run --track`` writes: DAVIS palette PNGs in ``--masks-dir`` and the live
``--track-json`` file of every frame's objects.

The PNGs are staged and committed like the attention masks (:class:`~dino_runtime.writers.
MaskPngs`, whose commit and abort they reuse). The JSON-lines file is the one output written
under its final name while the run goes on, because it is there to be read while the stream
runs (``tail -f``, a program polling it): each frame's line is written whole and flushed, so
a reader never meets half a line, and a run that fails leaves every line of the frames it
finished. An existing file still needs ``--overwrite``; it is then replaced when the first
frame is written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..results import FrameResult
from ..writers import MaskPngs, StagedFile, check_parent, io_errors
from .palette import encode_palette_png


TAIL = 1 << 16   # bytes read back to find the end of the last whole line


class TrackPngs(MaskPngs):
    """``--masks-dir`` while tracking: ``NNNNNN.png`` per frame, an 8-bit palette PNG of the
    object ids at the frame's resolution (all 0 on a frame where nothing is tracked)."""

    def write(self, result: FrameResult) -> None:
        with io_errors(self.option, self.folder):
            if not self.started:
                self._start()
            track = result.track
            labels = (track.labels if track is not None
                      else np.zeros(result.frame.image.shape[:2], np.uint8))
            (self.staging / f"{result.index:06d}.png").write_bytes(encode_palette_png(labels))


def track_record(result: FrameResult) -> dict:
    """One frame's line: index, timestamp, whether an object is tracked, whether tracking
    (re)started on it, and each object's id, area, box and centroid in the frame's pixels."""
    track = result.track
    return {"frame": int(result.index), "timestamp": round(float(result.timestamp), 6),
            "tracking": track is not None, "started": bool(track is not None and track.started),
            "objects": [obj.as_dict() for obj in track.objects] if track is not None else []}


class TrackJsonl(StagedFile):
    """``--track-json FILE``: one JSON object per frame (:func:`track_record`), written live."""

    option = "--track-json"

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(check_parent(Path(path), self.option))
        self.out = None

    def write(self, result: FrameResult) -> None:
        line = json.dumps(track_record(result), separators=(",", ":")) + "\n"
        with io_errors(self.option, self.path):
            if self.out is None:
                self.out = open(self.path, "w")
                self.started = True
            self.out.write(line)
            self.out.flush()     # a reader following the file sees every frame as it ends

    def commit(self) -> None:
        if self.out is not None:
            out, self.out = self.out, None
            with io_errors(self.option, self.path):
                out.close()
        self.started = False

    def abort(self) -> Path | None:
        """Close the file; it keeps the lines written (returned as where output was kept)."""
        if self.out is None:
            return None
        out, self.out = self.out, None
        try:
            out.close()
        except OSError:
            pass
        self.started = False
        _cut_partial_line(self.path)
        return self.path


def _cut_partial_line(path: Path) -> None:
    """Drop a last line that a failed write (a full disk) left without its end."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - TAIL))
            tail = f.read()
            if tail and not tail.endswith(b"\n"):
                f.truncate(size - len(tail) + tail.rfind(b"\n") + 1)
    except OSError:
        pass
