"""torchrun with 2 CPU processes (gloo) gives the loss of 1 process with the same total batch."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from .conftest import REPO, TINY_ARGS, losses, run_cli, write_images


def _torchrun(nproc: int, args: list[str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "dino_train.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


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


def test_two_processes_train_with_the_ibot_term(tmp_path):
    """iBOT's masks differ between processes (so no one-process match); the run must work,
    with the mask token's gradient and the patch centre averaged outside DDP."""
    images = write_images(tmp_path / "images", 16)
    # with the head's batch norm: per-process statistics on CPU (SyncBatchNorm is GPU-only)
    two = _torchrun(2, [*TINY_ARGS, "--data_path", str(images), "--batch_size_per_gpu", "4",
                        "--max-steps", "3", "--ibot-loss-weight", "1", "--use_bn_in_head",
                        "true", "--output_dir", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stderr.count("SyncBatchNorm needs CUDA") == 1
    records = [json.loads(line) for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert all(math.isfinite(r["ibot"]) and r["ibot"] > 0 for r in steps)
