"""Shared fixtures: small official-format checkpoints made on the spot (no downloads)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from dino_models import DINOHead, VisionTransformer, vit_tiny


DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_vit(depth: int = 2, patch_size: int = 16, seed: int = 0) -> VisionTransformer:
    """ViT-Tiny width (192, 3 heads) with ``depth`` blocks and random weights."""
    torch.manual_seed(seed)
    return vit_tiny(patch_size=patch_size, depth=depth).eval()


def official_training_checkpoint(backbone: VisionTransformer, out_dim: int = 64) -> dict:
    """The dict ``main_dino.py`` saves: DDP-prefixed student, plain teacher, args Namespace."""
    head = DINOHead(backbone.embed_dim, out_dim)
    teacher = {**{f"backbone.{k}": v for k, v in backbone.state_dict().items()},
               **{f"head.{k}": v for k, v in head.state_dict().items()}}
    student = {f"module.{k}": v.clone() for k, v in teacher.items()}
    args = argparse.Namespace(arch="vit_tiny", patch_size=backbone.patch_size, out_dim=out_dim,
                              global_crops_scale=(0.4, 1.0), lr=0.0005, use_fp16=True,
                              data_path="/path/to/imagenet/train", output_dir=".")
    return {"student": student, "teacher": teacher, "optimizer": {"state": {}, "param_groups": []},
            "epoch": 7, "args": args, "dino_loss": {"center": torch.zeros(1, out_dim)}}


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory) -> Path:
    """An official-format pretrained backbone file (plain state dict), ViT-Tiny/16 depth 2."""
    path = tmp_path_factory.mktemp("ckpt") / "dino_tiny16_pretrain.pth"
    torch.save(tiny_vit().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_training_checkpoint(tmp_path_factory) -> Path:
    """An official-format training checkpoint of ViT-Tiny/16 depth 2."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save(official_training_checkpoint(tiny_vit(seed=1)), path)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it skip with a reason when it is absent."""
    if not DATA_DIR.is_dir():
        pytest.skip(f"real data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> tuple[str, Path]:
    """(label, folder) of 16 real photos: Imagenette from the shared data; without it, 16
    synthetic scenes, labelled so (a test that needs real photos skips on that label)."""
    import cv2

    from dino_export.images import photos_from_tar, synthetic_images
    folder = tmp_path_factory.mktemp("photos")
    if (DATA_DIR / "imagenette-val.tar").is_file():
        return "imagenette", photos_from_tar(DATA_DIR / "imagenette-val.tar", folder, 16)
    for i, img in enumerate(synthetic_images(16, (256, 256), seed=3)):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), img)
    return "synthetic", folder
