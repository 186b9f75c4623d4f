"""Several sources in one run: what the user typed -> named :class:`StreamSpec` objects, and the
per-stream object the pipeline keeps for each (:class:`Stream`).

Each source is given as ``--source S`` / ``--camera N`` (repeatable), or one per line in a
sources file (``--sources FILE``: blank lines and ``#`` comments skipped, a line of digits is a
camera index). Any of them may be named ``NAME=SOURCE``; a name is what ``{stream}`` becomes in
output paths and what the live page and the summary show. Unnamed sources are named after what
they read (``01_dog`` for ``clips/01_dog.mp4``, ``camera0``, ``front`` for
``rtsp://host/front``), and a name taken twice gets ``-2``, ``-3``.
"""
from __future__ import annotations

import glob
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from dino_core.errors import OptionError, SourceError

from .sources import Source, SourceSpec, open_source

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_SOURCES_FILE_BYTES = 1 << 20    # a list of sources, not a data file


@dataclass(frozen=True)
class StreamSpec:
    """One source with its name."""

    name: str
    source: SourceSpec


def split_name(text: str) -> tuple[str | None, str]:
    """``NAME=SOURCE`` -> (NAME, SOURCE); (None, text) when ``text`` has no name.

    A prefix counts as a name only when it is a valid name (letters, digits, ``_.-``) and the
    whole text is not an existing path: ``a=b.mp4`` that exists is a file, and a URL's query
    (``rtsp://h/s?x=1``) never is a name because ``://`` comes first.
    """
    head, sep, rest = text.partition("=")
    if not sep or not NAME.fullmatch(head) or not rest or os.path.exists(text):
        return None, text
    return head, rest


def default_name(spec: SourceSpec) -> str:
    """A file-system-safe name for a source the user did not name."""
    if spec.camera is not None:
        return f"camera{spec.camera}"
    text = spec.path or ""
    if "://" in text:
        parts = urlsplit(text)
        segments = [s for s in parts.path.split("/") if s]
        base = Path(segments[-1]).stem if segments else (parts.hostname or "stream")
    elif glob.has_magic(text):
        fixed = [p for p in Path(text).parts if not glob.has_magic(p)]
        base = Path(fixed[-1]).name if fixed else "images"
    else:
        base = Path(text).stem or Path(text).name
    return _UNSAFE.sub("_", base).strip("_.-")[:64] or "stream"


def parse_camera(text: str) -> int:
    """``--camera`` text -> index; :class:`OptionError` with the valid range otherwise."""
    value = text.strip()
    if not re.fullmatch(r"-?\d+", value):
        raise OptionError(f"--camera {text}: expected a camera index 0..9999 (0 is /dev/video0)")
    return int(value)


def read_sources_file(path: str) -> list[tuple[str, str]]:
    """Lines of a sources file -> (kind, text) with kind ``camera`` or ``source``."""
    try:
        size = os.path.getsize(path)
        if size > MAX_SOURCES_FILE_BYTES:
            raise SourceError(f"--sources {path}: {size} bytes; a sources file lists one source "
                              "per line (at most 1 MiB)")
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise SourceError(f"--sources {path}: no such file") from None
    except UnicodeDecodeError:
        raise SourceError(f"--sources {path}: not a text file (UTF-8), one source per line") \
            from None
    except OSError as e:
        raise SourceError(f"--sources {path}: cannot read ({e.strerror or e})") from None
    entries = []
    for line in lines:
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, rest = split_name(text)
        kind = "camera" if rest.isdecimal() else "source"
        entries.append((kind, text))
    if not entries:
        raise SourceError(f"--sources {path}: lists no source (one per line; # comments)")
    return entries


def stream_specs(entries: list[tuple[str, str]], make_spec=SourceSpec) -> list[StreamSpec]:
    """(kind, text) in the order given -> named specs; names unique.

    ``kind`` is ``camera`` (text ``[NAME=]N``) or ``source`` (``[NAME=]PATH|URL``).
    """
    named = []
    for kind, text in entries:
        name, rest = split_name(text)
        spec = make_spec(camera=parse_camera(rest)) if kind == "camera" else make_spec(path=rest)
        named.append((name, spec))
    given = [n for n, _ in named if n is not None]
    twice = sorted({n for n in given if given.count(n) > 1})
    if twice:
        raise OptionError(f"stream name {twice[0]!r} is given to more than one source; "
                          "names must be unique")
    taken = set(given)
    specs = []
    for name, spec in named:
        if name is None:
            name = _unique(default_name(spec), taken)
            taken.add(name)
        specs.append(StreamSpec(name, spec))
    return specs


def _unique(base: str, taken: set[str]) -> str:
    if base not in taken:
        return base
    return next(f"{base}-{i}" for i in range(2, len(taken) + 3) if f"{base}-{i}" not in taken)


@dataclass
class Stream:
    """One source and everything that belongs to it alone, in one place: its post-processing
    state (``post``: the PCA basis fitted on its own frames, and its tracker, started from its
    own seed ``track`` when it has one), its writers (``outputs``, set by the caller), its
    counters (``summary``) and the live counters the status page reads (``live_stats``).

    The pipeline fills ``post``, ``summary`` and ``live_stats``; ``track`` and ``outputs`` are
    the caller's.
    """

    name: str
    source: Source
    index: int = 0
    live: bool = False
    post: Any = None
    track: Any = None                         # its TrackConfig, when it has its own seed
    summary: Any = None
    live_stats: Any = None
    outputs: Any = None
    size: tuple[int, int] | None = None       # (W, H) of its frames, once known
    ending: threading.Event = field(default_factory=threading.Event)  # asked to end early
    finished: bool = False                    # its end has reached the consumer

    @property
    def description(self) -> str:
        return self.source.info.description


def open_streams(specs: list[StreamSpec],
                 open_one: Callable[[SourceSpec], Source] = open_source) -> list[Stream]:
    """Open every source (several at once: a camera or stream URL can take seconds to answer);
    the first failure in the order given is raised, after closing the others."""
    def attempt(spec: StreamSpec):
        try:
            return open_one(spec.source)
        except BaseException as e:  # raised below, in order
            return e

    if len(specs) == 1:
        opened = [open_one(specs[0].source)]
    else:
        with ThreadPoolExecutor(min(len(specs), 16), thread_name_prefix="dino-run-open") as pool:
            opened = list(pool.map(attempt, specs))
    failure = next((o for o in opened if isinstance(o, BaseException)), None)
    if failure is not None:
        for source in opened:
            if not isinstance(source, BaseException):
                source.close()
        raise failure
    return [Stream(spec.name, source, index=i, live=source.info.live)
            for i, (spec, source) in enumerate(zip(specs, opened))]
