"""One convention for every command (``dino-train``, ``dino-eval``, ``dino-export``, ``dino-run``).

* A mistake the user can fix is one line on stderr, ``PROG: reason``, never a traceback.
* Exit status: 0 done, 1 a user error (path, file, machine), 2 a usage error (click's, or an
  :class:`~dino_core.errors.OptionError`), 128 + the signal when interrupted: 130 Ctrl-C,
  143 SIGTERM, 129 SIGHUP (:mod:`dino_core.signals`; outputs are complete or absent).
* Warnings go through :mod:`logging` (the toolkit's package loggers) and print as
  ``PROG: warning: message``.

    def main(argv=None):
        sys.exit(run(command, "dino-run", argv))
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

import click

from .errors import UserError
from .signals import exit_code, interrupt_on_signals

EXIT_OK = 0
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# The loggers of the toolkit's packages; third-party loggers are left alone.
TOOLKIT_LOGGERS = ("dino_core", "dino_models", "dino_train", "dino_export", "dino_runtime")


class _ProgFormatter(logging.Formatter):
    """``PROG: warning: message`` for warnings and errors, ``PROG: message`` below that."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{self.prog}: {level}{record.getMessage()}"


def configure_logging(prog: str, level: int = logging.WARNING) -> None:
    """Send the toolkit's log records to stderr in the command's format (idempotent)."""
    for name in TOOLKIT_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, "dino_cli", False)]:
            logger.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr)
        handler.dino_cli = True
        handler.setFormatter(_ProgFormatter(prog))
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def one_line(text: str) -> str:
    """A message on one line. An error raised in a DataLoader worker comes back with the
    worker's traceback in its text; its last line is the original reason."""
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return " ".join(text.split())


def run(command: click.Command, prog: str, args: Sequence[str] | None = None,
        interrupted: str = "interrupted") -> int:
    """Run a click command under the convention above; returns the exit status."""
    configure_logging(prog)
    try:
        with interrupt_on_signals():
            result = command.main(args=list(args) if args is not None else None,
                                  prog_name=prog, standalone_mode=False)
    except click.exceptions.Exit as e:  # --help, --version
        return e.exit_code
    except click.UsageError as e:
        _say(prog, f"{e.format_message()} (see {prog} --help)")
        return EXIT_USAGE
    except click.ClickException as e:
        _say(prog, e.format_message())
        return e.exit_code
    except UserError as e:
        _say(prog, str(e))
        return e.exit_code
    except KeyboardInterrupt as e:
        _say(prog, interrupted)
        return exit_code(e)
    except click.exceptions.Abort as e:  # click turns a KeyboardInterrupt into Abort
        _say(prog, interrupted)
        cause = e.__cause__ or e.__context__
        return exit_code(cause) if isinstance(cause, KeyboardInterrupt) else EXIT_INTERRUPTED
    return result if isinstance(result, int) else EXIT_OK


def _say(prog: str, message: str) -> None:
    click.echo(f"{prog}: {one_line(message)}", err=True)
