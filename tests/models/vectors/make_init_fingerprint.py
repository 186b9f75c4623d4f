"""Write ``init_fingerprint.json``: the SHA-256 of every initial parameter of seeded models.

    PYTHONPATH=. python tests/models/vectors/make_init_fingerprint.py

Training benchmarks compare runs across releases, so a seeded model must start from the same
weights on every release. The stored file was made with the timm-based model of commit 0d7fb08
(timm 1.0.31, torch 2.14.1, CPU) before the layers moved into ``dino_models.layers``; the test
rebuilds the models with today's code and compares every parameter's bytes.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def seeded_models() -> dict[str, torch.nn.Module]:
    """name -> model built right after ``torch.manual_seed``; the order of draws matters."""
    from dino_models import DINOHead, vit_small, vit_tiny
    builders = {
        "vit_tiny16_depth2_seed0": (0, lambda: vit_tiny(depth=2)),
        "vit_small8_depth1_droppath_seed1": (1, lambda: vit_small(8, depth=1, drop_path_rate=0.1)),
        "dino_head192_seed0": (0, lambda: DINOHead(192, 256)),
    }
    models = {}
    for name, (seed, build) in builders.items():
        torch.manual_seed(seed)
        models[name] = build()
    return models


def fingerprint(model: torch.nn.Module) -> dict[str, str]:
    """parameter/buffer name -> SHA-256 of its float32 bytes."""
    return {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest()
            for k, v in model.state_dict().items()}


def main() -> None:
    data = {"torch": torch.__version__,
            "models": {name: fingerprint(m) for name, m in seeded_models().items()}}
    out = HERE / "init_fingerprint.json"
    out.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
