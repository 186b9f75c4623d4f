"""The ``--max-minutes`` budget check: a warning when the time left ends the run before its
schedule does (README: Short runs)."""
from __future__ import annotations

import time

from .builders import Trainer
from .config import TrainConfig
from .progress import Progress
from .schedules import Schedules


def budget_warning(cfg: TrainConfig, schedules: Schedules, step: int, seconds_per_step: float,
                   seconds_left: float) -> str | None:
    """With ``--max-minutes``: a warning when, at ``seconds_per_step``, the time left ends the
    run before its schedule does (the lr, weight decay and teacher momentum span ``--epochs``;
    a cut schedule leaves the lr high and the teacher behind the student)."""
    total = schedules.total_iters
    if (cfg.max_minutes is None or step >= total or seconds_per_step <= 0
            or (cfg.max_steps is not None and cfg.max_steps < total)):
        return None
    reachable = step + max(0, int(seconds_left / seconds_per_step))
    if reachable >= total:
        return None
    lr_share = 100 * schedules.lr[reachable] / max(schedules.lr.max(), 1e-30)
    fit = reachable // schedules.iters_per_epoch
    advice = (f"pass --epochs {fit} (and the epoch options that depend on it) to finish it"
              if fit >= max(1, cfg.warmup_epochs, cfg.warmup_teacher_temp_epochs)
              else "lower --epochs or raise --max-minutes to finish it")
    return (f"at the speed so far the {total}-step schedule needs about "
            f"{(total - step) * seconds_per_step / 60:.0f} more minutes, but --max-minutes "
            f"{cfg.max_minutes:g} stops it near step {reachable}, with the lr at {lr_share:.0f}% "
            f"of its peak; {advice} (README: Short runs)")


class BudgetCheck:
    """Times ``span`` steps of this invocation, after the first ``skip`` (they include warming
    up), and then warns once if the schedule will not fit (:func:`budget_warning`)."""

    skip, span = 10, 40

    def __init__(self, t: Trainer, started: float, progress: Progress) -> None:
        self.begin = t.state.step + self.skip
        self.end = self.begin + self.span
        self.started, self.progress, self.mark = started, progress, None

    def after_step(self, t: Trainer) -> None:
        if t.cfg.max_minutes is None or t.state.step > self.end or not t.ctx.dist.is_main:
            return
        now = time.perf_counter()
        if t.state.step == self.begin:
            self.mark = now
        elif t.state.step == self.end and self.mark is not None:
            message = budget_warning(t.cfg, t.schedules, t.state.step,
                                     (now - self.mark) / (self.end - self.begin),
                                     60 * t.cfg.max_minutes - (now - self.started))
            if message:
                self.progress.warn(message)
