"""Bad checkpoints through the real console scripts: one line on stderr, non-zero exit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent


def _bad_file(kind: str, tmp: Path, good: Path) -> tuple[Path, list[str], str]:
    path = tmp / f"{kind}.pth"
    if kind == "missing":
        return path, [], "missing.pth"
    if kind == "truncated":
        path.write_bytes(good.read_bytes()[:40_000])
        return path, [], "truncated"
    if kind == "not-a-checkpoint":
        path.write_bytes(b"\x00\x01 definitely not a pickle")
        return path, [], "not a PyTorch checkpoint"
    if kind == "resnet":
        import torchvision
        torch.save(torchvision.models.resnet18().state_dict(), path)
        return path, [], "ResNet"
    if kind == "malicious":
        torch.save({"x": _Payload(str(tmp / "PWNED"))}, path)
        return path, [], "refused"
    raise AssertionError(kind)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


KINDS = ["missing", "truncated", "not-a-checkpoint", "resnet", "malicious"]


CASES = [("dino-export", k) for k in KINDS + ["unknown-key"]] + [("dino-run", k) for k in KINDS]


@pytest.mark.parametrize("tool,kind", CASES)
def test_bad_checkpoint_is_one_line(tool, kind, tmp_path, tiny_pretrained,
                                    tiny_training_checkpoint):
    if kind == "unknown-key":  # dino-run has no --checkpoint-key: it runs the teacher
        path, extra, needle = tiny_training_checkpoint, ["--checkpoint-key", "ema"], "ema"
    else:
        path, extra, needle = _bad_file(kind, tmp_path, tiny_pretrained)
    if tool == "dino-export":
        cmd = [str(BIN / tool), str(path), "-o", str(tmp_path / "out.onnx"), *extra]
    else:
        image = tmp_path / "frame.png"
        import cv2
        import numpy as np
        cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
        cmd = [str(BIN / tool), "--model", str(path), "--source", str(image), "--no-display"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(lines) == 1, proc.stderr
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "PWNED").exists()
    assert not (tmp_path / "out.onnx").exists()
