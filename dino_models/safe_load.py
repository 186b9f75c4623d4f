"""Loading untrusted checkpoint pickles without running code from them.

Checkpoints are pickles, and a pickle can call any importable function. ``torch.load`` with
``weights_only=True`` only rebuilds tensors and plain containers; the official DINO training
checkpoints also hold an ``argparse.Namespace`` (``args``), which is the one extra type allowed.
"""
from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path
from typing import Any

import torch

# Types the official checkpoints and ours contain beyond tensors and plain containers.
ALLOWED_GLOBALS: list[Any] = [argparse.Namespace]


def load_pickle_checkpoint(path: Path) -> Any:
    """Unpickle ``path`` with the weights-only unpickler and the allow-list above.

    Raises :class:`~dino_core.errors.CheckpointError` with one line for every failure a user
    can cause: unsafe content, truncation, or a file that is not a torch checkpoint.
    """
    from dino_core.errors import CheckpointError

    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words every weights-only failure alike; only a GLOBAL (an import) is unsafe,
        # other opcodes it rejects mean the bytes are simply not a checkpoint pickle.
        if re.search(r"\bGLOBAL\b|Unsupported global", str(e)):
            culprit = _unsupported_global(str(e))
            raise CheckpointError(
                f"{path}: refused to load: its pickle references {culprit}, which is not in the "
                "allow-list of checkpoint types (it could run code). Only load files you trust, "
                "and convert them to .safetensors or a plain state dict.") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_unpickler_reason(e)})") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes is a bad file
        if isinstance(e, (MemoryError, KeyboardInterrupt)):
            raise
        hint = "the file looks truncated or corrupt" if _is_zip_or_pickle(path) else \
            "not a PyTorch checkpoint"
        raise CheckpointError(f"{path}: {hint} ({_first_line(e)})") from None


def _unsupported_global(message: str) -> str:
    match = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global[: ]+([\w.]+)", message)
    return match.group(1) if match else "a function or class"


def _unpickler_reason(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    after = [b for a, b in zip(lines, lines[1:]) if "WeightsUnpickler error" in a]
    return after[0][:120] if after else _first_line(e)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:120] if text else type(e).__name__


def _is_zip_or_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK") or head[:1] == b"\x80"
