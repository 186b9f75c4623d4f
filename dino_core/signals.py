"""SIGTERM and SIGHUP handled like Ctrl-C, so that ``docker stop``, systemd and a closed SSH
session end a command as cleanly as Ctrl-C does.

Two ways a command can be stopped by a signal (SIGINT, SIGTERM, SIGHUP):

* by default, :func:`interrupt_on_signals` (installed by :func:`dino_core.cli.run`) raises
  :class:`Interrupted` in the main thread, as Python does for SIGINT; outputs written through
  :mod:`dino_core.fileio` are then either complete or absent, and the runner exits with
  ``128 + signal number`` (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP);
* a command with work to finalise (``dino-run`` closing its video, ``dino-train`` writing a
  checkpoint) wraps its loop in :class:`GracefulStop`: the first signal only records itself and
  calls ``on_stop``, the loop ends at its next check, and a second signal interrupts at once.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

FINALISING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                           if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by a stopping signal; ``signum`` says which one."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(error: BaseException) -> int:
    """``128 + signal number``: 130 for Ctrl-C (a plain KeyboardInterrupt), 143 for SIGTERM."""
    return 128 + int(getattr(error, "signum", signal.SIGINT))


def _raise(signum: int, frame) -> None:
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted`."""
    if not _main_thread():  # handlers can only be installed from the main thread
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in FINALISING_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class GracefulStop:
    """First stopping signal: record it and call ``on_stop(reason)``; second: interrupt now.

        with GracefulStop(pipeline.stop) as stop:
            for item in work:           # the loop checks ``stop.requested`` or is stopped
                ...
        if stop.signum is not None:     # finalise, then exit with stop.exit_code
    """

    def __init__(self, on_stop: Callable[[str], None] | None = None) -> None:
        self.on_stop = on_stop
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def reason(self) -> str:
        return f"interrupted ({signal.Signals(self.signum).name})" if self.signum else ""

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or 0)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:  # the second signal: do not wait any longer
            raise Interrupted(signum)
        self.signum = signum
        if self.on_stop is not None:
            self.on_stop(self.reason)

    def __enter__(self) -> "GracefulStop":
        if _main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in FINALISING_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
