"""Reference vectors from the official facebookresearch/dino code for tests/train.

    python tests/train/vectors/make_loss_vectors.py /path/to/facebookresearch/dino

writes ``loss_vectors.npz`` next to this file: DINOLoss outputs and centres (every ``center_stride``-th entry) over 3 steps for two
configurations, and ``utils.cosine_scheduler`` / teacher-temperature schedules. Inputs are not stored:
``inputs.py`` regenerates them from ``numpy.random.RandomState`` seeds.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from inputs import LOSS_CASES, SCHEDULE_CASES, center_stride, loss_inputs  # noqa: E402


def official_modules(repo: Path):
    sys.path.insert(0, str(repo))
    import torch
    import torch.distributed as dist
    if not dist.is_initialized():  # the official DINOLoss all-reduces the centre unconditionally
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29533")
        dist.init_process_group("gloo", rank=0, world_size=1)
    import main_dino
    import utils
    return torch, main_dino, utils


def main(repo: str) -> None:
    torch, main_dino, utils = official_modules(Path(repo))
    out: dict[str, np.ndarray] = {}
    for name, (out_dim, nlocal, batch, wt, t, wte, epochs, used) in LOSS_CASES.items():
        ncrops = 2 + nlocal
        loss = main_dino.DINOLoss(out_dim, ncrops, wt, t, wte, epochs)
        for step, (epoch, (s, te)) in enumerate(zip(used, loss_inputs(name))):
            value = loss(torch.from_numpy(s), torch.from_numpy(te), epoch)
            out[f"{name}/loss_{step}"] = np.array(value.item(), dtype=np.float64)
            # every stride-th centre entry keeps the file small (at most 1024 values a step)
            out[f"{name}/center_{step}"] = loss.center.numpy()[:, ::center_stride(out_dim)].copy()
        out[f"{name}/config"] = np.array([out_dim, ncrops, batch, wt, t, wte, epochs], np.float64)
        out[f"{name}/epochs_used"] = np.array(used)
        out[f"{name}/teacher_temp_schedule"] = np.asarray(loss.teacher_temp_schedule)
    for name, (base, final, epochs, ipe, warm, start) in SCHEDULE_CASES.items():
        out[f"sched/{name}"] = utils.cosine_scheduler(base, final, epochs, ipe, warm, start)
        out[f"sched/{name}_args"] = np.array([base, final, epochs, ipe, warm, start], np.float64)
    target = Path(__file__).with_name("loss_vectors.npz")
    np.savez_compressed(target, **out)
    print(f"wrote {target} ({target.stat().st_size} bytes, torch {torch.__version__})")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_loss_vectors.py /path/to/facebookresearch/dino")
    main(sys.argv[1])
