"""The base install is the runtime alone: a fresh virtual environment with ``pip install .``
(no extras) runs ``dino-run`` on the committed tiny model, and torch is not there.

This is what an edge box gets. The test builds the package from the checkout and installs its
declared base dependencies from the package index (pip's cache makes reruns fast); it takes
about a minute.
"""
from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_MODEL = ROOT / "tests" / "data" / "tiny_vit.onnx"


def write_clip(path: Path, frames: int = 12) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (96, 64))
    for i in range(frames):
        img = np.full((64, 96, 3), 40 + 10 * i, np.uint8)
        cv2.circle(img, (10 + 6 * i, 32), 12, (0, 200, 255), -1)
        writer.write(img)
    writer.release()
    return path


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> Path:
    """A new venv with ``pip install <checkout>`` and nothing else; returns its bin folder."""
    env = tmp_path_factory.mktemp("base-venv")
    venv.EnvBuilder(with_pip=True).create(env)
    bin_dir = env / "bin"
    proc = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(ROOT)],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and "Could not find a version" in proc.stderr:
        pytest.skip(f"the package index is unreachable: {proc.stderr.strip()[-300:]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return bin_dir


def test_base_install_runs_the_tiny_model_without_torch(base_env, tmp_path):
    python = str(base_env / "python")
    for absent in ("torch", "torchvision", "timm", "onnx"):
        probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True)
        assert probe.returncode != 0, f"the base install pulled in {absent}"
    emb, video = tmp_path / "cls.jsonl", write_clip(tmp_path / "clip.mp4")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(base_env / "dino-run"), "--model", str(TINY_MODEL), "--source",
                           str(video), "--no-display", "--embeddings", str(emb), "--mask",
                           "--save", str(tmp_path / "out.mp4")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in emb.read_text().splitlines()]
    assert len(rows) == 12 and len(rows[0]["cls"]) == 32
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_commands_of_other_extras_say_what_to_install(base_env, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for command, extra in (("dino-export", "export"), ("dino-train", "train")):
        args = ["x.pth"] if command == "dino-export" else ["--data-path", str(tmp_path)]
        proc = subprocess.run([str(base_env / command), *args], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, env=env)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"{command}: ") and f"'dino-edge[{extra}]'" in lines[0]
