"""Fixtures for the training tests: small synthetic image folders and CLI helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]

# A tiny but complete run: ViT-Tiny/16 with 2 blocks, 32 px global and 16 px local crops.
TINY_ARGS = ["--arch", "vit_tiny", "--depth", "2", "--out_dim", "128", "--batch_size_per_gpu",
             "4", "--local_crops_number", "2", "--global-crop-size", "32", "--local-crop-size",
             "16", "--num_workers", "0", "--epochs", "20", "--warmup_epochs", "1",
             "--log-every", "1", "--no-progress", "--precision", "fp32"]


def write_images(folder: Path, n: int, size: tuple[int, int] = (40, 48), seed: int = 0,
                 classes: int = 0) -> Path:
    """``n`` random JPEGs, flat or (``classes`` > 0) in an ImageFolder layout."""
    rs = np.random.RandomState(seed)
    for i in range(n):
        sub = folder / f"class{i % classes}" if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rs.randint(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"img{i:03d}.jpg", quality=90)
    return folder


@pytest.fixture()
def image_folder(tmp_path: Path) -> Path:
    return write_images(tmp_path / "images", 16)


def run_cli(args: list[str], env: dict | None = None, timeout: float = 120,
            module: str = "dino_train.cli") -> subprocess.CompletedProcess:
    """``python -m dino_train.cli ARGS`` in a subprocess (one torch thread)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    code = f"import sys; from {module} import main; main(sys.argv[1:])" if module.endswith("cli") \
        else None
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=REPO)


def losses(out_dir: Path) -> dict[int, float]:
    """step -> loss from ``log.jsonl``."""
    path = out_dir / "log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["step"]: r["loss"] for r in records if "loss" in r}
