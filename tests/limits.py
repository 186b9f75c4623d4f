"""Hostile conditions for tests: a time box for failures that are hangs (symlink loops, fuzzed
inputs), and a folder this process cannot write in."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

import pytest


class TimeBoxExceeded(AssertionError):
    """The code under test ran past its time box (the failure it shows is a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str = "the call") -> Iterator[None]:
    """Raise :class:`TimeBoxExceeded` in the main thread after ``seconds``.

    SIGALRM interrupts Python code between bytecodes (glob's recursion, a decoder loop); a call
    stuck inside one C function is interrupted when it returns. Main thread only (pytest's).
    """
    assert threading.current_thread() is threading.main_thread()

    def expire(signum, frame):
        raise TimeBoxExceeded(f"{what} ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a read-only folder for a non-root user;
    for root (whom permissions do not stop) /sys, where sysfs refuses new files."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        open("/sys/dino-edge-probe", "w").close()
    except OSError:
        return Path("/sys")
    pytest.skip("running as root where /sys accepts files: no folder here is unwritable")


def judge(call, expected: type[BaseException], seconds: float, what: str):
    """Run ``call`` in a time box: ("ok", its result, None); ("refused", None, None) for an
    ``expected`` error on one line (else the third item says what is wrong with it); or
    ("failed", None, the exception) for anything else: what a fuzz test looks for."""
    try:
        with time_limit(seconds, what):
            return "ok", call(), None
    except expected as e:
        text = str(e)
        good = text and "\n" not in text and len(text) < 600
        return "refused", None, None if good else f"bad message {text!r}"
    except Exception as e:  # noqa: BLE001 - everything else is a finding
        return "failed", None, f"{type(e).__name__}: {str(e)[:200]}"
