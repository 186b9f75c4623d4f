"""Fixtures for the export tests: a ViT-S/8 file, calibration images, exported tiny models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from dino_export import export_onnx
from dino_models import vit_small


@pytest.fixture(scope="session")
def vits8_pretrained(tmp_path_factory) -> Path:
    """An official-format ViT-S/8 pretrained file (plain state dict) with random weights."""
    torch.manual_seed(8)
    path = tmp_path_factory.mktemp("ckpt") / "dino_deitsmall8_pretrain.pth"
    torch.save(vit_small(patch_size=8).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def calib_dir(photos) -> Path:
    """16 calibration photos: Imagenette when the shared data is there, else synthetic."""
    return photos[1]


@pytest.fixture(scope="session")
def tiny_onnx(tiny_pretrained, tmp_path_factory) -> Path:
    """tiny_pretrained exported at 224x224, batch 1, outputs cls and attn."""
    return export_onnx(tiny_pretrained, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def rng_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def int8_weights(proto: onnx.ModelProto) -> list[np.ndarray]:
    """The int8 initializers that DequantizeLinear nodes read: a QDQ graph's quantized weights."""
    inits = {i.name: i for i in proto.graph.initializer}
    return [numpy_helper.to_array(inits[n.input[0]]) for n in proto.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
