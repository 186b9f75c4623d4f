"""The output folder: made before the run, and given the resolved configuration."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_text

from .builders import Trainer


def make_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--output-dir {path}: exists and is not a directory") from None
    except PermissionError:
        raise UserError(f"--output-dir {path}: permission denied") from None


def write_config(t: Trainer) -> None:
    """``config.json``: every option, and what auto and the world size resolved to."""
    if not t.ctx.dist.is_main:
        return
    resolved = {**dataclasses.asdict(t.cfg), "resolved": {
        "arch": t.cfg.resolved_arch().short_name, "device": str(t.ctx.device),
        "precision": t.ctx.precision, "world_size": t.ctx.dist.world_size,
        "total_batch": t.cfg.batch_size_per_gpu * t.ctx.dist.world_size,
        "scaled_lr": t.cfg.lr * t.cfg.batch_size_per_gpu * t.ctx.dist.world_size / 256.0,
        "iters_per_epoch": t.schedules.iters_per_epoch, "ncrops": t.cfg.crops().ncrops,
        "skipped_at_scan": t.skipped_at_scan}}
    atomic_write_text(json.dumps(resolved, indent=2) + "\n", t.out / "config.json")
