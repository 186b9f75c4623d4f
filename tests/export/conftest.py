"""Fixtures for the export tests: a ViT-S/8 file, calibration images, exported tiny models."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dino_export import ExportConfig, export_onnx
from dino_export.images import imagenette_images, synthetic_images
from dino_train.models import vit_small


@pytest.fixture(scope="session")
def vits8_pretrained(tmp_path_factory) -> Path:
    """An official-format ViT-S/8 pretrained file (plain state dict) with random weights."""
    torch.manual_seed(8)
    path = tmp_path_factory.mktemp("ckpt") / "dino_deitsmall8_pretrain.pth"
    torch.save(vit_small(patch_size=8).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    """16 calibration JPEGs: Imagenette photos when the shared data is there, else synthetic."""
    imgs = imagenette_images(16, (256, 256))
    if imgs is None:
        imgs = synthetic_images(16, (256, 256), seed=3)
    folder = tmp_path_factory.mktemp("calib")
    for i, img in enumerate(imgs):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), img)
    return folder


@pytest.fixture(scope="session")
def tiny_onnx(tiny_pretrained, tmp_path_factory) -> Path:
    """tiny_pretrained exported at 224x224, batch 1, outputs cls and attn."""
    return export_onnx(tiny_pretrained, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def rng_images(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)
