"""A second trainer on the same output folder is refused while the first runs, naming its PID,
and not after the first has died."""
from __future__ import annotations

import json

from .conftest import TINY_ARGS, losses, run_cli, start_cli, wait_for_steps, write_images


def test_a_second_trainer_on_the_same_folder_is_refused_naming_the_first(tmp_path):
    data = write_images(tmp_path / "images", 16)
    out = tmp_path / "out"
    common = [*TINY_ARGS, "--data-path", str(data), "--output-dir", str(out)]
    first = start_cli([*common, "--max-steps", "100000"])
    try:
        wait_for_steps(first, out, 1)
        second = run_cli([*common, "--max-steps", "100000"])
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"dino-train: --output-dir {out}: another dino-train (PID {first.pid}) is training "
            "in it; wait for it to end or stop it, or use another --output-dir"]
        steps_before = len(losses(out))
    finally:
        first.kill()  # SIGKILL: no clean-up at all, the lock file stays behind
        first.wait()
    assert (out / "train.lock").read_text().split() == [str(first.pid)]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len({r["step"] for r in records}) == len(records)  # nobody else logged steps
    assert steps_before >= 1
    resumed = run_cli([*common, "--max-steps", "1"])
    assert resumed.returncode == 0, resumed.stderr  # a dead holder's lock does not block
