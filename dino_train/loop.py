"""The training loop: :func:`train` runs (or resumes) a run as configured, epoch by epoch,
until ``--epochs``, ``--max-steps``, ``--max-minutes`` or a stopping signal ends it.

SIGINT, SIGTERM and SIGHUP (Ctrl-C, ``docker stop``, systemd, a closed SSH session) end the step
in progress, write the checkpoint, and then raise :class:`~dino_core.signals.Interrupted`, which
the command turns into exit status 128 + the signal; running the same command again resumes.
"""
from __future__ import annotations

import signal as signals
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from dino_core.errors import UserError
from dino_core.signals import GracefulStop, Interrupted

from . import distributed as D
from .budget import BudgetCheck
from .builders import Trainer, build_trainer
from .checkpointing import resume, save_checkpoint
from .collapse import CollapseWatch
from .config import TrainConfig
from .context import make_context
from .logging_utils import IntervalMeter, JsonlLog, plot_training
from .outputs import lock_output_dir, make_output_dir, write_config
from .progress import Progress, log_record, monitor_knn
from .step import closes_a_record, make_views, train_step


@dataclass
class TrainSummary:
    steps: int
    epoch: int
    last_loss: float | None
    stopped_by: str   # "epochs" | "max_steps" | "max_minutes" (a signal raises Interrupted,
    #                   a collapse with --stop-on-collapse raises Collapsed)


class Collapsed(UserError):
    """``--stop-on-collapse``: the teacher collapsed; the checkpoint of the last step is written."""


def should_stop(t: Trainer, started: float, signal: GracefulStop) -> str | None:
    """Why the run stops after this step, if it does; every process gets the same answer."""
    if D.any_process(signal.requested, t.ctx.dist):
        return "signal"
    if t.cfg.max_steps is not None and t.state.step >= t.cfg.max_steps:
        return "max_steps"
    if t.cfg.max_minutes is not None:
        late = time.perf_counter() - started > 60 * t.cfg.max_minutes
        if D.any_process(late, t.ctx.dist):
            return "max_minutes"
    return None


def quiet_worker_deaths(reason: str) -> None:
    """On a stopping signal: the loader workers may have received it too (systemd's default
    KillMode=control-group signals the whole group) and die; torch's SIGCHLD handler would then
    raise in the middle of a step or while the loader shuts down. The run stops after this step
    anyway, so worker deaths are no longer errors (see :func:`batches`).

    The replacement is a Python function, not ``SIG_DFL``: a SIGCHLD that arrived together with
    the stopping signal is still pending when this runs, and CPython reports a pending signal
    whose handler became ``SIG_DFL`` as "Signal 17 ignored due to race condition"."""
    if hasattr(signals, "SIGCHLD") and threading.current_thread() is threading.main_thread():
        signals.signal(signals.SIGCHLD, _ignore_child)


def _ignore_child(signum: int, frame: Any) -> None:
    """SIGCHLD after a stopping signal: a loader worker ended; nothing to do."""


def batches(t: Trainer, signal: GracefulStop) -> Iterator[Any]:
    """The loader's batches; a loader that fails after a stopping signal (its workers died of
    the same signal) ends the epoch instead of raising."""
    loader = iter(t.loader)
    while True:
        try:
            yield next(loader)
        except StopIteration:
            return
        except RuntimeError:
            if signal.requested:
                return
            raise


def watch_collapse(t: Trainer, watch: CollapseWatch, record: dict, log: JsonlLog,
                   progress: Progress) -> bool:
    """Check a training record for collapse; a new one is warned about once (and recorded in
    ``log.jsonl``). True when the run must stop for it (``--stop-on-collapse``). Every process
    reads the same record (averaged over processes), so all decide alike."""
    collapse = watch.check(record)
    if collapse is None:
        return False
    if t.ctx.dist.is_main:
        progress.warn(collapse.message)
        log.write({"step": collapse.step, "epoch": t.state.epoch, "collapse": collapse.mode,
                   "warning": collapse.message, "time": time.time()})
    return t.cfg.stop_on_collapse


def run_epoch(t: Trainer, log: JsonlLog, progress: Progress, started: float,
              signal: GracefulStop, budget: BudgetCheck | None = None,
              watch: CollapseWatch | None = None) -> str | None:
    """Train the rest of the current epoch; returns why it stopped early, if it did."""
    t.sampler.set_epoch(t.state.epoch)
    t.sampler.start_batch = t.state.step_in_epoch
    meter, last = IntervalMeter(), time.perf_counter()
    for batch, skipped in batches(t, signal):
        crops = make_views(t, batch)
        data_time = time.perf_counter() - last  # waiting for the loader, and making the views
        t.state.skipped_files += int(skipped.sum())
        loss = train_step(t, crops, diagnose=closes_a_record(t))
        t.state.step += 1
        t.state.step_in_epoch += 1
        if budget is not None:
            budget.after_step(t)
        meter.update(loss, len(skipped), data_time, t.last_terms, t.loss.last_diagnostics)
        progress.update(loss, float(t.schedules.lr[t.state.step - 1]),
                        meter.images * t.ctx.dist.world_size / max(time.perf_counter() - meter.started, 1e-9))
        if t.state.step % t.cfg.log_every == 0:
            record = log_record(t, meter)
            if t.ctx.dist.is_main:
                log.write(record)
            progress.show_teacher(record)
            meter = IntervalMeter()
            if watch is not None and watch_collapse(t, watch, record, log, progress):
                return "collapse"
        if t.cfg.knn_every_steps and t.state.step % t.cfg.knn_every_steps == 0 and t.cfg.knn_train_data:
            monitor_knn(t, log)
        if t.cfg.ckpt_every_steps and t.state.step % t.cfg.ckpt_every_steps == 0:
            save_checkpoint(t, epoch_end=False)
        stop = should_stop(t, started, signal)
        if stop:
            if meter.steps:
                record = log_record(t, meter)
                if t.ctx.dist.is_main:
                    log.write(record)
            return stop
        last = time.perf_counter()
    if meter.steps:
        record = log_record(t, meter)
        if t.ctx.dist.is_main:
            log.write(record)
    # every step checks for a signal, so one here means the loader ended early (see batches)
    return "signal" if signal.requested else None


def train(cfg: TrainConfig) -> TrainSummary:
    """Run (or resume) a DINO training as configured; returns how far it got.

    Raises :class:`~dino_core.signals.Interrupted` after a stopping signal, once the checkpoint
    is written.
    """
    cfg.validate()
    ctx = make_context(cfg)
    try:
        trainer = build_trainer(cfg, ctx)  # bad data fails here, before any folder is made
        make_output_dir(trainer.out)
        lock = lock_output_dir(trainer.out, ctx.dist)
        try:
            return _train(trainer)
        finally:
            if lock is not None:
                lock.release()
    finally:
        D.shutdown(ctx.dist)


def _train(t: Trainer) -> TrainSummary:
    resume(t)
    write_config(t)
    log = JsonlLog(t.out / "log.jsonl")
    total = t.schedules.total_iters if t.cfg.max_steps is None else \
        min(t.cfg.max_steps, t.schedules.total_iters)
    progress, started, stop, last_loss = Progress(t, total), time.perf_counter(), None, None
    with GracefulStop(quiet_worker_deaths) as signal:
        stop = should_stop(t, started, signal)
        budget, watch = BudgetCheck(t, started, progress), CollapseWatch(t.cfg)
        try:
            while stop is None and t.state.epoch < t.cfg.epochs:
                stop = run_epoch(t, log, progress, started, signal, budget, watch)
                if stop is None:
                    t.state.epoch += 1
                    t.state.step_in_epoch = 0
                    save_checkpoint(t, epoch_end=True)
                    if D.any_process(signal.requested, t.ctx.dist):  # came between two steps
                        stop = "signal"
                elif t.state.last_checkpoint_step != t.state.step:
                    save_checkpoint(t, epoch_end=False)
                if t.ctx.dist.is_main:
                    plot_training(log, t.out / "training.png")
        finally:
            progress.close()
        if t.state.last_checkpoint_step != t.state.step:  # e.g. --max-steps 0: initial weights
            save_checkpoint(t, epoch_end=False)
    if signal.requested:
        raise Interrupted(signal.signum)
    if stop == "collapse":
        raise Collapsed(f"stopped at step {t.state.step} on the collapse above "
                        f"(--stop-on-collapse); {t.out / 'checkpoint.pth'} holds that step: "
                        "run again with the options changed to resume from it, or with "
                        "--no-resume to start over")
    records = [r for r in log.records() if "loss" in r]
    if records:
        last_loss = records[-1]["loss"]
    return TrainSummary(t.state.step, t.state.epoch, last_loss, stop or "epochs")
