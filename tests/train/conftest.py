"""Fixtures for the training tests: small synthetic image folders and CLI helpers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def start_cli(args: list[str], **popen) -> subprocess.Popen:
    """``python -m dino_train.cli ARGS`` started in the background (one torch thread)."""
    code = "import sys; from dino_train.cli import main; main(sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def wait_for_steps(proc: subprocess.Popen, out_dir: Path, steps: int) -> None:
    """Until ``log.jsonl`` holds ``steps`` records: the run is inside its training loop."""
    deadline = time.time() + 120
    while len(losses(out_dir)) < steps:
        if proc.poll() is not None:
            pytest.fail(f"the run ended first: {proc.communicate()[1][-2000:]}")
        assert time.time() < deadline, f"the run logged no {steps} steps in 120 s"
        time.sleep(0.02)


def losses(out_dir: Path) -> dict[int, float]:
    """step -> loss from ``log.jsonl``."""
    path = out_dir / "log.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return {r["step"]: r["loss"] for r in records if "loss" in r}
