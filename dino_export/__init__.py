"""dino_export: DINO checkpoints to verified ONNX files and TensorRT engines.

Python API::

    from dino_export import ExportConfig, export_onnx
    path = export_onnx("dino_deitsmall8_pretrain.pth", "vits8.onnx",
                       ExportConfig(img_size=(480, 640), dynamic_batch=(1, 4, 8)))

``export_onnx(checkpoint_or_model, out_path, config=None) -> Path`` is stable: see
:mod:`dino_export.onnx_export` for the graph's inputs, outputs and metadata. The names below are
imported on first use, so that ``dino-export`` can say which install extra is missing (torch,
onnx) in one line instead of failing at import.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {"ExportConfig": ".config", "export_onnx": ".onnx_export",
            "read_metadata": ".onnx_export", "verify_file": ".verify"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
