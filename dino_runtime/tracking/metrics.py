"""The DAVIS measures: region similarity J, boundary F-measure F, and their mean, recall, decay.

Definitions as the DAVIS evaluation code (davisvideochallenge/davis2017-evaluation,
``davis2017/metrics.py`` and ``utils.py``; tests/runtime/tracking_vectors compares with it):

* J: intersection over union of the object's masks; 1 when both are empty.
* F: each mask's boundary is the set of pixels that differ from their right, lower or
  lower-right neighbour (``seg2bmap``, 1 pixel wide); a boundary pixel counts as matched when a
  boundary pixel of the other mask lies within a disc of radius ``ceil(0.008 * diagonal)``
  pixels (8 at 854x480); precision and recall of the matched pixels, and their harmonic mean.
  An empty prediction against a non-empty truth is 0, two empty masks 1.
* Over the frames of one object: mean, recall (the fraction of frames above 0.5) and decay
  (the mean over the first quarter of the frames minus that over the last quarter).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

BOUNDARY_TOLERANCE = 0.008   # of the image diagonal, DAVIS's bound_th
DECAY_BINS = 4


def jaccard(truth: np.ndarray, prediction: np.ndarray) -> float:
    """J of two (H, W) masks (any type, nonzero = object)."""
    truth, prediction = truth.astype(bool), prediction.astype(bool)
    union = np.count_nonzero(truth | prediction)
    return 1.0 if union == 0 else np.count_nonzero(truth & prediction) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) mask -> (H, W) bool: its 1-pixel boundary (DAVIS's ``_seg2bmap``)."""
    seg = mask.astype(bool)
    east, south, south_east = (np.zeros_like(seg) for _ in range(3))
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """The (2r+1, 2r+1) uint8 disc ``x^2 + y^2 <= r^2`` (scikit-image's ``disk``)."""
    span = np.arange(-radius, radius + 1)
    return ((span[:, None] ** 2 + span[None, :] ** 2) <= radius ** 2).astype(np.uint8)


def tolerance_pixels(shape: tuple[int, int], tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """DAVIS's ``bound_pix``: a fraction of the diagonal, rounded up (or pixels when >= 1)."""
    return int(tolerance if tolerance >= 1 else math.ceil(tolerance * math.hypot(*shape)))


def f_measure(truth: np.ndarray, prediction: np.ndarray,
              tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """F of two (H, W) masks (nonzero = object)."""
    radius = tolerance_pixels(truth.shape, tolerance)
    pred_b, truth_b = boundary_map(prediction), boundary_map(truth)
    n_pred, n_truth = np.count_nonzero(pred_b), np.count_nonzero(truth_b)
    if n_pred == 0 or n_truth == 0:
        return 1.0 if n_pred == n_truth else 0.0
    kernel = disk(radius)
    pred_near = cv2.dilate(pred_b.astype(np.uint8), kernel).astype(bool)
    truth_near = cv2.dilate(truth_b.astype(np.uint8), kernel).astype(bool)
    precision = np.count_nonzero(pred_b & truth_near) / n_pred
    recall = np.count_nonzero(truth_b & pred_near) / n_truth
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """(mean, recall, decay) of one object's per-frame J or F values (DAVIS's
    ``db_statistics``; NaN values are left out of the means)."""
    values = np.asarray(per_frame, np.float64)
    mean = float(np.nanmean(values)) if values.size else math.nan
    recall = float(np.nanmean(values > 0.5)) if values.size else math.nan
    ids = (np.round(np.linspace(1, len(values), DECAY_BINS + 1) + 1e-10) - 1).astype(int)
    bins = [values[ids[i]:ids[i + 1] + 1] for i in range(DECAY_BINS)]
    with np.errstate(all="ignore"):
        first = np.nanmean(bins[0]) if bins[0].size else math.nan
        last = np.nanmean(bins[-1]) if bins[-1].size else math.nan
    return mean, recall, float(first - last)
