"""PyTorch backend for checkpoints (``.pth``/``.pt``/``.safetensors``: DINO, DINOv2, DINOv3).

torch and dino_models are imported only when this backend is built, so the rest of the runtime
imports without them. Checkpoints are read through ``dino_models.checkpoint.load_backbone``
(safe unpickling, strict keys). The precision comes from :func:`dino_core.precision.
resolve_precision`: on CPUs with native bf16 (AVX512-BF16 or AMX) the default is bf16, which
roughly doubles matrix-multiply throughput; ``precision="fp32"`` gives the exported graphs'
numerics.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dino_core.errors import BackendUnavailable, ModelError, UserError
from dino_core.memory import check_inference_memory
from dino_core.metadata import BatchSpec, ModelMetadata
from dino_core.precision import resolve_precision

from ..preprocess import fit_size
from .base import BackendOptions, ModelOutputs
from .cuda import parse_device

PRECISIONS = ("fp32", "bf16")


class TorchBackend:
    """A checkpoint of any family run by PyTorch at a fixed input size (H, W)."""

    name = "torch"

    def __init__(self, model_path: str | os.PathLike, options: BackendOptions = BackendOptions()):
        try:
            import torch

            from dino_models import backbone as bb
            from dino_models.checkpoint import load_backbone
        except ImportError as e:
            raise BackendUnavailable(f"the torch backend needs PyTorch ({e}): pip install "
                                     "'dino-edge[export]', or export the model with dino-export "
                                     "and run the .onnx file") from None
        self.torch = torch
        try:
            model, info = load_backbone(Path(model_path), download=False)
        except UserError as e:
            raise ModelError(str(e)) from None
        self.torch_device = self._device(options.device)
        self.model = model.to(self.torch_device).eval()
        self.precision = resolve_precision(
            options.precision, self.torch_device.type, PRECISIONS, gpu_auto="bf16",
            gpu_bf16=self.torch_device.type != "cuda" or torch.cuda.is_bf16_supported(),
            what="the torch backend")
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        size = tuple(options.input_size or self._default_size(options, info))
        if size[0] % info.patch_size or size[1] % info.patch_size:
            raise ModelError(f"input size {size[0]}x{size[1]} is not a multiple of the "
                             f"patch size {info.patch_size}")
        grid = (size[0] // info.patch_size, size[1] // info.patch_size)
        heads, registers = bb.num_heads(model), model.num_registers
        outputs = {"cls": ["B", info.embed_dim], "patch": ["B", grid[0] * grid[1], info.embed_dim]}
        if model.has_attention:
            outputs["attn"] = ["B", heads, *grid]
        if registers:
            outputs["attn_registers"] = ["B", heads, registers]
        self.metadata = ModelMetadata(
            arch=info.arch, patch_size=info.patch_size, embed_dim=info.embed_dim,
            num_heads=heads, depth=bb.depth(model), img_size=size, outputs=outputs,
            precision=self.precision, batch=BatchSpec(fixed=None, dynamic=(1, 8, 1024)),
            family=model.family, num_registers=registers, has_attention=model.has_attention,
            checkpoint_sha256=info.sha256)
        self.device = f"torch {self.torch_device} {self.metadata.precision}"
        try:  # an --input-size or a checkpoint shape out of range
            self.metadata.validate()
        except ModelError as e:
            raise ModelError(f"{model_path}: {e}") from None
        self.runs_on_host = self.torch_device.type == "cpu"
        if self.runs_on_host:  # the position embedding is the first size-dependent tensor
            check_inference_memory(self.metadata, 1, str(model_path),
                                   smaller_size="run it at a smaller --input-size")
        with torch.no_grad():   # the position term of this size, computed once (or None)
            pos = bb.position_constant(model, *size)
            self.pos_embed = pos.to(self.torch_device) if pos is not None else None

    @staticmethod
    def _default_size(options: BackendOptions, info) -> tuple[int, int]:
        """The source's aspect at ``short_side`` when known, else the checkpoint's square size."""
        if options.frame_size is not None:
            return fit_size(options.frame_size, options.short_side, info.patch_size)
        return info.img_size, info.img_size

    def _device(self, device: str):
        kind, index = parse_device(device)
        cuda = self.torch.cuda.is_available()
        if kind == "cuda" and not cuda:
            raise BackendUnavailable(f"--device {device}: PyTorch sees no CUDA device; "
                                     "use --device cpu")
        return self.torch.device(f"cuda:{index}" if kind == "cuda" or (kind == "auto" and cuda)
                                 else "cpu")

    def run(self, images: np.ndarray) -> ModelOutputs:
        """(B, 3, H, W) float32 normalised RGB -> outputs, see ModelOutputs."""
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.torch_device)
        with torch.inference_mode(), torch.autocast(self.torch_device.type, dtype=self.dtype,
                                                   enabled=self.dtype != torch.float32):
            out = self.model.forward_single_pass(x, self.pos_embed)
        if out.attn is None:
            return ModelOutputs(_numpy(out.cls), None, _numpy(out.patch))
        registers = _numpy(out.attn_registers) if self.metadata.num_registers else None
        return ModelOutputs(_numpy(out.cls), _numpy(out.attn.unflatten(-1, self.metadata.grid)),
                            _numpy(out.patch), registers)


def _numpy(t) -> np.ndarray:
    return t.float().cpu().numpy()
