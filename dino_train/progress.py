"""What a run reports while it trains: the progress bar, the ``log.jsonl`` records, and the
periodic k-NN accuracy of the teacher (``--knn-every-steps``)."""
from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch

from . import distributed as D
from .builders import Trainer
from .diagnostics import DIAGNOSTICS
from .logging_utils import IntervalMeter, JsonlLog

log = logging.getLogger(__name__)
# The log record's terms averaged over processes (the other figures are this process's own).
AVERAGED_TERMS = ("loss", "koleo", "ibot", *DIAGNOSTICS)


class Progress:
    """tqdm bar on the main process (``--progress``); a no-op elsewhere."""

    def __init__(self, t: Trainer, total: int) -> None:
        self.bar = None
        self.teacher: dict[str, str] = {}  # the last record's diagnostics, in short
        if t.cfg.progress and t.ctx.dist.is_main:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=t.state.step, unit="step", dynamic_ncols=True)

    def update(self, loss: float, lr: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}",
                                 **self.teacher, refresh=False)
            self.bar.update(1)

    def show_teacher(self, record: dict[str, Any]) -> None:
        """The teacher's entropy (as a share of ln K), KL(teacher || student) and prototypes in
        use, from a log record, on the bar from now on: ``H=0.62lnK, KL=0.31, protos=1234``."""
        if "teacher_entropy_frac" in record:
            self.teacher = {"H": f"{record['teacher_entropy_frac']:.2f}lnK",
                            "KL": f"{record['kl']:.3g}",
                            "protos": f"{record['prototypes_used']:.0f}"}

    def warn(self, message: str) -> None:
        """A warning through :mod:`logging`, on a line of its own when the bar is shown."""
        if self.bar is None:
            log.warning(message)
            return
        with self.bar.external_write_mode(file=sys.stderr):  # clears the bar, then redraws it
            log.warning(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_record(t: Trainer, meter: IntervalMeter) -> dict[str, Any]:
    """The ``log.jsonl`` record of the steps since the last one (a collective when
    distributed: every process calls it at the same step)."""
    it = max(t.state.step - 1, 0)
    stats = meter.summary()
    terms = [key for key in AVERAGED_TERMS if key in stats]
    # Created on the run's device: NCCL rejects CPU tensors in a collective.
    values = torch.tensor([stats[key] for key in terms], device=t.ctx.device)
    stats.update(zip(terms, D.all_reduce_mean(values, t.ctx.dist).tolist()))
    return {"step": t.state.step, "epoch": t.state.epoch, **stats,
            "images_per_s": stats["images_per_s"] * t.ctx.dist.world_size,
            "lr": float(t.schedules.lr[it]), "wd": float(t.schedules.weight_decay[it]),
            "momentum": float(t.schedules.momentum[it]),
            "teacher_temp": float(t.loss.teacher_temp_schedule[t.state.epoch]),
            "skipped_files": t.skipped_at_scan + t.state.skipped_files, "time": time.time()}


def monitor_knn(t: Trainer, log_file: JsonlLog) -> None:
    """k-NN top-1/top-5 (k=20) of the teacher backbone on the monitoring folders."""
    if t.ctx.dist.is_main:
        from .knn import knn_evaluate, labelled_folder
        train = labelled_folder(t.cfg.knn_train_data, max_per_class=t.cfg.knn_max_per_class)
        val = labelled_folder(t.cfg.knn_val_data, train.classes, t.cfg.knn_max_per_class)
        k = min(20, len(train.paths))
        (res,) = knn_evaluate(t.nets.teacher.backbone, train, val, ks=(k,),
                              image_size=t.cfg.global_crop_size, device=str(t.ctx.device),
                              num_workers=min(2, t.cfg.num_workers),
                              dtype=t.ctx.autocast_dtype)
        log_file.write({"step": t.state.step, "epoch": t.state.epoch, "knn_k": k,
                        "knn_top1": res.top1, "knn_top5": res.top5, "time": time.time()})
    D.barrier(t.ctx.dist)
