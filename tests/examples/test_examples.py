"""Every script in examples/ runs on small inputs and produces what it promises."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """24 frames, 120x200: a bright square moving over a dark gradient, then a cut to noise."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (200, 120))
    rng = np.random.default_rng(0)
    for i in range(24):
        if i < 16:
            frame = np.tile(np.linspace(20, 80, 200, dtype=np.uint8), (120, 1))[..., None].repeat(3, 2)
            frame[30:80, 10 + 6 * i:60 + 6 * i] = (40, 200, 240)
        else:
            frame = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
        writer.write(frame)
    writer.release()
    return path


def test_attention_video(tmp_path, tiny_pretrained, clip):
    out = tmp_path / "attention.mp4"
    stdout = _run(str(EXAMPLES / "attention_video.py"), str(tiny_pretrained), str(clip), str(out),
                  "--size", "64", "112", cwd=tmp_path)
    assert "24 frames" in stdout
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (200, 120)
    ok, first = cap.read()
    raw = cv2.VideoCapture(str(clip)).read()[1]
    assert ok and np.abs(first.astype(int) - raw.astype(int)).mean() > 5  # overlay was drawn


def test_similarity_search_finds_the_query_frame(tmp_path, tiny_pretrained, clip):
    model = tmp_path / "m.onnx"
    subprocess.run([str(Path(sys.executable).parent / "dino-export"), str(tiny_pretrained), "-o",
                    str(model), "--img-size", "64", "112", "--no-verify"], check=True,
                   capture_output=True)
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(20)]
    cv2.imwrite(str(tmp_path / "query.png"), frames[19])  # a noise frame, after the cut
    stdout = _run(str(EXAMPLES / "similarity_search.py"), str(model), str(clip),
                  str(tmp_path / "query.png"), "--top", "3", cwd=tmp_path)
    assert stdout.splitlines()[0].startswith("1. frame 19 ")
    assert float(stdout.splitlines()[0].rsplit(" ", 1)[1]) > 0.999
