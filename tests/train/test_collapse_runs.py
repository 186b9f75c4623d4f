"""DINO's two collapse modes on real images: a ViT-Tiny/4 (1 block) on 300 CIFAR-10 images at
32 px, 130 steps. The default recipe trains without a warning; --no-sharpening (centering
alone) is reported as uniform and goes on; --centering none (sharpening alone) is reported as
one prototype and, with --stop-on-collapse, stops with exit status 1 and a checkpoint that a
run with centering resumes from. The three runs start together (one thread each) and are
shared by the tests below."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dino_models.safe_load import load_pickle_checkpoint
from dino_train.diagnostics import DIAGNOSTICS

from .conftest import REPO, run_cli

PER_CLASS = 30
MAX_STEPS = 130
RUN = ["--arch", "vit_tiny", "--patch_size", "4", "--depth", "1", "--out_dim", "256",
       "--head-hidden-dim", "256", "--batch_size_per_gpu", "16", "--local_crops_number", "2",
       "--global-crop-size", "32", "--local-crop-size", "16", "--augmentation", "batched",
       "--num_workers", "0", "--epochs", "12", "--warmup_epochs", "1", "--lr", "0.005",
       "--log-every", "10", "--no-progress", "--precision", "fp32",
       "--collapse-after", "30", "--collapse-window", "30"]
ABLATIONS = {"default": [], "centering_only": ["--no-sharpening"],
             "sharpening_only": ["--centering", "none", "--stop-on-collapse"]}


def cifar_subset(archive: Path, out: Path, per_class: int) -> Path:
    """The first ``per_class`` images of each class of a CIFAR-10 archive, read as a stream."""
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) != 3 or counts.get(parts[1], 0) >= per_class:
                continue
            counts[parts[1]] = counts.get(parts[1], 0) + 1
            (out / parts[1]).mkdir(parents=True, exist_ok=True)
            (out / parts[1] / parts[2]).write_bytes(tar.extractfile(member).read())
            if len(counts) == 10 and min(counts.values()) >= per_class:
                break
    return out


@pytest.fixture(scope="module")
def cifar(shared_data, tmp_path_factory) -> Path:
    return cifar_subset(shared_data / "cifar10-test.tar.gz",
                        tmp_path_factory.mktemp("cifar") / "images", PER_CLASS)


@pytest.fixture(scope="module")
def runs(cifar, tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """name -> (output folder, finished process) of the three runs, started together."""
    root = tmp_path_factory.mktemp("ablations")
    code = "import sys; from dino_train.cli import main; main(sys.argv[1:])"
    procs = {}
    for name, extra in ABLATIONS.items():
        args = [*RUN, "--data_path", str(cifar), "--output_dir", str(root / name),
                "--max-steps", str(MAX_STEPS), *extra]
        procs[name] = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"}, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        done[name] = (root / name, subprocess.CompletedProcess(proc.args, proc.returncode,
                                                                out, err))
    return done


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "teacher collapse" in line]


def test_the_default_recipe_never_warns_and_logs_every_diagnostic(runs):
    folder, proc = runs["default"]
    assert proc.returncode == 0, proc.stderr
    assert _warnings(proc.stderr) == []
    records = _log(folder)
    assert not [r for r in records if "collapse" in r]
    train = [r for r in records if "loss" in r]
    assert train[-1]["step"] == MAX_STEPS
    # every record (each --log-every 10 steps and each epoch's end, at 18, 36, ...) measured
    assert [r["step"] for r in train][:4] == [10, 18, 20, 30]
    for r in train:
        assert set(DIAGNOSTICS) <= set(r)
        assert 1 <= r["prototypes_used"] <= 256 and 0 < r["top_prototype_share"] <= 1
    assert (folder / "training.png").stat().st_size > 0


def test_centering_alone_is_reported_once_as_uniform_and_the_run_goes_on(runs):
    folder, proc = runs["centering_only"]
    assert proc.returncode == 0, proc.stderr
    (line,) = _warnings(proc.stderr)
    assert "(uniform)" in line and "--no-sharpening" in line and "ln K" in line
    (record,) = [r for r in _log(folder) if "collapse" in r]
    assert record["collapse"] == "uniform" and record["step"] <= MAX_STEPS
    last = [r for r in _log(folder) if "loss" in r][-1]
    assert last["step"] == MAX_STEPS
    assert last["teacher_entropy_frac"] >= 0.98  # the teacher is flat...
    assert json.loads((folder / "config.json").read_text())["sharpening"] is False


def test_sharpening_alone_is_reported_as_one_prototype_and_stops_with_a_checkpoint(runs):
    folder, proc = runs["sharpening_only"]
    assert proc.returncode == 1, proc.stderr
    (line,) = _warnings(proc.stderr)
    assert "(one prototype)" in line and "--centering center" in line
    assert proc.stderr.strip().splitlines()[-1].startswith("dino-train: stopped at step")
    (record,) = [r for r in _log(folder) if "collapse" in r]
    assert record["collapse"] == "one-prototype"
    ckpt = load_pickle_checkpoint(folder / "checkpoint.pth")
    assert ckpt["dino_edge"]["step"] == record["step"] < MAX_STEPS
    assert (folder / "training.png").stat().st_size > 0


def test_the_stopped_run_resumes_from_its_checkpoint_with_centering(runs, cifar):
    folder, _ = runs["sharpening_only"]
    stopped = load_pickle_checkpoint(folder / "checkpoint.pth")["dino_edge"]["step"]
    r = run_cli([*RUN, "--data_path", str(cifar), "--output_dir", str(folder),
                 "--max-steps", str(stopped + 3), "--log-every", "1", "--centering", "center"])
    assert r.returncode == 0, r.stderr
    resumed = [x["step"] for x in _log(folder) if "loss" in x and x["step"] > stopped]
    assert resumed == [stopped + 1, stopped + 2, stopped + 3]
    assert load_pickle_checkpoint(folder / "checkpoint.pth")["dino_edge"]["step"] == stopped + 3
