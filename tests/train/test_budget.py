"""The warning that ``--max-minutes`` will stop a run before its schedule ends."""
from __future__ import annotations

import time

import pytest

from dino_core.cli import configure_logging
from dino_train import budget as B
from dino_train import loop as L
from dino_train.budget import budget_warning
from dino_train.schedules import build_schedules
from dino_train.train import TrainConfig, train

from .conftest import write_images


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="vit_tiny", epochs=10, warmup_epochs=1, max_minutes=30.0)
    return TrainConfig(**{**base, **kw})


def _schedules(cfg: TrainConfig, iters_per_epoch: int):
    return build_schedules(0.002, 1e-6, cfg.warmup_epochs, 0.04, 0.4, 0.99, cfg.epochs,
                           iters_per_epoch, 64)


def test_no_warning_when_the_schedule_fits():
    cfg = _cfg(epochs=10)  # 150 steps: 100 left at 1 s is 1.7 minutes, 29 are left
    assert budget_warning(cfg, _schedules(cfg, 15), 50, 1.0, 29 * 60) is None
    cfg = _cfg(max_minutes=None)
    assert budget_warning(cfg, _schedules(cfg, 15), 50, 100.0, 60) is None


def test_warning_names_the_stop_step_the_lr_and_the_epochs_that_fit():
    # 1,560 steps of 156, 50 done, 1.2 s per step, 28 minutes left: 1,400 more steps fit
    cfg = _cfg()
    sched = _schedules(cfg, 156)
    message = budget_warning(cfg, sched, 50, 1.2, 28 * 60)
    assert message is not None
    assert "1560-step schedule" in message and "near step 1450" in message
    assert "--epochs 9 " in message and "--max-minutes 30 " in message
    share = round(100 * sched.lr[1450] / sched.lr.max())
    assert 0 < share < 10 and f"lr at {share}% of its peak" in message


def test_time_already_spent_stops_at_the_current_step():
    cfg = _cfg()
    message = budget_warning(cfg, _schedules(cfg, 156), 50, 1.0, -5.0)
    assert message is not None and "near step 50," in message


def test_no_epoch_advice_below_the_warmup():
    cfg = _cfg(warmup_epochs=3)
    message = budget_warning(cfg, _schedules(cfg, 100), 10, 1.0, 60)
    assert message is not None and "--epochs" in message and "raise --max-minutes" in message


def test_max_steps_below_the_schedule_is_the_users_bound():
    cfg = _cfg(max_steps=100)
    assert budget_warning(cfg, _schedules(cfg, 156), 50, 10.0, 60) is None


class _Clock:
    """``time`` for the loop and the budget check whose perf_counter advances 1 s per call: the run's speed
    is then fixed by the code path, not by the machine."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now

    @staticmethod
    def time() -> float:
        return time.time()


@pytest.mark.parametrize("epochs, warned", [(200, True), (4, False)])
def test_a_run_warns_once_on_stderr(tmp_path, capfd, monkeypatch, epochs, warned):
    """A real run, steps 2-5 timed: 200 epochs of 2 steps do not fit in 2 (fake) minutes,
    4 epochs do."""
    monkeypatch.setattr(B.BudgetCheck, "skip", 1)
    monkeypatch.setattr(B.BudgetCheck, "span", 4)
    clock = _Clock()  # one clock for both modules, as the one time module before the split
    monkeypatch.setattr(L, "time", clock)
    monkeypatch.setattr(B, "time", clock)
    configure_logging("dino-train")  # warnings print as under the command, to capfd's stderr
    write_images(tmp_path / "images", 8)
    cfg = TrainConfig(arch="vit_tiny", depth=1, out_dim=32, batch_size_per_gpu=4,
                      local_crops_number=0, global_crop_size=16, local_crop_size=16,
                      data_path=str(tmp_path / "images"), output_dir=str(tmp_path / "out"),
                      num_workers=0, epochs=epochs, warmup_epochs=0, saveckp_freq=1000,
                      max_minutes=2, progress=False)
    summary = train(cfg)
    err = capfd.readouterr().err
    assert err.count("stops it near step") == (1 if warned else 0)
    if warned:
        assert summary.stopped_by == "max_minutes" and 5 < summary.steps < 400
    else:
        assert summary.stopped_by == "epochs" and summary.steps == 8
