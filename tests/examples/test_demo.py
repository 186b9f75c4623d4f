"""`make demo`'s script end to end, shortened: train briefly, export, run, retrieval, report."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_demo_writes_every_output(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(out),
                           "--train-minutes", "0.1", "--max-frames", "12"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = (out / "report.md").read_text()
    for stage in ("| export |", "| run |", "| track |", "| retrieval |"):
        assert stage in report
    assert "## Weights" in report and ("trained" in report or "official" in report)
    assert len(np.load(out / "embeddings.npy")["cls"]) == 12
    assert len(list((out / "masks").glob("*.png"))) == 12
    assert (out / "attention.mp4").stat().st_size > 0 and (out / "retrieval.png").exists()
    assert len(list((out / "track_masks").glob("*.png"))) == 12
    assert len((out / "objects.jsonl").read_text().splitlines()) == 12
    assert (out / "tracking.mp4").stat().st_size > 0


def test_demo_photos_without_shared_data(tmp_path, monkeypatch):
    """Away from ../shared/data the demo trains on scikit-image's bundled photos; some of them
    are not 8-bit RGB (``horse`` is a boolean mask) and must still be written as photos."""
    import cv2
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import demo
    finally:
        sys.path.pop(0)
    monkeypatch.setattr(demo, "SHARED", tmp_path / "no-shared-data")
    folder, origin = demo.training_photos(tmp_path)
    photos = sorted(folder.iterdir())
    assert "scikit-image" in origin and len(photos) >= 5
    for path in photos:
        img = cv2.imread(str(path))
        assert img is not None and img.dtype == np.uint8 and img.ndim == 3 and img.max() > 0
