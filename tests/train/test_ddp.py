"""torchrun with 2 CPU processes (gloo) gives the loss of 1 process with the same total batch."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dino_train import distributed as D
from dino_train.builders import TrainState
from dino_train.context import TrainContext
from dino_train.logging_utils import IntervalMeter
from dino_train.progress import log_record

from .conftest import REPO, TINY_ARGS, losses, run_cli, write_images

PROBE = Path(__file__).with_name("collectives_probe.py")


def _torchrun(nproc: int, args: list[str], probe: Path | None = None) -> subprocess.CompletedProcess:
    """``dino-train ARGS`` under torchrun; with ``probe``, every collective is recorded there
    (:mod:`tests.train.collectives_probe`)."""
    entry = ["-m", "dino_train.cli"] if probe is None else [str(PROBE)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *entry, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    if probe is not None:
        env["COLLECTIVES_OUT"] = str(probe)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO, env=env)


def off_device(records: list[dict], device: str) -> list[dict]:
    """The collective calls handed a tensor that is not on ``device``."""
    return [r for r in records if any(d != device for d in r["devices"])]


@pytest.mark.parametrize("centering", ["center", "sinkhorn_knopp"])
def test_two_processes_match_one_process_with_the_same_total_batch(tmp_path, centering):
    """The centre (or the Sinkhorn-Knopp sums) are all-reduced: the same loss either way."""
    images = write_images(tmp_path / "images", 16)
    # deterministic views and no stochastic depth: both runs see exactly the same computation
    common = [*TINY_ARGS, "--data_path", str(images), "--deterministic-crops",
              "--drop_path_rate", "0", "--max-steps", "4", "--lr", "0.05",
              "--centering", centering]
    one = run_cli([*common, "--batch_size_per_gpu", "8", "--output_dir", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, [*common, "--batch_size_per_gpu", "4", "--output_dir",
                        str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert a[1] != a[4]  # the weights moved, so later steps test the averaged gradients
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


@pytest.fixture(scope="module")
def ibot_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """2 processes with the iBOT term and the head's batch norm, collectives recorded."""
    tmp = tmp_path_factory.mktemp("ddp_ibot")
    images = write_images(tmp / "images", 16)
    (tmp / "collectives").mkdir()
    # with the head's batch norm: per-process statistics on CPU (SyncBatchNorm is GPU-only)
    two = _torchrun(2, [*TINY_ARGS, "--data_path", str(images), "--batch_size_per_gpu", "4",
                        "--max-steps", "3", "--ibot-loss-weight", "1", "--use_bn_in_head",
                        "true", "--output_dir", str(tmp / "two")], probe=tmp / "collectives")
    assert two.returncode == 0, two.stderr[-3000:]
    return tmp, two


def test_two_processes_train_with_the_ibot_term(ibot_run):
    """iBOT's masks differ between processes (so no one-process match); the run must work,
    with the mask token's gradient and the patch centre averaged outside DDP."""
    tmp, two = ibot_run
    assert two.stderr.count("SyncBatchNorm needs CUDA") == 1
    records = [json.loads(line) for line in (tmp / "two" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["ibot"]) and r["ibot"] > 0 for r in steps)


def test_every_collective_gets_tensors_on_the_run_device(ibot_run):
    """NCCL takes only tensors on the process's GPU: a CPU tensor in the log record stopped a
    multi-GPU run at its first log line. gloo takes anything, so the devices are recorded."""
    tmp, _ = ibot_run
    device = json.loads((tmp / "two" / "config.json").read_text())["resolved"]["device"]
    for rank in (0, 1):
        calls = json.loads((tmp / "collectives" / f"rank{rank}.json").read_text())
        where = {name for call in calls for name in call["callers"]}
        # the paths that hand tensors to collectives: the log record, the stop check, the
        # teacher centres, the mask token's gradient, the checkpoint's RNG states
        assert {"progress.log_record", "loop.should_stop", "loss.update_center",
                "step.backward_and_step", "checkpointing.save_checkpoint"} <= where, where
        assert off_device(calls, device) == []
        # the check sees devices: were the run's device another one, every call would differ
        assert len(off_device(calls, "meta")) == len([c for c in calls if c["devices"]]) > 0


class _Handed(Exception):
    """Raised by the stand-in collective once it has seen the tensor."""


def test_collective_helpers_hand_tensors_on_the_process_device(monkeypatch):
    """A run whose device is not the CPU ("meta" stands in for a GPU here): the log record, the
    mean and the stop flag reach the collective on that device (the log record's tensor was
    made on the CPU)."""
    handed = []

    def collective(tensor, *args, **kwargs):
        handed.append(str(tensor.device))
        raise _Handed

    monkeypatch.setattr(torch.distributed, "all_reduce", collective)
    info = D.DistInfo(rank=0, world_size=2, device="meta")
    trainer = SimpleNamespace(state=TrainState(step=1),
                              ctx=TrainContext(torch.device("meta"), "fp32", info))
    meter = IntervalMeter()
    meter.update(1.5, 4, 0.0, {"koleo": 0.5})
    for call in (lambda: log_record(trainer, meter),
                 lambda: D.all_reduce_mean(torch.tensor([1.0]), info),
                 lambda: D.any_process(True, info)):
        with pytest.raises(_Handed):
            call()
    assert handed == ["meta"] * 3
