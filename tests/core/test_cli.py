"""One convention for all four commands: ``PROG: reason`` on one line, exit 2 for a usage
error, 1 for a user error, 130 after Ctrl-C; warnings through logging as ``PROG: warning:``."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import click
import pytest

from dino_core.cli import configure_logging, one_line, run
from dino_core.errors import ModelError, OptionError

ROOT = Path(__file__).resolve().parents[2]
# (program, module whose main() is the console script, args before the mistake)
COMMANDS = [("dino-train", "dino_train.cli", "main", []),
            ("dino-eval", "dino_train.cli", "eval_main", ["knn"]),
            ("dino-export", "dino_export.cli", "main", []),
            ("dino-run", "dino_runtime.cli", "main", [])]


def console(module: str, function: str, *args: str) -> subprocess.CompletedProcess:
    code = f"import sys; from {module} import {function}; {function}(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def assert_one_line(proc: subprocess.CompletedProcess, prog: str, status: int) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == status, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize("prog, module, function, prefix", COMMANDS)
def test_an_unknown_option_is_a_usage_error(prog, module, function, prefix):
    line = assert_one_line(console(module, function, *prefix, "--no-such-option"), prog, 2)
    assert "--no-such-option" in line


@pytest.mark.parametrize("prog, module, function, args", [
    ("dino-train", "dino_train.cli", "main", ["--data-path", "/no/such/folder"]),
    ("dino-eval", "dino_train.cli", "eval_main",
     ["knn", "--checkpoint", "/no/such.pth", "--train-data", "/tmp", "--val-data", "/tmp"]),
    ("dino-export", "dino_export.cli", "main", ["/no/such.pth"]),
    ("dino-run", "dino_runtime.cli", "main", ["--model", "/no/such.onnx", "--source",
                                              "{video}", "--no-display"]),
])
def test_a_missing_file_is_a_user_error(prog, module, function, args, tmp_path):
    import cv2
    import numpy as np
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    args = [a.format(video=video) for a in args]
    line = assert_one_line(console(module, function, *args), prog, 1)
    assert "/no/such" in line


def test_the_runner_maps_each_kind_of_failure(capsys):
    def command_raising(error: BaseException) -> click.Command:
        @click.command()
        def command() -> None:
            raise error
        return command

    assert run(command_raising(ModelError("bad\n  file")), "prog", []) == 1
    assert capsys.readouterr().err == "prog: bad file\n"
    assert run(command_raising(OptionError("--x 3: expected 1..2")), "prog", []) == 2
    assert capsys.readouterr().err == "prog: --x 3: expected 1..2\n"
    # click ends the ^C line with a newline of its own before the message
    assert run(command_raising(KeyboardInterrupt()), "prog", []) == 130
    assert capsys.readouterr().err.strip() == "prog: interrupted"
    assert run(command_raising(click.exceptions.Abort()), "prog", [], interrupted="stopped") == 130
    assert capsys.readouterr().err.strip() == "prog: stopped"


def test_warnings_go_through_logging_in_the_command_format(capsys):
    configure_logging("dino-run")
    logging.getLogger("dino_runtime.cli").warning("frames are stretched")
    logging.getLogger("dino_runtime.cli").info("not shown")
    assert capsys.readouterr().err == "dino-run: warning: frames are stretched\n"


def test_a_worker_traceback_becomes_its_last_line():
    text = ("Caught UserError in DataLoader worker process 0.\nOriginal Traceback (most recent "
            "call last):\n  File ...\ndino_core.errors.UserError: no readable image")
    assert one_line(text) == "no readable image"
