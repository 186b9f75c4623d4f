"""Atomic file output: write beside the target, then rename, so no reader sees half a file."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched.
    The file gets the permissions a plain ``open`` would give (mkstemp's are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(data: bytes | memoryview, path: str | os.PathLike) -> Path:
    """``data`` to ``path`` through :func:`atomic_output`; returns the path."""
    with atomic_output(path) as f:
        f.write(data)
    return Path(path)


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_output(path, "w") as f:
        f.write(text)
    return Path(path)


def partial_path(path: str | os.PathLike) -> Path:
    """Hidden temporary name beside ``path`` that keeps its suffix (writers such as OpenCV's
    pick the container by it): ``out.mp4`` -> ``.out.partial.mp4``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def kept_partial_path(path: str | os.PathLike) -> Path:
    """Visible name under which a failed run keeps its partial output beside ``path``:
    ``out.mp4`` -> ``out.partial.mp4``, ``masks`` -> ``masks.partial``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a file in ``folder``; the OSError says why it cannot be written
    (permissions, a read-only file system, no space), which ``os.access`` does not."""
    fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    os.close(fd)
    os.unlink(probe)
