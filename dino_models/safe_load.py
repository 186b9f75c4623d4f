"""Loading untrusted checkpoint pickles without running code from them.

Checkpoints are pickles, and a pickle can call any importable function. ``torch.load`` with
``weights_only=True`` only rebuilds tensors and plain containers; the official DINO training
checkpoints also hold an ``argparse.Namespace`` (``args``), which is the one extra type allowed.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from dino_core import memory
from dino_core.errors import CheckpointError

# Types the official checkpoints and ours contain beyond tensors and plain containers.
ALLOWED_GLOBALS: list[Any] = [argparse.Namespace]
# torch.save stores every record of its zip uncompressed: the records of a real checkpoint add
# up to its file size (ViT-Tiny/16 depth 2: 4,307,581 bytes of records in a 4,313,865-byte
# file), and float weights barely deflate (the same file re-zipped at level 9: 1.08x). Records
# declaring more than this multiple of the file's size were compressed on purpose: a zip bomb
# (the issue's: 56 MB holding 12 GiB; 100 MB of zeros deflate 1000x).
MAX_INFLATION = 4
SMALL_FILE_SLACK = 1 << 20  # header-sized records of a tiny file may compress well


def load_pickle_checkpoint(path: Path) -> Any:
    """Unpickle ``path`` with the weights-only unpickler and the allow-list above.

    Raises :class:`~dino_core.errors.CheckpointError` with one line for every failure a user
    can cause: unsafe content, a compression bomb or more data than memory holds, truncation,
    or a file that is not a torch checkpoint.
    """
    check_declared_size(path)
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


def declared_bytes(path: Path) -> int | None:
    """What the records of a torch.save zip say they hold, uncompressed, read from its central
    directory without inflating anything; None for a file that is not a zip (the legacy format
    reads each tensor from the file, so it cannot hold more than the file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return sum(info.file_size for info in archive.infolist())
    except Exception:  # noqa: BLE001 - zipfile raises many types on damaged bytes (BadZipFile,
        return None     # NotImplementedError for a bad version field...): torch.load says why


def check_declared_size(path: Path) -> None:
    """:class:`CheckpointError` before ``torch.load`` when the file's records declare far more
    data than its size (a zip bomb) or more than this machine's free memory."""
    declared = declared_bytes(path)
    if declared is None:
        return
    size = path.stat().st_size
    if declared > MAX_INFLATION * size + SMALL_FILE_SLACK:
        raise CheckpointError(
            f"{path}: refused to load: its records declare {memory.format_bytes(declared)} of "
            f"data in a {memory.format_bytes(size)} file (torch.save stores tensors "
            f"uncompressed; more than {MAX_INFLATION}x its size is a zip bomb or a damaged file)")
    available = memory.available_bytes()
    if available is not None and declared > available:
        raise CheckpointError(
            f"{path}: refused to load: its tensors need {memory.format_bytes(declared)} and this "
            f"machine has {memory.format_bytes(available)} available")


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
