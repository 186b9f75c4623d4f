"""Frame sources: camera index, video file, image, folder or glob of images, RTSP/HTTP URL.

Every source yields :class:`Frame` objects (BGR uint8 images, OpenCV's native layout) and keeps
:class:`SourceStats`: corrupt frames are skipped and counted, and live sources (cameras and
streams) that stop delivering frames are reopened with exponential back-off a few times before
the source ends with ``stats.disconnected`` set. ``open_source`` turns what the user typed into
the right source and fails with a one-line :class:`SourceError` when nothing can be read.
"""
from __future__ import annotations

import glob
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import cv2
import numpy as np

from dino_core.constants import IMAGE_SUFFIXES
from dino_core.errors import OptionError, SourceError

# Schemes whose streams have no end: a failed read is a disconnect, never the end of a file.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "tcp", "srt")
URL_SCHEMES = LIVE_SCHEMES + ("http", "https")
DEFAULT_LIVE_FPS = 30.0
# A file that fails this many reads in a row before its stated length is treated as ended.
MAX_CONSECUTIVE_BAD_READS = 25
# Camera indices OpenCV is given. It segfaults on -1 (4.x and 5.0) and raises on values past
# int32; devices are /dev/video0..255 on Linux, and OpenCV's legacy "backend offset + index"
# form (e.g. 200 = V4L2 camera 0) stays below 10000.
MAX_CAMERA_INDEX = 9999


@dataclass
class Frame:
    """One decoded frame. ``image`` is (H, W, 3) uint8 BGR."""

    index: int                 # position in the source; skipped (corrupt) frames leave gaps
    timestamp: float           # seconds: container time for files, since opening for live sources
    image: np.ndarray
    name: str = ""             # file name, for image sources
    read_time: float = 0.0     # time.perf_counter() when decoded, for latency
    stream: str = ""           # the name of the stream it belongs to, in a run of several


@dataclass(frozen=True)
class SourceInfo:
    kind: str                  # camera | video | images | stream
    description: str
    live: bool                 # True: latency first, stale frames dropped, reconnect on failure
    fps: float
    size: tuple[int, int] | None  # (W, H) of the first frame, when known before reading
    frame_count: int | None = None


@dataclass
class SourceStats:
    corrupt: int = 0           # frames that could not be decoded, skipped
    reconnects: int = 0        # reopen attempts of a live source
    disconnected: bool = False  # the live source was lost for good


@dataclass(frozen=True)
class ReconnectPolicy:
    """Back-off for live sources: wait ``first_delay``, then ``factor`` times longer, ...."""

    attempts: int = 5
    first_delay: float = 0.5
    factor: float = 2.0
    max_delay: float = 8.0

    def delays(self) -> list[float]:
        return [min(self.first_delay * self.factor ** i, self.max_delay)
                for i in range(self.attempts)]


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` a source uses; tests inject stand-ins."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def get(self, prop: int) -> float: ...
    def release(self) -> None: ...


CaptureFactory = Callable[[Any], Capture]
# Live URLs (rtsp, ...): an unreachable host fails its open after this long, a stream that goes
# silent fails its read after this long, and the reconnect policy takes over; FFmpeg's own
# default is 30 s for each.
STREAM_OPEN_TIMEOUT_MS = 10_000
STREAM_READ_TIMEOUT_MS = 5_000


def open_capture(target: int | str) -> cv2.VideoCapture:
    """``cv2.VideoCapture(target)``, with the timeouts above for live URLs."""
    if isinstance(target, str) and target.split("://", 1)[0].lower() in LIVE_SCHEMES:
        return cv2.VideoCapture(target, cv2.CAP_FFMPEG,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_OPEN_TIMEOUT_MS,
                                 cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_READ_TIMEOUT_MS])
    return cv2.VideoCapture(target)


class Source(Protocol):
    info: SourceInfo
    stats: SourceStats
    interrupt: threading.Event  # set to end frames() early (also cuts a reconnect wait short)

    def frames(self) -> Iterator[Frame]: ...
    def close(self) -> None: ...


def _valid_image(image: Any) -> bool:
    return (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
            and image.dtype == np.uint8 and image.shape[0] > 0 and image.shape[1] > 0)


class ImageFiles:
    """A list of image files, read in order; unreadable ones are skipped and counted."""

    def __init__(self, paths: list[Path], description: str, fps: float = 25.0) -> None:
        if not paths:
            raise SourceError(f"{description}: no image files")
        self.paths = paths
        self.info = SourceInfo("images", description, live=False, fps=fps, size=None,
                               frame_count=len(paths))
        self.stats = SourceStats()
        self.interrupt = threading.Event()

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            if self.interrupt.is_set():
                return
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if not _valid_image(image):
                self.stats.corrupt += 1
                continue
            yield Frame(index, index / self.info.fps, image, name=path.name)

    def close(self) -> None:
        pass


class CaptureSource:
    """A video file, camera or URL read through ``cv2.VideoCapture`` (or an injected stand-in)."""

    def __init__(self, target: int | str, kind: str, live: bool | None = None,
                 policy: ReconnectPolicy = ReconnectPolicy(),
                 capture_factory: CaptureFactory = open_capture) -> None:
        self.target = target
        self.policy = policy
        self.factory = capture_factory
        self.stats = SourceStats()
        self.interrupt = threading.Event()
        self._cap = capture_factory(target)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(_open_failure(target, kind))
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if live is None:  # a URL: finite (a file served over HTTP) unless it reports no length
            live = count <= 0
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < fps < 1000:
            fps = DEFAULT_LIVE_FPS
        w, h = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.info = SourceInfo(kind, f"{kind} {target}", live=live, fps=fps,
                               size=(w, h) if w > 0 and h > 0 else None,
                               frame_count=count if count > 0 and not live else None)
        self._opened_at = time.perf_counter()

    def frames(self) -> Iterator[Frame]:
        index, bad_run = 0, 0
        while not self.interrupt.is_set():
            ok, image = self._cap.read()
            if ok and _valid_image(image):
                # Failed reads followed by a good frame were corrupt frames; failures at the
                # very end (a frame count that overestimates the length) are not counted.
                self.stats.corrupt += bad_run
                yield Frame(index, self._timestamp(index), image)
                index, bad_run = index + 1, 0
            elif ok:
                self.stats.corrupt += 1  # decoded to something that is not a BGR image
                index += 1
            elif self._more_expected(index, bad_run):
                index, bad_run = index + 1, bad_run + 1
            elif not self.info.live or not self._reconnect():
                self.stats.disconnected = self.info.live and not self.interrupt.is_set()
                return

    def _more_expected(self, index: int, bad_run: int) -> bool:
        """A failed read of a file before its stated end is a corrupt frame, not the end."""
        count = self.info.frame_count
        return (not self.info.live and count is not None and index < count - 1
                and bad_run < MAX_CONSECUTIVE_BAD_READS)

    def _timestamp(self, index: int) -> float:
        if self.info.live:
            return time.perf_counter() - self._opened_at
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return msec / 1000.0 if msec and msec > 0 else index / self.info.fps

    def _reconnect(self) -> bool:
        """Reopen the live source with back-off; False when every attempt failed."""
        self._cap.release()
        for delay in self.policy.delays():
            if self.interrupt.wait(delay):
                return False
            self.stats.reconnects += 1
            cap = self.factory(self.target)
            if cap.isOpened():
                self._cap = cap
                return True
            cap.release()
        return False

    def close(self) -> None:
        self._cap.release()


def _open_failure(target: int | str, kind: str) -> str:
    if kind == "camera":
        return (f"cannot open camera {target}: no such device or it is busy "
                "(list devices with `ls /dev/video*`)")
    if kind == "stream":
        return f"cannot open stream {target}: unreachable, or not a stream FFmpeg can decode"
    return f"{target}: not a video file that OpenCV/FFmpeg can decode"


@dataclass(frozen=True)
class SourceSpec:
    """What the user asked for: exactly one of ``camera`` and ``path``."""

    camera: int | None = None
    path: str | None = None        # video, image, folder, glob or URL
    image_fps: float = 25.0        # frame rate given to image sequences (for --save)
    policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    capture_factory: CaptureFactory = open_capture

    def __post_init__(self) -> None:
        camera = self.camera
        if camera is not None and (isinstance(camera, bool) or not isinstance(camera, int)
                                   or not 0 <= camera <= MAX_CAMERA_INDEX):
            raise OptionError(f"--camera {camera}: expected a camera index 0..{MAX_CAMERA_INDEX} "
                              "(0 is /dev/video0)")


def open_source(spec: SourceSpec) -> Source:
    """The source for ``spec``; :class:`SourceError` (one line) when it cannot be read."""
    if (spec.camera is None) == (spec.path is None):
        raise SourceError("give exactly one source: --camera N or --source PATH|URL")
    if spec.camera is not None:
        return CaptureSource(spec.camera, "camera", live=True, policy=spec.policy,
                             capture_factory=spec.capture_factory)
    text = spec.path
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme not in URL_SCHEMES:
            raise SourceError(f"{text}: unsupported URL scheme {scheme!r}; "
                              f"use one of {', '.join(URL_SCHEMES)}")
        return CaptureSource(text, "stream", live=True if scheme in LIVE_SCHEMES else None,
                             policy=spec.policy, capture_factory=spec.capture_factory)
    return _open_path(text, spec)


def _open_path(text: str, spec: SourceSpec) -> Source:
    path = Path(text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{text}: folder has no images ({', '.join(IMAGE_SUFFIXES)})")
        return ImageFiles(files, f"folder {text}", spec.image_fps)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return ImageFiles([path], f"image {text}", spec.image_fps)
        return CaptureSource(str(path), "video", live=False, capture_factory=spec.capture_factory)
    if glob.has_magic(text):
        files = [p for p in expand_glob(str(path)) if p.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise SourceError(f"{text}: the pattern matches no image files")
        return ImageFiles(files, f"glob {text}", spec.image_fps)
    raise SourceError(f"{text}: no such file or folder")


def expand_glob(pattern: str) -> list[Path]:
    """The files ``pattern`` matches (``glob.glob(recursive=True)`` syntax), sorted, each real
    file once (the first of its names).

    ``glob.glob`` follows symlinked folders without remembering them: one link back to a parent
    repeats every file below it until the path gets too long (3 images became 83 frames), and
    two such links make its search exponential. Here a ``**`` pattern walks each real folder
    once and matches every path below the pattern's fixed prefix against the pattern.
    """
    parts = pattern.split(os.sep)
    if "**" not in parts:  # fixed depth: glob cannot loop, only list a file twice
        return _first_names(Path(p) for p in glob.glob(pattern) if os.path.isfile(p))
    fixed = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    base = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else ".")
    rest = re.compile(_translate(parts[fixed:]))
    found, seen = [], set()
    for folder, subfolders, files in os.walk(base, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back to a folder already walked
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        relative = os.path.relpath(folder, base)
        prefix = "" if relative == "." else relative + os.sep
        found.extend(Path(folder, name) for name in files if rest.fullmatch(prefix + name))
    return _first_names(found)


def glob_matches(pattern: str, path: str | os.PathLike) -> bool:
    """Whether ``pattern`` (as :func:`expand_glob` reads it) matches ``path``, which need not
    exist; both taken relative to the current folder."""
    pattern = os.path.abspath(os.path.expanduser(pattern))
    return re.fullmatch(_translate(pattern.split(os.sep)), os.path.abspath(path)) is not None


def _first_names(paths) -> list[Path]:
    """Sorted, keeping the first path of each real file."""
    kept, seen = [], set()
    for path in sorted(paths):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            kept.append(path)
    return kept


def _translate(parts: list[str]) -> str:
    """Pattern segments -> a regex over a relative path, with glob's rules: ``**`` is any
    number of folders, ``*``/``?``/``[...]`` stay within one name, and a wildcard never
    matches a leading dot."""
    sep = re.escape(os.sep)
    name = f"(?!\\.)[^{sep}]+"
    out = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "**":
            out.append(f"(?:{name}{sep})*" + (name if last else ""))
        else:
            out.append(_translate_name(part, sep) + ("" if last else sep))
    return "".join(out)


def _translate_name(part: str, sep: str) -> str:
    """One path segment of a pattern -> regex (``fnmatch`` rules, never across ``sep``)."""
    regex = "" if part.startswith(".") else r"(?!\.)"
    i = 0
    while i < len(part):
        c, i = part[i], i + 1
        if c == "*":
            regex += f"[^{sep}]*"
        elif c == "?":
            regex += f"[^{sep}]"
        elif c == "[" and (end := _class_end(part, i)) is not None:
            body = part[i:end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            regex += f"[{body}]"
            i = end + 1
        else:
            regex += re.escape(c)
    return regex


def _class_end(part: str, i: int) -> int | None:
    """Index of the ``]`` closing a class that opens before ``i``, or None (a literal ``[``)."""
    j = i + (part[i:i + 1] == "!")
    j += part[j:j + 1] == "]"
    end = part.find("]", j)
    return end if end >= 0 else None
