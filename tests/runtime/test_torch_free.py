"""dino_runtime imports and runs an exported model with torch made unimportable.

A ``sitecustomize`` placed first on PYTHONPATH blocks ``torch`` (and torchvision) in a fresh
interpreter, as on an edge box where only numpy, OpenCV and onnxruntime are installed.
"""
from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT

BLOCKER = '''
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision"):
            raise ImportError(f"{name} is blocked: this interpreter has no torch")
sys.meta_path.insert(0, _NoTorch())
'''

SCRIPT = '''
import sys
import numpy as np
try:
    import torch
except ImportError:
    pass
else:
    raise SystemExit("the torch block failed")
from dino_runtime import Runtime, RenderOptions
rt = Runtime(sys.argv[1], batch_size=4)
frames = np.random.default_rng(0).integers(0, 255, (3, 96, 160, 3), dtype=np.uint8)
out = rt(frames)
assert out.cls.shape == (3, 192) and out.attn.shape == (3, 3, 4, 6) and out.masks.shape == (3, 1, 4, 6)
n = sum(1 for r in rt.stream(sys.argv[2], render=RenderOptions(attention=True, mask=True)))
assert n == 60, n
try:
    Runtime(sys.argv[3])
except Exception as e:
    print("torch backend:", e)
assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "dino_train")]
print("ok")
'''


def test_runtime_runs_an_onnx_model_without_torch(tiny_onnx, video_60, tiny_checkpoint, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_onnx), str(video_60),
                          str(tiny_checkpoint)], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    # a checkpoint needs torch: the error says so and what to run instead
    assert "backend torch needs torch" in out.stdout and "dino-export" in out.stdout

    cli = subprocess.run([sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx),
                          "--source", str(video_60), "--embeddings", str(tmp_path / "e.npy"),
                          "--no-display"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "frames 60" in cli.stdout and (tmp_path / "e.npy").exists()
