"""Outputs: overlay video, CLS embeddings (.npy or .jsonl), mask PNGs.

Every file is written under a temporary name beside its destination and renamed when closed,
so a destination path never holds a half-written file; ``close`` also runs when the run is
interrupted, which is what makes the output of a Ctrl-C'd run complete and readable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from dino_core.errors import OutputError
from dino_core.fileio import partial_path

from .render import upsample_mask
from .results import FrameResult

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
EMBEDDING_SUFFIXES = (".npy", ".jsonl")
COPY_CHUNK = 1 << 20


class Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...
    def close(self) -> None: ...


def check_parent(path: Path, option: str) -> Path:
    if not path.parent.is_dir():
        raise OutputError(f"{option} {path}: folder {path.parent} does not exist")
    return path


class VideoSink:
    """Rendered frames -> a video at the source's resolution and frame rate."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = check_parent(Path(path), "--save")
        codec = VIDEO_CODECS.get(self.path.suffix.lower())
        if codec is None:
            raise OutputError(f"--save {path}: unsupported video type; use "
                              f"{' or '.join(VIDEO_CODECS)}")
        self.fourcc = cv2.VideoWriter_fourcc(*codec)
        self.fps = fps
        self.tmp = partial_path(self.path)
        self.writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, result: FrameResult) -> None:
        image = result.rendered if result.rendered is not None else result.frame.image
        if self.writer is None:
            self.size = (image.shape[1], image.shape[0])  # the first frame fixes (W, H)
            self.writer = cv2.VideoWriter(str(self.tmp), self.fourcc, self.fps, self.size)
            if not self.writer.isOpened():
                raise OutputError(f"--save {self.path}: OpenCV cannot write this video type")
        if (image.shape[1], image.shape[0]) != self.size:  # image folders of mixed sizes
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.release()  # writes the index (moov atom): the file is playable after this
        self.writer = None
        os.replace(self.tmp, self.path)


class NpyEmbeddings:
    """One record per frame in a structured .npy: ``frame`` int64, ``timestamp`` float64,
    ``cls`` float32 (D,). Read with ``np.load(path)["cls"]`` -> (N, D).

    Rows are streamed to a temporary file, and the header (which holds the row count) is
    written in front of them on close, so memory stays flat for long runs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.raw_path = path.with_name(f".{path.name}.rows")
        self.raw = None  # opened by the first write: a run that fails before it leaves nothing
        self.dtype: np.dtype | None = None
        self.rows = 0

    def write(self, result: FrameResult) -> None:
        if self.dtype is None:
            self.dtype = np.dtype([("frame", "<i8"), ("timestamp", "<f8"),
                                   ("cls", "<f4", (result.cls.shape[-1],))])
            self.raw = open(self.raw_path, "wb")
        row = np.empty(1, self.dtype)
        row["frame"], row["timestamp"], row["cls"] = result.index, result.timestamp, result.cls
        self.raw.write(row.tobytes())
        self.rows += 1

    def close(self) -> None:
        if self.raw is None:
            return
        self.raw.close()
        tmp = partial_path(self.path)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.rows,)}
        with open(tmp, "wb") as out, open(self.raw_path, "rb") as rows:
            np.lib.format.write_array_header_1_0(out, header)
            while chunk := rows.read(COPY_CHUNK):
                out.write(chunk)
        os.replace(tmp, self.path)
        self.raw_path.unlink()


class JsonlEmbeddings:
    """One JSON object per line: ``{"frame", "timestamp", "cls": [D floats]}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = partial_path(path)
        self.out = None  # opened by the first write

    def write(self, result: FrameResult) -> None:
        if self.out is None:
            self.out = open(self.tmp, "w")
        record = {"frame": int(result.index), "timestamp": round(float(result.timestamp), 6),
                  "cls": [float(f"{v:.7g}") for v in result.cls.tolist()]}
        self.out.write(json.dumps(record) + "\n")

    def close(self) -> None:
        if self.out is None:
            return
        self.out.close()
        os.replace(self.tmp, self.path)


def embeddings_sink(path: str | os.PathLike) -> Sink:
    path = check_parent(Path(path), "--embeddings")
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise OutputError(f"--embeddings {path}: use a .npy or .jsonl file")
    return NpyEmbeddings(path) if suffix == ".npy" else JsonlEmbeddings(path)


class MaskPngs:
    """One PNG per frame (per head with ``--heads all``), 0/255 at the frame's resolution."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"--masks-dir {folder}: exists and is not a folder")
        check_parent(self.folder, "--masks-dir")

    def write(self, result: FrameResult) -> None:
        self.folder.mkdir(exist_ok=True)
        if result.masks is None:
            raise ValueError("mask PNGs need masks: run with a --threshold")
        h, w = result.frame.image.shape[:2]
        several = len(result.masks) > 1
        for k, mask in enumerate(result.masks):
            name = f"{result.index:06d}" + (f"_head{k}" if several else "") + ".png"
            final = self.folder / name
            tmp = partial_path(final)
            if not cv2.imwrite(str(tmp), upsample_mask(mask, (w, h))):
                raise OutputError(f"--masks-dir {self.folder}: cannot write {name}")
            os.replace(tmp, final)

    def close(self) -> None:
        pass
