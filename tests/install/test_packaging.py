"""Packaging: console scripts point at real commands; the runtime and the core import without
torch."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import tomllib

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
        "import dino_core, dino_core.metadata, dino_core.cli, dino_runtime, dino_runtime.cli\n"
        "try:\n    import torch\nexcept ImportError:\n    pass\n"
        "else:\n    raise SystemExit('torch was importable: the block failed')\n"
        "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_trt_extra_allows_exactly_the_supported_tensorrt_releases():
    """10.3 (JetPack 6) up to the 11.x whose API the surface test checks; nothing older, and no
    major whose API nobody has checked."""
    from packaging.requirements import Requirement

    from dino_export.tensorrt import MIN_VERSION
    from tests.tensorrt_api import load, roles
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    (tensorrt,) = [Requirement(r) for r in extras["trt"] if Requirement(r).name == "tensorrt"]
    assert all(load(role).version in tensorrt.specifier for role in roles())
    assert ".".join(map(str, MIN_VERSION)) + ".0" in tensorrt.specifier
    for outside in ("8.6.1", "10.2.0.post1", "12.0.0"):
        assert outside not in tensorrt.specifier
