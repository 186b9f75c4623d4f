"""Training checkpoints: the official ``main_dino.py`` format plus a ``dino_edge`` record.

Official keys: ``student`` (``module.``-prefixed, as the official DDP student), ``teacher``,
``optimizer``, ``epoch`` (epochs completed), ``args`` (an ``argparse.Namespace`` of plain values),
``dino_loss`` (the centre) and ``fp16_scaler`` when fp16 is used. ``dino_edge`` is a plain dict:
arch, patch size, heads, global step, position in the epoch, RNG states (tensors) of every
process, and the resolved configuration. Files are written to a temporary name and renamed, so a
kill at any moment leaves either the previous or the new checkpoint, never half of one.
"""
from __future__ import annotations

import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from dino_core.fileio import atomic_output

FORMAT_VERSION = 1


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_output(path) as f:
        torch.save(obj, f)


# -- RNG state as tensors (the safe loader accepts tensors and plain containers only) -----------
def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), NumPy and Python RNG states, as tensors and ints."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python_mt": torch.tensor(mt, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(x) for x in state["python_mt"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def with_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}

