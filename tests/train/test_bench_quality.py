"""benchmarks/bench_quality.py: its data preparation, and one tiny run end to end (the recipe's
options must all be accepted by dino-train, and the gains printed must be the k-NN files'
difference)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import REPO, write_images

SCRIPT = REPO / "benchmarks" / "bench_quality.py"
_spec = importlib.util.spec_from_file_location("bench_quality", SCRIPT)
bq = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bq)


def _archive(tmp: Path, split: str, per_class: int, seed: int) -> Path:
    """``cifar10-<split>.tar.gz`` holding ``<split>/<class>/*.jpg``, two classes."""
    src = tmp / "src"
    write_images(src / split, 2 * per_class, size=(32, 32), seed=seed, classes=2)
    out = tmp / "shared" / f"cifar10-{split}.tar.gz"
    out.parent.mkdir(exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src / split, arcname=split)
    return out


def test_extract_once_and_subset_takes_the_first_images_by_name(tmp_path):
    archive = _archive(tmp_path, "train", 5, seed=0)
    work = tmp_path / "work"
    work.mkdir()
    train = bq.extract(archive, work, "train")
    assert sorted(p.name for p in train.iterdir()) == ["class0", "class1"]
    archive.unlink()  # a second call must not need the archive again
    assert bq.extract(archive, work, "train") == train

    sub = bq.subset(train, work / "sub", 3)
    names = sorted(p.name for p in (sub / "class1").iterdir())
    assert names == sorted(p.name for p in (train / "class1").iterdir())[:3]
    assert (sub / "class1" / names[0]).resolve() == (train / "class1" / names[0]).resolve()
    # Rebuilt, not added to, when made again with fewer.
    assert len(list((bq.subset(train, work / "sub", 2) / "class0").iterdir())) == 2
    assert len(list((bq.subset(train, work / "mon", 100, strict=False) / "class0").iterdir())) == 5
    with pytest.raises(SystemExit):
        bq.subset(train, work / "sub", 6)


def test_missing_data_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--shared-data", str(tmp_path / "none"),
                        "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=60,
                       cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "cifar10-train.tar.gz" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def test_corrupt_archive_is_a_one_line_error_and_leaves_nothing_half_extracted(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "cifar10-train.tar.gz").write_bytes(b"\x1f\x8b not really gzip" * 100)
    r = _script("--shared-data", str(shared), "--work", str(tmp_path / "w"))
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "could not be extracted" in r.stderr
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == []


def test_an_earlier_run_is_never_overwritten(tmp_path):
    _archive(tmp_path, "train", 4, seed=0)
    _archive(tmp_path, "test", 2, seed=1)
    earlier = tmp_path / "w" / "run"
    earlier.mkdir(parents=True)
    (earlier / "checkpoint.pth").write_bytes(b"earlier results")
    r = _script("--shared-data", str(tmp_path / "shared"), "--work", str(tmp_path / "w"),
                "--per-class", "4")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "--name" in r.stderr
    assert (earlier / "checkpoint.pth").read_bytes() == b"earlier results"


def test_seeded_tiny_runs_end_to_end_and_the_target_is_read_on_the_worst_seed(tmp_path):
    """Two seeds, each a whole tiny run (2 steps, the k-NN monitor every step, then k-NN of the
    trained and of the untrained network): each prints its own table, then the gains side by
    side, the target read on the worst seed. (One test: each run costs ~10 s of processes.)"""
    _archive(tmp_path, "train", 6, seed=0)
    _archive(tmp_path, "test", 3, seed=1)
    work = tmp_path / "work"
    r = _script("--shared-data", str(tmp_path / "shared"), "--work", str(work), "--name", "rec",
                "--per-class", "4", "--minutes", "5", "--nb-knn", "2,4", "--seeds", "0,1",
                "--target=-100", "--", "--max-steps", "2", "--batch_size_per_gpu", "4",
                "--num_workers", "0", "--no-progress", "--log-every", "1",
                "--knn-every-steps", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    per_seed, summary = r.stdout.split("over seeds 0, 1:")
    assert per_seed.count("trained 2 steps") == 2
    tables = [[float(v) for v in line.split()] for line in per_seed.splitlines()
              if line[:1].isdigit()]
    assert [int(row[0]) for row in tables] == [2, 4, 2, 4]   # seed 0's table, then seed 1's
    gains = {}
    for i, seed in enumerate((0, 1)):
        config = json.loads((work / f"rec_s{seed}" / "config.json").read_text())
        assert config["seed"] == seed
        res_run, res_init = (json.loads((work / f"rec_s{seed}{suffix}.knn.json").read_text())
                             for suffix in ("", "_init"))
        assert res_run["train_images"] == res_init["train_images"] == 8  # the 4-per-class bank
        trained = {x["k"]: x["top1"] for x in res_run["results"]}
        init = {x["k"]: x["top1"] for x in res_init["results"]}
        gains[seed] = {k: trained[k] - init[k] for k in trained}
        for k, before, after, gain in tables[2 * i:2 * i + 2]:
            assert before == pytest.approx(init[k], abs=0.006)  # printed with 2 decimals
            assert after == pytest.approx(trained[k], abs=0.006)
            assert gain == pytest.approx(trained[k] - init[k], abs=0.006)
        # The monitor ran on the bank and the test images (3 per class: all of them).
        records = [json.loads(x) for x in
                   (work / f"rec_s{seed}" / "log.jsonl").read_text().splitlines()]
        assert [x["step"] for x in records if "knn_top1" in x] == [1, 2]
        init_log = work / f"rec_s{seed}_init" / "log.jsonl"
        assert not init_log.exists() or not any(
            "loss" in json.loads(x) for x in init_log.read_text().splitlines())
    rows = {int(line.split()[0]): [float(v) for v in line.split()[1:]]
            for line in summary.splitlines() if line[:1].isdigit()}
    assert sorted(rows) == [2, 4]
    for k, (g0, g1, mean, low) in rows.items():
        assert g0 == pytest.approx(gains[0][k], abs=0.006)
        assert g1 == pytest.approx(gains[1][k], abs=0.006)
        assert mean == pytest.approx((gains[0][k] + gains[1][k]) / 2, abs=0.006)
        assert low == pytest.approx(min(gains[0][k], gains[1][k]), abs=0.006)
    assert summary.strip().splitlines()[-1] == "target -100: met by each of the 2 seeds at k = 2, 4"


@pytest.mark.parametrize("seeds, extra, reason", [
    ("0,x", [], "integers"), ("1,1", [], "repeats"), ("0,1", ["--seed", "3"], "--seeds"),
])
def test_bad_seeds_are_a_one_line_error(tmp_path, seeds, extra, reason):
    r = _script("--work", str(tmp_path / "w"), "--seeds", seeds, "--", *extra)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and reason in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()
