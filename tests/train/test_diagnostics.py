"""The teacher's diagnostics against direct computations on hand-made distributions, and the
collapse watch on hand-made records (dino_train.diagnostics, dino_train.collapse)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dino_train.collapse import ONE_PROTOTYPE, UNIFORM, CollapseWatch
from dino_train.config import TrainConfig
from dino_train.diagnostics import DIAGNOSTICS, teacher_diagnostics
from dino_train.logging_utils import IntervalMeter
from dino_train.loss import DINOLoss, teacher_targets


def _named(values: torch.Tensor) -> dict[str, float]:
    return dict(zip(DIAGNOSTICS, values.tolist()))


def _direct(q: np.ndarray, loss: float, center: np.ndarray) -> dict[str, float]:
    """The definitions, in float64 numpy, written out."""
    k = q.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(q > 0, q * np.log(q), 0.0)
    h = -plogp.sum(axis=1).mean()
    mean = q.mean(axis=0)
    hb = -sum(p * math.log(p) for p in mean if p > 0)
    return {"teacher_entropy": h, "teacher_entropy_frac": h / math.log(k), "kl": loss - h,
            "batch_entropy": hb, "prototypes_used": math.exp(hb),
            "top_prototype_share": mean.max(), "center_norm": np.linalg.norm(center)}


@pytest.mark.parametrize("case", ["uniform", "one_prototype", "two_halves", "dirichlet"])
def test_values_match_the_definitions(case):
    n, k = 8, 16
    rng = np.random.default_rng(0)
    q = {"uniform": np.full((n, k), 1 / k),
         "one_prototype": np.eye(k)[[3] * n],
         "two_halves": np.eye(k)[[0] * (n // 2) + [1] * (n // 2)],
         "dirichlet": rng.dirichlet(np.full(k, 0.3), size=n)}[case]
    center = rng.normal(size=(1, k))
    got = _named(teacher_diagnostics(torch.tensor(q, dtype=torch.float32), torch.tensor(2.5),
                                     torch.tensor(center, dtype=torch.float32)))
    want = _direct(q, 2.5, center)
    for name in DIAGNOSTICS:
        assert got[name] == pytest.approx(want[name], rel=1e-5, abs=1e-5), name
    known = {"uniform": dict(teacher_entropy_frac=1.0, prototypes_used=k,
                             top_prototype_share=1 / k),
             "one_prototype": dict(teacher_entropy=0.0, prototypes_used=1.0,
                                   top_prototype_share=1.0),
             "two_halves": dict(teacher_entropy=0.0, prototypes_used=2.0,
                                top_prototype_share=0.5),
             "dirichlet": {}}[case]
    for name, value in known.items():
        assert got[name] == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("centering", ["center", "sinkhorn_knopp", "none"])
def test_kl_is_the_mean_kl_over_the_loss_pairs(centering):
    """KL = loss - mean teacher entropy equals KL(q_t || p_s) averaged directly over the
    (teacher crop, other student crop) pairs; the centre's norm is that of the centre the
    targets were made with (before this step's update)."""
    torch.manual_seed(0)
    ncrops, batch, k, temp = 4, 5, 32, 0.04
    loss = DINOLoss(k, ncrops, temp, temp, 0, 1, centering=centering)
    loss.center.copy_(torch.randn(1, k) * 0.3)
    before = loss.center.clone()
    student, teacher = torch.randn(ncrops * batch, k), torch.randn(2 * batch, k)
    value = loss(student, teacher, 0)
    got = _named(loss.last_diagnostics)

    q = teacher_targets(teacher, before, temp, centering).double().chunk(2)
    log_p = torch.log_softmax(student.double() / 0.1, dim=-1).chunk(ncrops)
    kls = [(qi * (qi.clamp_min(1e-300).log() - log_p[v])).sum(-1).mean()
           for i, qi in enumerate(q) for v in range(ncrops) if v != i]
    assert got["kl"] == pytest.approx(float(sum(kls) / len(kls)), abs=2e-5)
    h = float(-(torch.cat(q) * torch.cat(q).clamp_min(1e-300).log()).sum(-1).mean())
    assert got["teacher_entropy"] == pytest.approx(h, abs=1e-5)
    assert got["teacher_entropy"] + got["kl"] == pytest.approx(value.item(), abs=1e-5)
    assert got["center_norm"] == pytest.approx(before.norm().item(), rel=1e-6)


def test_centering_none_uses_the_raw_teacher_and_leaves_the_centre():
    torch.manual_seed(1)
    teacher = torch.randn(6, 8)
    loss = DINOLoss(8, 2, 0.05, 0.05, 0, 1, centering="none")
    loss(torch.randn(6, 8), teacher, 0)
    assert torch.equal(loss.center, torch.zeros(1, 8))
    torch.testing.assert_close(teacher_targets(teacher, torch.ones(1, 8), 0.05, "none"),
                               torch.softmax(teacher / 0.05, dim=-1))


def test_diagnostics_can_be_switched_off():
    loss = DINOLoss(8, 2, 0.04, 0.04, 0, 1)
    loss.diagnose = False
    loss(torch.randn(4, 8), torch.randn(4, 8), 0)
    assert loss.last_diagnostics is None


def test_meter_averages_the_diagnostics_of_its_steps():
    meter = IntervalMeter()
    for values in (torch.arange(7.0), torch.arange(7.0) + 2):
        meter.update(1.0, 4, 0.0, None, values)
    summary = meter.summary()
    assert [summary[name] for name in DIAGNOSTICS] == pytest.approx(list(range(1, 8)))


# -- the collapse watch ----------------------------------------------------------------------
HEALTHY = dict(teacher_entropy=4.0, teacher_entropy_frac=0.72, kl=0.5, batch_entropy=5.3,
               prototypes_used=200.0, top_prototype_share=0.02, center_norm=1.0)
FLAT = dict(HEALTHY, teacher_entropy=5.53, teacher_entropy_frac=0.997, kl=0.01,
            prototypes_used=255.0)
ONE = dict(HEALTHY, teacher_entropy=0.3, teacher_entropy_frac=0.05, kl=0.1,
           prototypes_used=1.6, top_prototype_share=0.8)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(data_path="x", out_dim=256, collapse_after=20, collapse_window=30, **kw)


def _feed(watch: CollapseWatch, kinds: list[dict], every: int = 10) -> list:
    return [(i + 1) * every for i, kind in enumerate(kinds)
            if watch.check({"step": (i + 1) * every, "epoch": 0, "lr": 1e-4,
                            "teacher_temp": 0.04, "loss": kind["teacher_entropy"] + kind["kl"],
                            **kind}) is not None]


def test_a_healthy_run_never_warns():
    assert _feed(CollapseWatch(_cfg()), [HEALTHY] * 50) == []


def test_a_collapse_is_reported_once_after_the_window():
    # records at steps 10, 20, ...: checks start after step 20; the streak starts at step 20
    # (the start of the record at 30) and lasts 30 steps at step 50
    assert _feed(CollapseWatch(_cfg()), [FLAT] * 20) == [50]
    # before --collapse-after nothing counts, and a streak broken by one healthy record restarts
    assert _feed(CollapseWatch(_cfg()), [FLAT] * 4 + [HEALTHY] + [FLAT] * 5) == [80]
    assert _feed(CollapseWatch(_cfg()), [FLAT, HEALTHY] * 10) == []


def test_the_two_modes_are_told_apart_with_their_cause():
    watch = CollapseWatch(_cfg(sharpening=False))
    found = [watch.check({"step": 10 * (i + 1), "epoch": 0, "teacher_temp": 0.1, **FLAT})
             for i in range(6)]
    (uniform,) = [c for c in found if c]
    assert uniform.mode == UNIFORM
    assert "ln K" in uniform.message and "--no-sharpening" in uniform.message
    assert "\n" not in uniform.message

    watch = CollapseWatch(_cfg(centering="none"))
    found = [watch.check({"step": 10 * (i + 1), "epoch": 0, "teacher_temp": 0.04, **ONE})
             for i in range(6)]
    (one,) = [c for c in found if c]
    assert one.mode == ONE_PROTOTYPE
    assert "80%" in one.message and "--centering center" in one.message


@pytest.mark.parametrize("options, record, mode, named", [
    ({}, {"teacher_temp": 0.1}, UNIFORM, "--teacher-temp 0.04"),
    ({"teacher_temp": 0.09, "warmup_teacher_temp": 0.09}, {"teacher_temp": 0.09}, UNIFORM,
     "above 0.07"),
    ({"warmup_teacher_temp": 0.06, "warmup_teacher_temp_epochs": 5}, {}, UNIFORM,
     "--warmup-teacher-temp 0.04"),
    ({"out_dim": 65536, "batch_size_per_gpu": 8}, {}, UNIFORM, "--out-dim 1024"),
    ({"out_dim": 256}, {}, UNIFORM, "--lr"),
    ({"center_momentum": 0.999}, {}, ONE_PROTOTYPE, "--center-momentum 0.9"),
    ({}, {"teacher_temp": 0.01}, ONE_PROTOTYPE, "--teacher-temp 0.04"),
    ({"norm_last_layer": False}, {}, ONE_PROTOTYPE, "--norm-last-layer true"),
    ({}, {}, ONE_PROTOTYPE, "a lower --lr"),
])
def test_the_likely_cause_comes_from_the_runs_settings(options, record, mode, named):
    cfg = TrainConfig(data_path="x", **{"collapse_after": 0, "collapse_window": 1, **options})
    kind = FLAT if mode == UNIFORM else ONE
    found = CollapseWatch(cfg).check({"step": 5, "epoch": 0, "teacher_temp": 0.04,
                                      **kind, **record})
    assert found is not None and found.mode == mode
    assert named in found.message.split("likely cause")[1], found.message


def test_no_sharpening_puts_the_teacher_at_the_students_temperature():
    from dino_core.errors import OptionError
    cfg = TrainConfig(data_path="x", sharpening=False)
    assert cfg.teacher_temps() == (0.1, 0.1)
    assert (cfg.official_args().teacher_temp, cfg.official_args().warmup_teacher_temp) == \
        (0.1, 0.1)  # what the run used, for readers of the official args
    with pytest.raises(OptionError, match="--no-sharpening .* drop --teacher-temp"):
        TrainConfig(data_path="x", sharpening=False, teacher_temp=0.07).validate()
    with pytest.raises(OptionError, match="--center-momentum 1: must be in"):
        TrainConfig(data_path="x", center_momentum=1.0).validate()
