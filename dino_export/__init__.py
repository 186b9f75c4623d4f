"""dino_export: DINO checkpoints to verified ONNX files and TensorRT engines.

Python API::

    from dino_export import ExportConfig, export_onnx
    path = export_onnx("dino_deitsmall8_pretrain.pth", "vits8.onnx",
                       ExportConfig(img_size=(480, 640), dynamic_batch=(1, 4, 8)))

``export_onnx(checkpoint_or_model, out_path, config=None) -> Path`` is stable: see
:mod:`dino_export.onnx_export` for the graph's inputs, outputs and metadata.
"""
from .config import ExportConfig
from .onnx_export import export_onnx, read_metadata
from .verify import verify_onnx

__version__ = "0.1.0"
__all__ = ["ExportConfig", "export_onnx", "read_metadata", "verify_onnx"]
