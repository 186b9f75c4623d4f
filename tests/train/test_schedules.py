"""Schedules against reference values of the official ``utils.cosine_scheduler``."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dino_train.schedules import build_schedules, cosine_schedule, teacher_temp_schedule

sys.path.insert(0, str(Path(__file__).parent / "vectors"))
from inputs import SCHEDULE_CASES  # noqa: E402

VECTORS = np.load(Path(__file__).parent / "vectors" / "loss_vectors.npz")


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
def test_cosine_schedule_matches_official(name):
    base, final, epochs, ipe, warm, start = SCHEDULE_CASES[name]
    ours = cosine_schedule(base, final, epochs, ipe, warm, start)
    np.testing.assert_array_equal(ours, VECTORS[f"sched/{name}"])


def test_build_schedules_scales_lr_by_total_batch():
    s = build_schedules(lr=0.0005, min_lr=1e-6, warmup_epochs=2, weight_decay=0.04,
                        weight_decay_end=0.4, momentum_teacher=0.996, epochs=10,
                        iters_per_epoch=7, total_batch=64)
    np.testing.assert_array_equal(s.lr, VECTORS["sched/lr"])
    np.testing.assert_array_equal(s.weight_decay, VECTORS["sched/wd"])
    np.testing.assert_array_equal(s.momentum, VECTORS["sched/momentum"])
    assert s.total_iters == 70 and s.lr.max() == pytest.approx(0.0005 * 64 / 256)


def test_teacher_momentum_end_below_one():
    """``momentum_teacher_end`` (DINOv2's final_momentum_teacher) replaces the official fixed
    end of 1; the lr and weight-decay schedules do not change."""
    kw = dict(lr=0.0005, min_lr=1e-6, warmup_epochs=2, weight_decay=0.04, weight_decay_end=0.4,
              momentum_teacher=0.99, epochs=10, iters_per_epoch=7, total_batch=64)
    official, short = build_schedules(**kw), build_schedules(**kw, momentum_teacher_end=0.995)
    assert official.momentum[-1] == pytest.approx(1.0, abs=1e-4)
    assert short.momentum[0] == 0.99 and short.momentum[-1] == pytest.approx(0.995, abs=1e-5)
    assert np.all(np.diff(short.momentum) >= 0) and np.all(short.momentum <= 0.995)
    np.testing.assert_array_equal(short.lr, official.lr)
    np.testing.assert_array_equal(short.weight_decay, official.weight_decay)


def test_teacher_temperature_warmup():
    t = teacher_temp_schedule(0.04, 0.07, 3, 5)
    np.testing.assert_allclose(t, [0.04, 0.055, 0.07, 0.07, 0.07])


def test_warmup_longer_than_training_is_an_error():
    with pytest.raises(ValueError, match="warm-up"):
        cosine_schedule(1.0, 0.0, 2, 5, warmup_epochs=3)
