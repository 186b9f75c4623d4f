"""Time-boxing for tests whose failure mode is a hang (symlink loops, fuzzed inputs)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


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
