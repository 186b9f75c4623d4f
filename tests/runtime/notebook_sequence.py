"""What a notebook does in one process: torch DataLoader workers, then dino_runtime on OpenVINO
(compiled on the main thread, run by the pipeline's threads, released on another thread), then
more loader workers and child processes exiting; or the same in the other order.

Run by tests/runtime/test_openvino_signals.py as ``python notebook_sequence.py MODEL ORDER``,
ORDER ``loader-first`` or ``openvino-first``. Prints one line per step; exits 0 when every step
ran. Before issue 31's fix, the step after the release died with SIGSEGV: OpenVINO's CPU plugin
had unmapped the main thread's alternate signal stack from the releasing thread, and the SIGCHLD
of the next child to exit ran torch's handler on it.
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def alternate_stack_state() -> str:
    """``none``, ``mapped`` or ``UNMAPPED``: this thread's alternate signal stack."""
    current = _Stack()
    if ctypes.CDLL(None).sigaltstack(None, ctypes.byref(current)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
    if current.ss_flags & 2 or not current.ss_sp:  # SS_DISABLE
        return "none"
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= current.ss_sp and current.ss_sp + current.ss_size <= hi:
                return "mapped"
    return "UNMAPPED"


class Squares(Dataset):
    def __len__(self) -> int:
        return 16

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([i * i], dtype=torch.float32)


def loader_epoch() -> None:
    """An epoch with 2 worker processes: installs torch's Python SIGCHLD handler; its workers
    exit at the end, each exit a SIGCHLD to this process."""
    total = sum(float(b.sum()) for b in DataLoader(Squares(), batch_size=4, num_workers=2))
    assert total == sum(i * i for i in range(16))
    print(f"loader epoch done; SIGCHLD handler {signal.getsignal(signal.SIGCHLD).__name__}",
          flush=True)


def openvino_run(model: str) -> None:
    """Compile on this (main) thread, run a pipeline, then drop the runtime on another thread."""
    from dino_runtime import Runtime
    box = {"rt": Runtime(model, backend="openvino", device="cpu", threshold=0.6)}
    frames = np.random.default_rng(0).integers(0, 255, (12, 90, 120, 3), np.uint8)
    out = box["rt"](frames)
    assert out.cls.shape[0] == 12 and np.isfinite(out.cls).all()
    release = threading.Thread(target=lambda: (box.clear(), gc.collect()))
    release.start()
    release.join()
    print(f"openvino run done, released on another thread; main thread's alternate signal "
          f"stack: {alternate_stack_state()}", flush=True)


def children_exit(n: int = 8) -> None:
    for _ in range(n):
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    os.kill(os.getpid(), signal.SIGCHLD)
    print(f"{n} child processes exited", flush=True)


def main(model: str, order: str) -> None:
    steps = ([loader_epoch, lambda: openvino_run(model), children_exit, loader_epoch]
             if order == "loader-first" else
             [lambda: openvino_run(model), loader_epoch, children_exit, loader_epoch])
    for step in steps:
        step()
    print("every step ran", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
