"""Packaging: console scripts point at real commands; dino_runtime imports without torch."""
from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCK_TORCH = (
    "import sys\n"
    "class _NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith(('torch.', 'torchvision')):\n"
    "            raise ImportError('torch is blocked for this test')\n"
    "sys.meta_path.insert(0, _NoTorch())\n"
)


def test_console_scripts_resolve_to_callables():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    for name, target in scripts.items():
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_runtime_imports_without_torch():
    code = BLOCK_TORCH + (
        "import dino_runtime, dino_runtime.metadata\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('torch was importable: the block failed')\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_atomic_output_gives_normal_permissions_and_cleans_up(tmp_path):
    import os
    import pytest
    from dino_train.fileio import atomic_output
    target = tmp_path / "out.bin"
    with atomic_output(target) as f:
        f.write(b"complete")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"complete"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete"  # the previous file survives an interrupted write
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
