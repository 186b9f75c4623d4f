"""Produce ``davis_metric_reference.npz``: J, F and their statistics by the DAVIS evaluation code.

Usage (the DAVIS repository is NOT part of this project; fetch it separately):

    git clone https://github.com/davisvideochallenge/davis2017-evaluation /tmp/davis2017_ref
    python tests/runtime/tracking_vectors/make_davis_metric_reference.py /tmp/davis2017_ref

Runs ``davis2017.metrics.db_eval_iou`` and ``db_eval_boundary`` (its ``f_measure``, with
scikit-image's ``disk``) and ``davis2017.utils.db_statistics`` on:

* mask pairs: blobs (unions of ellipses, seeded) at 480x854 (the DAVIS size: 8-pixel boundary
  tolerance) and 120x214 (2 pixels), each against a shifted, grown, shrunk or unrelated version
  of itself, and the corner cases (empty against empty, empty against a blob, the full frame,
  one pixel, a one-pixel line at the border);
* per-frame value series of several lengths (with NaN entries) for mean, recall and decay.

Stored: the masks (bit-packed), ``j``, ``f`` (one per pair), the series and ``stats``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def blob(rng: np.random.Generator, shape: tuple[int, int], count: int = 3) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    h, w = shape
    for _ in range(count):
        centre = (int(rng.integers(w // 6, 5 * w // 6)), int(rng.integers(h // 6, 5 * h // 6)))
        axes = (int(rng.integers(3, w // 5)), int(rng.integers(3, h // 5)))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def variants(rng: np.random.Generator, mask: np.ndarray) -> list[np.ndarray]:
    shifted = np.roll(mask, (int(rng.integers(-6, 7)), int(rng.integers(-12, 13))), (0, 1))
    kernel = np.ones((5, 5), np.uint8)
    grown = cv2.dilate(mask.astype(np.uint8), kernel, iterations=2).astype(bool)
    shrunk = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
    return [mask.copy(), shifted, grown, shrunk, blob(rng, mask.shape)]


def pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for shape in ((480, 854), (120, 214)):
        for _ in range(3):
            truth = blob(rng, shape)
            out += [(truth, v) for v in variants(rng, truth)]
        empty, full = np.zeros(shape, bool), np.ones(shape, bool)
        dot, line = empty.copy(), empty.copy()
        dot[shape[0] // 2, shape[1] // 3] = True
        line[-1, 10:60] = True
        some = blob(rng, shape)
        out += [(empty, empty), (empty, some), (some, empty), (full, full), (full, some),
                (dot, dot), (dot, line), (line, line)]
    return out


def series() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    out = []
    for length in (1, 2, 3, 4, 5, 7, 23, 48, 78, 103):
        values = rng.uniform(0, 1, length)
        if length > 4:
            values[rng.integers(0, length, 2)] = np.nan
        out.append(values)
    return out


def main(repo: str) -> None:
    sys.path.insert(0, repo)
    from davis2017.metrics import db_eval_boundary, db_eval_iou
    from davis2017.utils import db_statistics
    masks = pairs()
    j = np.array([db_eval_iou(t.astype(np.uint8), p.astype(np.uint8)) for t, p in masks])
    f = np.array([db_eval_boundary(t.astype(np.uint8), p.astype(np.uint8)) for t, p in masks])
    values = series()
    stats = np.array([db_statistics(v) for v in values])
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    arrays = {"davis_commit": np.array(commit), "j": j, "f": f, "stats": stats,
              "series_lengths": np.array([len(v) for v in values]),
              "series": np.concatenate(values)}
    for i, (t, p) in enumerate(masks):
        arrays[f"pair{i}/shape"] = np.array(t.shape)
        arrays[f"pair{i}/truth"] = np.packbits(t)
        arrays[f"pair{i}/prediction"] = np.packbits(p)
    out = HERE / "davis_metric_reference.npz"
    np.savez_compressed(out, **arrays)
    print(f"{len(masks)} pairs, J {np.round(j, 3)}, F {np.round(f, 3)}")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
