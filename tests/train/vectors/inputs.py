"""Inputs of the reference vectors, regenerated bit-identically from NumPy seeds (not stored)."""
from __future__ import annotations

import numpy as np

# name -> (out_dim, local crops, batch, warmup_temp, temp, warmup_temp_epochs, epochs, epochs used)
LOSS_CASES = {
    "small": (64, 2, 3, 0.04, 0.07, 3, 5, [0, 1, 4]),
    "default": (65536, 8, 2, 0.04, 0.04, 0, 100, [0, 0, 1]),
}
# name -> (base, final, epochs, iters_per_epoch, warmup_epochs, start_warmup_value)
SCHEDULE_CASES = {
    "lr": (0.0005 * 64 / 256, 1e-6, 10, 7, 2, 0.0),
    "wd": (0.04, 0.4, 10, 7, 0, 0.0),
    "momentum": (0.996, 1.0, 10, 7, 0, 0.0),
    "warm_start": (1.0, 0.1, 3, 5, 1, 0.5),
}


def loss_inputs(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(student (ncrops * B, K), teacher (2 * B, K)) per step], float32, scale 3."""
    out_dim, nlocal, batch, *_rest, used = LOSS_CASES[name]
    ncrops = 2 + nlocal
    rs = np.random.RandomState(len(name) * 7919)
    steps = []
    for _ in used:
        s = rs.randn(ncrops * batch, out_dim).astype(np.float32) * 3
        t = rs.randn(2 * batch, out_dim).astype(np.float32) * 3
        steps.append((s, t))
    return steps


def center_stride(out_dim: int) -> int:
    """Stored centres keep every this-many-th entry."""
    return max(1, out_dim // 1024)
