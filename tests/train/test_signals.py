"""SIGTERM, SIGHUP and SIGINT stop a run after its step, with a checkpoint of that step and status
128 + the signal; the same command then resumes it."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from dino_models.safe_load import load_pickle_checkpoint

from .conftest import TINY_ARGS, losses, run_cli, start_cli, wait_for_steps, write_images

STEPS = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 64 images in batches of 4: 16 steps an epoch, so no epoch-end checkpoint comes early
    return write_images(tmp_path_factory.mktemp("signals") / "images", 64)


def _stop_with(signum: int, args: list[str], out: Path, **popen) -> int:
    """Start a long run, send ``signum`` once it trains (to its process group with
    ``start_new_session``, as a terminal's Ctrl-C does), and check how it ended; returns the
    step of its checkpoint."""
    proc = start_cli([*args, "--max-steps", "100000"], **popen)
    wait_for_steps(proc, out, 2)
    if popen.get("start_new_session"):
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines() == ["dino-train: interrupted; run the same command again to "
                                        "resume"]
    stopped_at = load_pickle_checkpoint(out / "checkpoint.pth")["dino_edge"]["step"]
    assert stopped_at == max(losses(out))  # the checkpoint holds the last step it logged
    return stopped_at


# SIGHUP and SIGINT take the same handler (dino_core.signals.FINALISING_SIGNALS,
# tests/core/test_signals.py); a run here costs ~14 s
@pytest.mark.parametrize("signum", [signal.SIGTERM], ids=["SIGTERM"])
def test_signal_ends_the_step_writes_its_checkpoint_and_the_run_resumes(tmp_path, data, signum):
    out = tmp_path / "out"
    common = [*TINY_ARGS, "--data-path", str(data), "--output-dir", str(out)]
    stopped_at = _stop_with(signum, common, out)
    assert stopped_at < STEPS, "the run got too far before the signal; raise STEPS"
    again = run_cli([*common, "--max-steps", str(STEPS)])
    assert again.returncode == 0, again.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))  # continued, none twice
    assert load_pickle_checkpoint(out / "checkpoint.pth")["dino_edge"]["step"] == STEPS


def test_ctrl_c_in_a_terminal_with_loader_workers_is_handled_by_the_trainer(tmp_path, data):
    """A terminal's Ctrl-C (SIGINT) signals the whole process group, loader workers included:
    they leave it to the training process, which still ends its step and writes its
    checkpoint."""
    out = tmp_path / "out"
    args = list(TINY_ARGS)
    args[args.index("--num_workers") + 1] = "2"
    _stop_with(signal.SIGINT, [*args, "--data-path", str(data), "--output-dir", str(out)], out,
               start_new_session=True)


def test_a_signal_between_two_epochs_stops_before_the_next_one(tmp_path, monkeypatch):
    """A signal during the epoch-end checkpoint: no step of the next epoch is started."""
    import dino_train.loop as loop
    from dino_core.signals import Interrupted
    from dino_train.train import TrainConfig, train
    real_save = loop.save_checkpoint

    def save_then_signal(t, epoch_end: bool) -> None:
        real_save(t, epoch_end)
        if epoch_end:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's GracefulStop

    monkeypatch.setattr(loop, "save_checkpoint", save_then_signal)
    out = tmp_path / "out"
    cfg = TrainConfig(arch="vit_tiny", depth=2, out_dim=128, batch_size_per_gpu=4,
                      local_crops_number=2, global_crop_size=32, local_crop_size=16,
                      num_workers=0, epochs=20, warmup_epochs=1, log_every=1, progress=False,
                      precision="fp32", data_path=str(write_images(tmp_path / "images", 8)),
                      output_dir=str(out), max_steps=100)
    with pytest.raises(Interrupted) as stopped:
        train(cfg)  # 2 steps an epoch
    assert stopped.value.signum == signal.SIGTERM
    assert sorted(losses(out)) == [1, 2]
    record = load_pickle_checkpoint(out / "checkpoint.pth")["dino_edge"]
    assert (record["step"], record["epoch"]) == (2, 1)


def test_sigterm_to_the_whole_group_with_loader_workers_is_one_line(tmp_path, data):
    """systemd's default KillMode=control-group sends SIGTERM to the loader workers as well, and
    they die with it: the trainer ends without a traceback, with the last whole checkpoint."""
    out = tmp_path / "out"
    args = list(TINY_ARGS)
    args[args.index("--num_workers") + 1] = "2"
    proc = start_cli([*args, "--data-path", str(data), "--output-dir", str(out), "--max-steps",
                      "100000", "--ckpt-every-steps", "1"], start_new_session=True)
    wait_for_steps(proc, out, 2)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if "warning" not in line]
    assert lines == ["dino-train: interrupted; run the same command again to resume"], err
    record = load_pickle_checkpoint(out / "checkpoint.pth")["dino_edge"]
    assert record["step"] in losses(out)  # a whole checkpoint of a step it logged


QUIET_DEATHS_PROBE = """
import os, signal
from dino_core.signals import GracefulStop
from dino_train.loop import quiet_worker_deaths

signal.signal(signal.SIGCHLD, lambda *a: None)  # as torch's loader installs one
both = {signal.SIGTERM, signal.SIGCHLD}
with GracefulStop(quiet_worker_deaths) as stop:
    signal.pthread_sigmask(signal.SIG_BLOCK, both)
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGCHLD)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)  # both arrive before either handler runs
    sum(range(1000))
assert stop.signum == signal.SIGTERM
print("ok")
"""


def test_a_worker_death_pending_with_the_stopping_signal_is_not_reported():
    """The CI failure of 2026-12-01: a worker's SIGCHLD arrived together with SIGTERM; SIGTERM's
    handler replaced the SIGCHLD handler with SIG_DFL before Python ran the pending SIGCHLD, and
    CPython printed "OSError: Signal 17 ignored due to race condition" with a traceback."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", QUIET_DEATHS_PROBE], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert proc.stderr == ""
