"""The warning that ``--max-minutes`` will stop a run before its schedule ends."""
from __future__ import annotations

import pytest

from dino_train import train as T
from dino_train.train import TrainConfig, budget_warning, train

from .conftest import write_images


def _cfg(**kw) -> TrainConfig:
    base = dict(arch="vit_tiny", epochs=10, warmup_epochs=1, max_minutes=30.0)
    return TrainConfig(**{**base, **kw})


def test_no_warning_when_the_schedule_fits():
    # 100 steps left at 1 s: 1.7 minutes, 29 left
    assert budget_warning(_cfg(), 1.0, 50, 150, 29 * 60, 15) is None
    assert budget_warning(_cfg(max_minutes=None), 1.0, 50, 10**6, 60, 15) is None


def test_warning_names_the_stop_step_and_the_epochs_that_fit():
    # 1,560 steps of 156, 50 done, 1.2 s per step, 28 minutes left: 1,400 more steps fit
    message = budget_warning(_cfg(), 1.2, 50, 1560, 28 * 60, 156)
    assert message is not None
    assert "1560-step schedule" in message and "near step 1450" in message
    assert "--epochs 9 " in message and "--max-minutes 30 " in message


def test_no_epoch_advice_below_the_warmup():
    message = budget_warning(_cfg(warmup_epochs=3), 1.0, 10, 1000, 60, 100)
    assert message is not None and "--epochs" in message and "raise --max-minutes" in message


def test_max_steps_below_the_schedule_is_the_users_bound():
    assert budget_warning(_cfg(max_steps=100), 10.0, 50, 1560, 60, 156) is None


@pytest.mark.parametrize("epochs, minutes, warned", [(200, 0.1, True), (4, 10.0, False)])
def test_a_run_warns_once_on_stderr(tmp_path, capfd, monkeypatch, epochs, minutes, warned):
    """A real run: steps 2-5 are timed; 200 epochs of 2 steps do not fit in 6 seconds."""
    monkeypatch.setattr(T.BudgetCheck, "skip", 1)
    monkeypatch.setattr(T.BudgetCheck, "span", 4)
    write_images(tmp_path / "images", 8)
    cfg = TrainConfig(arch="vit_tiny", depth=1, out_dim=32, batch_size_per_gpu=4,
                      local_crops_number=0, global_crop_size=16, local_crop_size=16,
                      data_path=str(tmp_path / "images"), output_dir=str(tmp_path / "out"),
                      num_workers=0, epochs=epochs, warmup_epochs=0, saveckp_freq=1000,
                      max_minutes=minutes, progress=False)
    summary = train(cfg)
    err = capfd.readouterr().err
    assert summary.steps >= 5
    assert err.count("stops it near step") == (1 if warned else 0)
    if warned:
        assert summary.stopped_by == "max_minutes"
    else:
        assert summary.stopped_by == "epochs" and summary.steps == 8
