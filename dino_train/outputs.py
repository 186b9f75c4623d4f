"""The output folder: made before the run, locked for it, and given the resolved configuration.

Two ``dino-train`` processes on one folder would log every step twice and overwrite each other's
checkpoints, so the main process holds a lock on ``OUTPUT_DIR/train.lock`` for the whole run.
The lock is the kernel's (``fcntl.lockf``): it ends with the process that holds it, however that
process ends, so a run killed with SIGKILL leaves nothing that blocks the next one. The file
keeps the holder's PID for the message a second run prints.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_text

from . import distributed as D
from .builders import Trainer

try:
    import fcntl
except ImportError:  # Windows: no POSIX locks; the PID check below still applies
    fcntl = None

LOCK_NAME = "train.lock"
# errno values of a file system that cannot lock (some network and FUSE mounts)
NO_LOCKING = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


def make_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--output-dir {path}: exists and is not a directory") from None
    except PermissionError:
        raise UserError(f"--output-dir {path}: permission denied") from None


class OutputLock:
    """``OUTPUT_DIR/train.lock``, held from :meth:`acquire` to :meth:`release`."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.path = folder, folder / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        """Take the lock, or raise :class:`UserError` naming the PID of the process holding it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"--output-dir {self.folder}: cannot create {LOCK_NAME} "
                            f"({e.strerror})") from None
        try:
            holder = self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        if holder is not None:
            os.close(fd)
            raise UserError(f"--output-dir {self.folder}: another dino-train (PID {holder}) is "
                            "training in it; wait for it to end or stop it, or use another "
                            "--output-dir")
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _lock(self, fd: int) -> str | None:
        """None when this process now holds the lock, else the holder's PID (as written)."""
        if fcntl is not None:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return None
            except OSError as e:
                if e.errno not in NO_LOCKING:
                    return _read_pid(fd) or "unknown"
        # No kernel lock here: the PID written by the last holder decides, if it still runs.
        pid = _read_pid(fd)
        return pid if pid and int(pid) != os.getpid() and _alive(int(pid)) else None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the file releases the kernel lock
            self.fd = None


def _read_pid(fd: int) -> str | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def lock_output_dir(folder: Path, dist: D.DistInfo) -> OutputLock | None:
    """The main process takes the lock; every process stops if it could not (a collective)."""
    lock, error = None, None
    if dist.is_main:
        try:
            lock = OutputLock(folder).acquire()
        except UserError as e:
            error = e
    if D.any_process(error is not None, dist):
        raise error or UserError(f"--output-dir {folder}: the main process could not lock it")
    return lock


def write_config(t: Trainer) -> None:
    """``config.json``: every option, and what auto and the world size resolved to."""
    if not t.ctx.dist.is_main:
        return
    resolved = {**dataclasses.asdict(t.cfg), "resolved": {
        "arch": t.cfg.resolved_arch().short_name, "device": str(t.ctx.device),
        "precision": t.ctx.precision, "world_size": t.ctx.dist.world_size,
        "total_batch": t.cfg.batch_size_per_gpu * t.ctx.dist.world_size,
        "scaled_lr": t.cfg.lr * t.cfg.batch_size_per_gpu * t.ctx.dist.world_size / 256.0,
        "iters_per_epoch": t.schedules.iters_per_epoch, "ncrops": t.cfg.crops().ncrops,
        "skipped_at_scan": t.skipped_at_scan}}
    atomic_write_text(json.dumps(resolved, indent=2) + "\n", t.out / "config.json")
