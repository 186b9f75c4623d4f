"""The DAVIS evaluation: J and F as davis2017-evaluation defines them, and ``dino-eval davis``
on DAVIS-layout sets made here with exact ground truth (benchmarks/davis_synthetic.py: real
textured objects moved over the real videos, with occlusion, exit and re-entry)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dino_runtime.tracking import Tracker, TrackOptions, encode_palette_png
from dino_runtime.tracking.davis import (
    first_seed,
    official_size,
    open_davis,
    score_sequence,
    summary,
    write_results,
)
from dino_runtime.tracking.metrics import f_measure, jaccard, statistics
from dino_runtime.tracking.tracker import nearest

from .conftest import ROOT
from .test_torch_free import BLOCKER

VECTORS = Path(__file__).parent / "tracking_vectors"
spec = importlib.util.spec_from_file_location("davis_synthetic",
                                              ROOT / "benchmarks" / "davis_synthetic.py")
davis_synthetic = importlib.util.module_from_spec(spec)
sys.modules["davis_synthetic"] = davis_synthetic     # its dataclasses look their module up
spec.loader.exec_module(davis_synthetic)


@pytest.fixture(scope="module")
def davis_set(tmp_path_factory) -> Path:
    """Three sequences (cross, exit, three), 16 frames of 120x214."""
    out = tmp_path_factory.mktemp("davis")
    davis_synthetic.make_set(out, (120, 214), 16)
    return out


def square(shape, y, x, side) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y:y + side, x:x + side] = True
    return mask


def test_j_and_f_on_masks_whose_values_are_known():
    shape = (100, 200)                       # boundary tolerance ceil(0.008 * 223.6) = 2 px
    a = square(shape, 20, 20, 10)
    assert jaccard(a, square(shape, 20, 25, 10)) == pytest.approx(50 / 150)
    assert jaccard(a, a) == 1 and jaccard(~a & a, ~a & a) == 1    # two empty masks: 1
    assert f_measure(a, a) == 1
    assert f_measure(a, square(shape, 21, 21, 10)) == 1   # shifted within the tolerance
    assert f_measure(a, square(shape, 21, 22, 10)) < 1    # by sqrt(5) > 2 pixels
    assert f_measure(a, square(shape, 60, 120, 10)) == 0  # far away
    assert f_measure(a, np.zeros(shape, bool)) == 0 and f_measure(~a & a, ~a & a) == 1
    # the prediction adds a square of the same size far away: precision 1/2, recall 1
    assert f_measure(a, a | square(shape, 60, 120, 10)) == pytest.approx(2 / 3)
    mean, recall, decay = statistics(np.array([1, 1, 1, 1, 0, 0, 0, 0.0]))
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)       # first quarter 1, last quarter 0


def test_j_f_and_statistics_equal_the_davis_evaluation_code():
    """Reference values from davis2017-evaluation's own functions
    (tracking_vectors/make_davis_metric_reference.py), on blobs at 854x480 and 214x120,
    corner cases and per-frame series with NaN."""
    ref = np.load(VECTORS / "davis_metric_reference.npz")
    for i in range(len(ref["j"])):
        shape = tuple(ref[f"pair{i}/shape"])
        truth, prediction = (np.unpackbits(ref[f"pair{i}/{k}"])[:shape[0] * shape[1]]
                             .reshape(shape) for k in ("truth", "prediction"))
        assert jaccard(truth, prediction) == pytest.approx(ref["j"][i], abs=1e-12), i
        assert f_measure(truth, prediction) == pytest.approx(ref["f"][i], abs=1e-12), i
    series = np.split(ref["series"], np.cumsum(ref["series_lengths"])[:-1])
    ours = np.array([statistics(v) for v in series])
    np.testing.assert_allclose(ours, ref["stats"], atol=1e-12)


def test_official_sizes():
    assert official_size((480, 854)) == (480, 832)
    assert official_size((480, 910)) == (480, 896)
    assert official_size((1080, 1920)) == (480, 832)
    assert official_size((720, 540)) == (640, 480)     # portrait: width 480


def oracle_tracking(davis, sequence: str, grid: tuple[int, int], patch: int,
                    noise: float = 0.05):
    """(frame name, tracking) of a tracker whose patch features are the true object ids
    (one-hot, plus noise): what a perfect backbone would give it."""
    rng = np.random.default_rng(0)
    tracker = Tracker(TrackOptions(), patch, grid, first_seed(davis, sequence))
    for frame, annotation in zip(davis.frames(sequence), davis.annotations(sequence)):
        ids = nearest(davis.labels(annotation), grid)
        features = np.eye(8)[ids] + noise * rng.standard_normal((*grid, 8))
        image = np.zeros((*davis.labels(annotation).shape, 3), np.uint8)
        yield frame.name, tracker.update(image, features.reshape(-1, 8).astype(np.float32))


def test_oracle_features_track_through_occlusion_exit_and_reentry(davis_set, tmp_path):
    davis = open_davis(davis_set)
    scores, areas = [], []
    for sequence in davis.sequences:
        assert write_results(tmp_path / sequence, oracle_tracking(davis, sequence, (15, 26), 8)) == 16
        assert sorted(p.name for p in (tmp_path / sequence).iterdir()) == [
            f"{i:05d}.png" for i in range(16)]
        scored = score_sequence(davis, sequence, tmp_path)
        truth = [davis.labels(p) for p in davis.annotations(sequence)[1:-1]]
        areas += [[int((t == s.object).sum()) for t in truth] for s in scored]
        scores += scored
    # 7 objects: cross 2, exit 2, three 3; at 8-pixel patches the boundaries cost some J
    assert [f"{s.sequence}_{s.object}" for s in scores] == [
        "cross-0_1", "cross-0_2", "exit-1_1", "exit-1_2", "three-2_1", "three-2_2", "three-2_3"]
    overall = summary(scores)
    assert overall["J-Mean"] > 0.8 and overall["F-Mean"] > 0.6, overall
    for score, area in zip(scores, areas):
        for j, pixels in zip(score.j, area):
            if pixels == 0:         # out of the frame or hidden: nothing is predicted
                assert j == 1, (score.sequence, score.object)
            elif pixels > 500:      # 8 patches or more (after re-entry, after occlusion)
                assert j > 0.6, (score.sequence, score.object, score.j)
    assert min(areas[2]) == 0 and min(areas[4]) == 0   # the exit and the full occlusion


def test_ground_truth_scores_one_and_a_shifted_result_less(davis_set, tmp_path):
    davis = open_davis(davis_set)
    truth = davis_set / "Annotations" / "480p"
    scores = [s for seq in davis.sequences for s in score_sequence(davis, seq, truth)]
    assert all(s.j_stats[0] == 1 and s.f_stats[0] == 1 for s in scores)
    shifted = tmp_path / "shifted" / "cross-0"
    shifted.mkdir(parents=True)
    for path in davis.annotations("cross-0"):
        (shifted / path.name).write_bytes(encode_palette_png(np.roll(davis.labels(path), 6, 1)))
    moved = score_sequence(davis, "cross-0", tmp_path / "shifted")
    for score in moved:
        assert 0.5 < score.j_stats[0] < 1 and score.f_stats[0] < 1


def dino_eval(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from dino_train.cli import eval_main; "
                           "eval_main()", "davis", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_dino_eval_davis_runs_a_model_without_torch(tiny_onnx, davis_set, tmp_path):
    """The command a user runs, on an exported file with torch blocked (a base install)."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    results, scores = tmp_path / "results", tmp_path / "scores.json"
    out = dino_eval("--davis", davis_set, "--model", tiny_onnx, "--output-dir", results,
                    "--json", scores, "--sequences", "cross-0,exit-1", env=env)
    assert out.returncode == 0, out.stderr
    assert "DAVIS 2017 val: 2 sequences, 4 objects" in out.stdout
    assert "J&F-Mean" in out.stdout and "cross-0_2" in out.stdout
    assert "runs them at 832x480" in out.stderr              # the official size, named
    assert len(list((results / "cross-0").glob("*.png"))) == 16
    record = json.loads(scores.read_text())
    assert len(record["objects"]) == 4 and len(record["objects"][0]["J"]) == 14
    assert 0 <= record["overall"]["J-Mean"] <= 1 and record["model"] == str(tiny_onnx)
    again = dino_eval("--davis", davis_set, "--model", tiny_onnx, "--output-dir", results,
                      "--sequences", "cross-0", env=env)
    assert again.returncode == 1 and "add --overwrite" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_davis_2016_layout_and_bad_folders(davis_set, tmp_path):
    # The 2016 release: ImageSets/480p/val.txt of frame and mask paths, one object per sequence
    root = tmp_path / "davis2016"
    for folder in ("JPEGImages", "Annotations"):
        (root / folder).mkdir(parents=True)
        (root / folder / "480p").symlink_to(davis_set / folder / "480p")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "val.txt").write_text(
        "".join(f"/JPEGImages/480p/three-2/{i:05d}.jpg /Annotations/480p/three-2/{i:05d}.png\n"
                for i in range(16)))
    out = dino_eval("--davis", root, "--year", "2016", "--results",
                    davis_set / "Annotations" / "480p")
    assert out.returncode == 1 and "object id 3" in out.stderr   # a 2017 result: 3 ids
    merged = tmp_path / "merged" / "three-2"
    merged.mkdir(parents=True)
    davis16 = open_davis(root, "2016")
    assert davis16.sequences == ("three-2",)
    for path in davis16.annotations("three-2"):
        (merged / path.name).write_bytes(encode_palette_png(davis16.labels(path)))
    out = dino_eval("--davis", root, "--year", "2016", "--results", tmp_path / "merged")
    assert out.returncode == 0, out.stderr
    assert "1 sequences, 1 objects" in out.stdout and "three-2_1" in out.stdout
    for args, needle in (((tmp_path / "nothing",), "no JPEGImages/480p folder"),
                         ((davis_set, "--set", "test"), "no sequence list for DAVIS 2017 test")):
        out = dino_eval("--davis", *args, "--results", tmp_path)
        assert out.returncode == 1 and needle in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
