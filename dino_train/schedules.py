"""Per-iteration schedules of the DINO recipe: lr, weight decay, teacher momentum and temperature.

Each schedule is a NumPy array indexed by the global iteration (``epoch * iters_per_epoch + it``),
or by the epoch for the teacher temperature, with the official values (``utils.cosine_scheduler``
and ``DINOLoss.teacher_temp_schedule`` of facebookresearch/dino).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine_schedule(base_value: float, final_value: float, epochs: int, iters_per_epoch: int,
                    warmup_epochs: int = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """Linear warm-up from ``start_warmup_value`` to ``base_value``, then a half cosine to
    ``final_value``; shape (epochs * iters_per_epoch,)."""
    warmup_iters = warmup_epochs * iters_per_epoch
    total = epochs * iters_per_epoch
    if warmup_iters > total:
        raise ValueError(f"{warmup_epochs} warm-up epochs is more than the {epochs} epochs")
    warmup = np.linspace(start_warmup_value, base_value, warmup_iters) if warmup_iters else \
        np.array([])
    iters = np.arange(total - warmup_iters)
    cosine = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    return np.concatenate((warmup, cosine))


def teacher_temp_schedule(warmup_teacher_temp: float, teacher_temp: float,
                          warmup_epochs: int, epochs: int) -> np.ndarray:
    """Teacher temperature per epoch: linear warm-up, then constant; shape (epochs,)."""
    return np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warmup_epochs),
                           np.ones(epochs - warmup_epochs) * teacher_temp))


@dataclass(frozen=True)
class Schedules:
    """The three per-iteration schedules of one run, each shape (epochs * iters_per_epoch,)."""

    lr: np.ndarray
    weight_decay: np.ndarray
    momentum: np.ndarray
    iters_per_epoch: int

    @property
    def total_iters(self) -> int:
        return len(self.lr)


def build_schedules(lr: float, min_lr: float, warmup_epochs: int, weight_decay: float,
                    weight_decay_end: float, momentum_teacher: float, epochs: int,
                    iters_per_epoch: int, total_batch: int,
                    momentum_teacher_end: float = 1.0) -> Schedules:
    """The official schedules; ``lr`` is for a batch of 256 and scaled linearly to ``total_batch``.
    The teacher momentum goes from ``momentum_teacher`` to ``momentum_teacher_end`` (official: 1,
    fixed; DINOv2's ``final_momentum_teacher``)."""
    return Schedules(
        lr=cosine_schedule(lr * total_batch / 256.0, min_lr, epochs, iters_per_epoch,
                           warmup_epochs=warmup_epochs),
        weight_decay=cosine_schedule(weight_decay, weight_decay_end, epochs, iters_per_epoch),
        momentum=cosine_schedule(momentum_teacher, momentum_teacher_end, epochs, iters_per_epoch),
        iters_per_epoch=iters_per_epoch)
