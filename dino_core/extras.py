"""Which install extra each command needs, checked before the command imports it.

The base install (``pip install dino-edge``) is the runtime alone; ``dino-export`` needs the
``export`` extra (PyTorch, ONNX) and ``dino-train``/``dino-eval`` the ``train`` extra. A command
started without its packages says so in one line instead of an ImportError traceback.
"""
from __future__ import annotations

import importlib.util

from .errors import BackendUnavailable

EXTRAS: dict[str, tuple[str, ...]] = {
    "export": ("torch", "onnx", "onnxscript", "onnxslim", "safetensors"),
    "train": ("torch", "torchvision", "PIL", "tqdm", "matplotlib", "safetensors"),
}


def missing_packages(extra: str) -> list[str]:
    """The importable names of ``extra`` that this environment lacks."""
    return [name for name in EXTRAS[extra] if not _importable(name)]


def require_extra(extra: str, command: str) -> None:
    """:class:`BackendUnavailable` naming the missing packages and the install line."""
    missing = missing_packages(extra)
    if missing:
        raise BackendUnavailable(f"{command} needs {', '.join(missing)}, which this install "
                                 f"lacks: pip install 'dino-edge[{extra}]'")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
