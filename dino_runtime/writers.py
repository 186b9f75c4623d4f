"""Outputs: overlay video, CLS embeddings (.npy or .jsonl), mask PNGs.

Every output is written under a hidden temporary name beside its destination (mask PNGs into a
hidden folder inside ``--masks-dir``) and takes its final name only in :meth:`commit`, which
the caller runs when the run succeeded or was stopped by a signal it finalises (Ctrl-C,
SIGTERM, SIGHUP): a destination never holds a half-written file, and an earlier file is
replaced only by a complete one. After a failure the caller runs :meth:`abort` instead: the
earlier file stays as it was, and what was written is finalised (a playable video, a loadable
.npy) under a visible name, ``out.partial.mp4``, ``cls.partial.npy``, ``masks.partial/``.
A sink is also a context manager doing exactly that.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Iterator, Protocol

import cv2
import numpy as np

from dino_core.errors import OutputError
from dino_core.fileio import kept_partial_path, partial_path

from .render import upsample_mask
from .results import FrameResult

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
EMBEDDING_SUFFIXES = (".npy", ".jsonl")
COPY_CHUNK = 1 << 20
MASK_NAME = re.compile(r"\d{6,}(_head\d+)?\.png")  # 000042.png, 000042_head3.png
MASK_STAGING = ".dino-run.partial"                  # inside --masks-dir while a run writes


class Sink(Protocol):
    option: str        # the command-line option it writes, for messages
    path: Path         # the destination

    def write(self, result: FrameResult) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> Path | None: ...


@contextlib.contextmanager
def io_errors(option: str, path: Path) -> Iterator[None]:
    """An OSError while writing (disk full, file too large, folder gone) as one line."""
    try:
        yield
    except OSError as e:
        raise OutputError(f"{option} {path}: cannot write ({e.strerror or e})") from None


def check_parent(path: Path, option: str) -> Path:
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: folder {path.parent} does not exist")
    return path


class StagedFile:
    """One output file written to ``partial_path(path)``; subclasses write and ``_finish``."""

    option = "output"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = partial_path(path)
        self.started = False  # set by the first write: a run that fails before it leaves nothing

    def _finish(self, partial: bool = False) -> None:
        """Close the writer so that ``self.tmp`` is a complete file (``partial``: after a
        failure, keeping what could be written)."""

    def commit(self) -> None:
        """Finalise the file and give it its destination name (nothing if nothing was written)."""
        if not self.started:
            return
        with io_errors(self.option, self.path):
            self._finish()
            os.replace(self.tmp, self.path)
        self.started = False

    def abort(self) -> Path | None:
        """Leave the destination as it was; keep what was written as ``out.partial.mp4``.
        Returns where it went, or None (nothing written, or it could not be finalised)."""
        if not self.started:
            return None
        self.started = False
        kept = kept_partial_path(self.path)
        try:
            self._finish(partial=True)
            os.replace(self.tmp, kept)
            return kept
        except OSError:
            self.tmp.unlink(missing_ok=True)
            return None

    close = commit  # the name earlier versions used

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None or issubclass(kind, KeyboardInterrupt):
            self.commit()
        else:
            self.abort()


class VideoSink(StagedFile):
    """Rendered frames -> a video at the source's resolution and frame rate."""

    option = "--save"

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        super().__init__(check_parent(Path(path), self.option))
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise OutputError(f"--save {path}: unsupported video type; use "
                              f"{' or '.join(VIDEO_CODECS)}")
        self.fourcc = cv2.VideoWriter_fourcc(*codec)
        self.fps = fps
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        image = result.rendered if result.rendered is not None else result.frame.image
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])  # the first frame fixes (W, H)
            self.writer = cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, self.size)
            self.started = True
            if not self.writer.isOpened():
                raise OutputError(f"--save {self.path}: OpenCV cannot write "
                                  f"{self.path.suffix} video here")
        if (image.shape[1], image.shape[0]) != self.size:  # image folders of mixed sizes
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def _finish(self, partial: bool = False) -> None:
        if self.writer is not None:
            self.writer.release()  # writes the index (moov atom): the file is playable after this
            self.writer = None


class NpyEmbeddings(StagedFile):
    """One record per frame in a structured .npy: ``frame`` int64, ``timestamp`` float64,
    ``cls`` float32 (D,). Read with ``np.load(path)["cls"]`` -> (N, D).

    Rows are streamed to a temporary file, and the header (which holds the row count) is
    written in front of them when the file is finalised, so memory stays flat for long runs.
    """

    option = "--embeddings"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.raw_path = path.with_name(f".{path.name}.rows")
        self.raw = None
        self.dtype: np.dtype | None = None
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        with io_errors(self.option, self.path):
            if self.dtype is None:
                self.dtype = np.dtype([("frame", "<i8"), ("timestamp", "<f8"),
                                       ("cls", "<f4", (result.cls.shape[-1],))])
                self.raw = open(self.raw_path, "wb")
                self.started = True
            row = np.empty(1, self.dtype)
            row["frame"], row["timestamp"], row["cls"] = result.index, result.timestamp, result.cls
            self.raw.write(row.tobytes())
        self.rows += 1

    def _finish(self, partial: bool = False) -> None:
        try:
            try:
                self.raw.close()
            except OSError:
                if not partial:
                    raise
            rows = self.rows
            if partial:  # after a failed write: the whole rows that reached the file
                rows = min(rows, self.raw_path.stat().st_size // self.dtype.itemsize)
            header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                      "shape": (rows,)}
            left = rows * self.dtype.itemsize
            with open(self.tmp, "wb") as out, open(self.raw_path, "rb") as raw:
                np.lib.format.write_array_header_1_0(out, header)
                while left and (chunk := raw.read(min(COPY_CHUNK, left))):
                    out.write(chunk)
                    left -= len(chunk)
        finally:
            self.raw_path.unlink(missing_ok=True)


class JsonlEmbeddings(StagedFile):
    """One JSON object per line: ``{"frame", "timestamp", "cls": [D floats]}``."""

    option = "--embeddings"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.out = None

    def write(self, result: FrameResult) -> None:
        record = {"frame": int(result.index), "timestamp": round(float(result.timestamp), 6),
                  "cls": [float(f"{v:.7g}") for v in result.cls.tolist()]}
        with io_errors(self.option, self.path):
            if self.out is None:
                self.out = open(self.tmp, "w")
                self.started = True
            self.out.write(json.dumps(record) + "\n")

    def _finish(self, partial: bool = False) -> None:
        out, self.out = self.out, None
        try:
            out.close()  # closes the file even when flushing the buffered tail fails
        except OSError:
            if not partial:
                raise    # after a failure, the lines that were written are what is kept


def embeddings_sink(path: str | os.PathLike) -> StagedFile:
    path = check_parent(Path(path), "--embeddings")
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise OutputError(f"--embeddings {path}: use a .npy or .jsonl file")
    return NpyEmbeddings(path) if suffix == ".npy" else JsonlEmbeddings(path)


def earlier_masks(folder: Path) -> list[Path]:
    """The mask PNGs an earlier run left in ``folder`` (files named like this writer's)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if MASK_NAME.fullmatch(p.name) and p.is_file())


class MaskPngs:
    """One PNG per frame (per head with ``--heads all``), 0/255 at the frame's resolution.

    Written into ``DIR/.dino-run.partial/`` and moved into ``DIR`` by :meth:`commit`, which
    with ``overwrite`` also removes the earlier run's masks (and only those: other files in
    ``DIR`` are left alone), so that no old mask stays mixed in with the new ones.
    """

    option = "--masks-dir"

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False) -> None:
        self.path = self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"--masks-dir {folder}: exists and is not a folder")
        check_parent(self.folder, "--masks-dir")
        self.overwrite = overwrite
        self.staging = self.folder / MASK_STAGING
        self.created = False
        self.started = False

    def _start(self) -> None:
        self.created = not self.folder.exists()
        self.folder.mkdir(exist_ok=True)
        if self.staging.exists():  # left by a run that was killed (SIGKILL): ours by name
            shutil.rmtree(self.staging)
        self.staging.mkdir()
        self.started = True

    def write(self, result: FrameResult) -> None:
        if result.masks is None:
            raise ValueError("mask PNGs need masks: run with a --threshold")
        with io_errors(self.option, self.folder):
            if not self.started:
                self._start()
            h, w = result.frame.image.shape[:2]
            several = len(result.masks) > 1
            for k, mask in enumerate(result.masks):
                name = f"{result.index:06d}" + (f"_head{k}" if several else "") + ".png"
                if not cv2.imwrite(str(self.staging / name), upsample_mask(mask, (w, h))):
                    raise OutputError(f"--masks-dir {self.folder}: cannot write {name}")

    def commit(self) -> None:
        if not self.started:
            return
        with io_errors(self.option, self.folder):
            old = {p.name for p in earlier_masks(self.folder)} if self.overwrite else set()
            new = sorted(self.staging.iterdir())
            for path in new:
                os.replace(path, self.folder / path.name)
            for name in old - {p.name for p in new}:
                (self.folder / name).unlink(missing_ok=True)
            self.staging.rmdir()
        self.started = False

    def abort(self) -> Path | None:
        """Keep the masks written so far in ``DIR.partial/`` (replacing an earlier one that
        holds only masks), or where they are when that cannot be done."""
        if not self.started:
            return None
        self.started = False
        kept = kept_partial_path(self.folder)
        try:
            if kept.is_dir() and len(earlier_masks(kept)) == len(list(kept.iterdir())):
                shutil.rmtree(kept)
            os.replace(self.staging, kept)
        except OSError:
            kept = self.staging
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()
        return kept

    close = commit
