"""A run killed with SIGKILL and resumed continues exactly like an uninterrupted run."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from dino_models.safe_load import load_pickle_checkpoint

from .conftest import REPO, TINY_ARGS, losses, run_cli, write_images

STEPS = 14


@pytest.mark.parametrize("options", [
    [],
    # Every option that carries state of its own, in one run (each run costs ~30 s): DINOv2's
    # terms (KoLeo adds no state, Sinkhorn-Knopp replaces the running centre), iBOT (the mask
    # token, its centre and the masks' RNG) and the views made from the batch in the training
    # process (drawn from (seed, step, rank)).
    ["--koleo-loss-weight", "0.1", "--centering", "sinkhorn_knopp", "--ibot-loss-weight", "1",
     "--augmentation", "batched"],
], ids=["dino", "koleo-sinkhorn-ibot-batched-views"])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, options):
    images = write_images(tmp_path / "images", 16)  # 4 steps per epoch: resumes cross epochs
    common = [*TINY_ARGS, "--data_path", str(images), "--ckpt-every-steps", "3",
              "--drop_path_rate", "0.1",  # stochastic depth: the RNG state must be restored too
              *options]
    straight = tmp_path / "straight"
    done = run_cli([*common, "--output_dir", str(straight), "--max-steps", str(STEPS)])
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    code = "import sys; from dino_train.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, *common, "--output_dir", str(killed),
                             "--max-steps", "100000"], cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoint.pth").exists():
        assert proc.poll() is None and time.time() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed_from = load_pickle_checkpoint(killed / "checkpoint.pth")["dino_edge"]["step"]
    if resumed_from >= STEPS:
        pytest.fail(f"the killed run got to step {resumed_from} before the kill; raise STEPS")

    again = run_cli([*common, "--output_dir", str(killed), "--max-steps", str(STEPS)])
    assert again.returncode == 0, again.stderr
    expected, got = losses(straight), losses(killed)
    after = [s for s in range(resumed_from + 1, STEPS + 1)]
    assert after and all(s in got for s in after)
    # same process, same kernels, same data and RNG: bit-identical, not just close
    assert [got[s] for s in after] == [expected[s] for s in after]
    final = load_pickle_checkpoint(killed / "checkpoint.pth")
    assert final["dino_edge"]["step"] == STEPS
    leftovers = [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers


def test_network_option_mismatch_names_the_first_differing_option():
    import dataclasses

    from dino_models.checkpoint import TOOLKIT_KEY
    from dino_train.checkpointing import first_reason, network_option_mismatch
    from dino_train.config import TrainConfig
    cfg = TrainConfig(arch="vit_tiny", patch_size=4, data_path="/d")
    record = {"short_name": "vit_t4", "depth": 12, "config": dataclasses.asdict(cfg)}
    assert network_option_mismatch({TOOLKIT_KEY: record}, cfg) is None
    assert network_option_mismatch({"student": {}}, cfg) is None  # official: no record
    other = dataclasses.replace(cfg, out_dim=4096)
    assert network_option_mismatch({TOOLKIT_KEY: record}, other) == \
        "--out-dim 65536 (this run: 4096)"
    other = dataclasses.replace(cfg, patch_size=8)
    assert network_option_mismatch({TOOLKIT_KEY: record}, other) == \
        "--arch vit_t4 (this run: vit_t8)"
    assert network_option_mismatch({TOOLKIT_KEY: record},
                                   dataclasses.replace(cfg, depth=12)) is None  # the arch's own
    assert network_option_mismatch({TOOLKIT_KEY: record}, dataclasses.replace(cfg, depth=6)) == \
        "--depth 12 (this run: 6)"
    error = RuntimeError("Error(s) in loading state_dict for M:\n\tsize mismatch for w: a, b")
    assert first_reason(error) == "Error(s) in loading state_dict for M: size mismatch for w: a, b"
    assert first_reason(ValueError("one line")) == "one line"
