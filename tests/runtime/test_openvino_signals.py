"""OpenVINO and signals in one process (issue 31).

OpenVINO's CPU plugin sets a larger alternate signal stack on the thread that loads it and
unmaps it when released; released on another thread, it left that thread's alternate stack in
unmapped memory, and the next Python signal handler there (torch's DataLoader SIGCHLD handler
at the next child exit) died with SIGSEGV. The backend now loads the plugin once per process
and never releases it (:func:`dino_runtime.backends.openvino_backend.shared_core`).
"""
from __future__ import annotations

import gc
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino", reason="the openvino extra is not installed")

from dino_runtime import Runtime  # noqa: E402

from .notebook_sequence import alternate_stack_state  # noqa: E402

SCRIPT = Path(__file__).with_name("notebook_sequence.py")


@pytest.mark.parametrize("order", ["loader-first", "openvino-first"])
def test_loader_workers_and_openvino_in_one_process(tiny_onnx, order):
    """The notebook's sequence as a plain process, in both orders: every step runs, and the
    main thread's alternate signal stack is still mapped after the runtime's release."""
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tiny_onnx), order],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    assert "every step ran" in proc.stdout
    assert "alternate signal stack: UNMAPPED" not in proc.stdout
    assert proc.stdout.count("child processes exited") == 1


def test_runtimes_released_on_other_threads_leave_this_threads_signal_stack(tiny_onnx):
    """Two runtimes made here and released on two other threads, out of order."""
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    box = {name: Runtime(tiny_onnx, backend="openvino", device="cpu") for name in "ab"}
    for name in "ab":
        assert np.isfinite(box[name](frames).cls).all()
    for name in "ab":
        release = threading.Thread(target=lambda n=name: (box.pop(n), gc.collect()))
        release.start()
        release.join()
    assert alternate_stack_state() != "UNMAPPED"
