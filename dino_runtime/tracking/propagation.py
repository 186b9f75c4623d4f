"""Label propagation over patch features, the official DINO video segmentation, for a stream.

The algorithm is facebookresearch/dino's ``eval_video_segmentation.py`` (Caron et al. 2021,
Sec. 4.2.2; after Jabri et al. 2020): for each patch of a new frame, take its affinities
``exp(cos / 0.1)`` to the patches of the first frame and of the ``context`` last frames that
lie in a ``(2 radius + 1)^2`` window around it (``radius`` 0: the whole frame), keep the
``topk`` largest over all those frames (and every value tied with the k-th), normalise them to
sum 1 and mix the source patches' labels with them. The new frame's soft labels join the
context; the first frame's one-hot labels stay.

The official script builds dense ``(h w) x (h w)`` affinities per context frame and a dense
0/1 neighbourhood mask made by four nested Python loops (1.2 GB for ViT-S/8 at 480p). Here the
grid is cut into tiles of target patches; each tile is compared with the window of source
patches its neighbourhoods cover (a few hundred patches instead of h w), in one matrix
product over all context frames. What lies outside a target's own neighbourhood is never
selected (its maxima and values are read over its own rows and columns of the window), which is
what the official mask's zeros do: exp > 0 everywhere else, so no zero reaches the top-k.

The top-k needs only the k-th largest value per target: it is found among the source rows
(of one tile's window) with the k largest row maxima, since every value above the k-th lies
in such a row; the labels are then mixed from the rows whose maximum reaches it, which also
keeps every value tied with the k-th, as the official ``aff[aff < tk_val_min] = 0`` does.

Shapes: features ``(h, w, D)`` float32 (any norm: L2-normalised here), labels ``(h, w, C)``
float32 with C the object count plus background.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np

TEMPERATURE = 0.1   # the official affinity exp(cos / 0.1)
TILE = 8            # target patches per tile side: see _tile_side


@dataclass(frozen=True)
class Tile:
    """Target patches ``ys x xs`` and the rows ``wy`` of its band's columns that their
    neighbourhoods cover. Target row i's neighbourhood holds window rows ``rows[i]`` (a
    half-open range), target column j's window columns ``cols[j]``."""

    ys: slice
    xs: slice
    wy: slice
    band: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]


def layout(grid: tuple[int, int], radius: int) -> tuple[list[slice], list[Tile]]:
    """Column bands (the window columns of each column of tiles) and the tiles covering
    ``grid`` (h, w) for neighbourhood ``radius`` (0: the whole grid)."""
    h, w = grid
    if radius <= 0:
        radius = max(h, w)
    side = _tile_side(radius) if (h > radius + 1 or w > radius + 1) else max(h, w)
    bands, out = [], []
    for x0 in range(0, w, side):
        xs = slice(x0, min(w, x0 + side))
        wx = slice(max(0, xs.start - radius), min(w, xs.stop + radius))
        bands.append(wx)
        for y0 in range(0, h, side):
            ys = slice(y0, min(h, y0 + side))
            wy = slice(max(0, ys.start - radius), min(h, ys.stop + radius))
            out.append(Tile(ys, xs, wy, len(bands) - 1, _ranges(ys, wy, radius),
                            _ranges(xs, wx, radius)))
    return bands, out


def _ranges(targets: slice, window: slice, radius: int) -> tuple[tuple[int, int], ...]:
    """Per target position, its neighbourhood as a range of window positions."""
    return tuple((max(t - radius, window.start) - window.start,
                  min(t + radius + 1, window.stop) - window.start)
                 for t in range(targets.start, targets.stop))


def _tile_side(radius: int) -> int:
    # Larger tiles make longer matrix products (faster per product) but wider windows (more of
    # them wasted outside each target's neighbourhood); TILE balanced the two for ViT-S/16 and
    # S/8 at 480p (benchmarks/bench_tracking.py), and a tile never needs to exceed the window.
    return max(1, min(TILE, 2 * radius + 1))


_blas = None


def one_blas_thread() -> AbstractContextManager:
    """A context in which numpy's BLAS runs on one thread.

    The tracker runs beside the model's inference, which keeps every core busy; OpenBLAS's
    own threads then spin against it (its matrix products ran 7x slower on 2 threads than on 1
    on the loaded 2-core machine, benchmarks/bench_tracking.py). Process-wide while it lasts.
    """
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController   # scans the loaded libraries once
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def l2_normalize(features: np.ndarray) -> np.ndarray:
    """(..., D) -> float32 unit vectors (a zero vector stays zero, as F.normalize's eps does)."""
    features = np.asarray(features, np.float32)
    norm = np.linalg.norm(features, axis=-1, keepdims=True)
    return features / np.maximum(norm, np.float32(1e-12))


class LabelPropagation:
    """The context of one stream (first frame, ring of the last ``context`` frames) and the
    propagation step. ``start`` with the first frame's features and labels, then ``step`` once
    per frame in order; ``step`` returns the frame's soft labels (h, w, C).

    The context is kept per column band, ``(D, h, slots, band width)`` with slot 0 the first
    frame and slots 1..context a ring: a tile's window over every slot is then a matrix of D
    contiguous rows (its rows of its band), multiplied in place, and a new frame is copied in
    once, into every band it belongs to (about 4x its size for ViT-S/16 at 480p), instead of
    gathering each window for each frame.
    """

    def __init__(self, context: int = 7, radius: int = 12, topk: int = 5) -> None:
        self.context, self.radius, self.topk = context, radius, topk
        self.bands: list[slice] = []
        self.tiles: list[Tile] = []
        self.band_features: list[np.ndarray] = []   # per band (D, h, 1 + context, width)
        self.band_labels: list[np.ndarray] = []     # per band (h, 1 + context, width, C)
        self.filled = 0        # ring slots in use
        self.next_slot = 1     # where the next frame goes (ring over slots 1..context)

    @property
    def started(self) -> bool:
        return bool(self.band_features)

    def start(self, features: np.ndarray, labels: np.ndarray) -> None:
        """features (h, w, D), labels (h, w, C) (one-hot for a mask): the first frame."""
        h, w, dim = features.shape
        if labels.shape[:2] != (h, w):
            raise ValueError(f"labels {labels.shape[:2]} and features {(h, w)} differ in grid")
        slots, classes = 1 + self.context, labels.shape[2]
        self.bands, self.tiles = layout((h, w), self.radius)
        self.band_features = [np.zeros((dim, h, slots, wx.stop - wx.start), np.float32)
                              for wx in self.bands]
        self.band_labels = [np.zeros((h, slots, wx.stop - wx.start, classes), np.float32)
                            for wx in self.bands]
        self.filled, self.next_slot = 0, 1
        self._store(0, l2_normalize(features), np.asarray(labels, np.float32))

    def step(self, features: np.ndarray) -> np.ndarray:
        """features (h, w, D) of the next frame -> its soft labels (h, w, C), then remembered."""
        if not self.started:
            raise RuntimeError("start() the propagation with a first frame")
        target = l2_normalize(features)
        out = np.empty(target.shape[:2] + (self.band_labels[0].shape[3],), np.float32)
        with one_blas_thread():
            for tile in self.tiles:
                out[tile.ys, tile.xs] = self._propagate(tile, target[tile.ys, tile.xs])
        if self.context:
            self._store(self.next_slot, target, out)
            self.filled = min(self.filled + 1, self.context)
            self.next_slot = self.next_slot % self.context + 1
        return out

    def _store(self, slot: int, features: np.ndarray, labels: np.ndarray) -> None:
        for wx, band_f, band_l in zip(self.bands, self.band_features, self.band_labels):
            band_f[:, :, slot] = features[:, wx].transpose(2, 0, 1)
            band_l[:, slot] = labels[:, wx]

    def _propagate(self, tile: Tile, target: np.ndarray) -> np.ndarray:
        """Soft labels (ty, tx, C) of one tile's targets (ty, tx, D)."""
        ty, tx, dim = target.shape
        window = self.band_features[tile.band][:, tile.wy]     # (D, ny, slots, nx)
        ny, slots, nx = window.shape[1:]
        b, k = ty * tx, self.topk
        # (b, D) x (D, ny slots nx): each feature's row of the window is contiguous, so the
        # window is a strided matrix BLAS reads in place (faster than a transposed operand)
        scores = target.reshape(b, dim) @ window.reshape(dim, -1)
        rows = scores.reshape(b, ny * slots, nx)       # one row: one window row of one frame
        row_max, row_ok, col_ok = self._row_maxima(tile, scores.reshape(ty, tx, ny, slots, nx))
        kth = self._kth_largest(rows, row_max, row_ok, col_ok)             # (b,)
        # Every value >= the k-th lies in a row whose maximum reaches it (ties included).
        target_i, row_i = np.nonzero(row_ok & (row_max >= kth[:, None]))
        values = rows[target_i, row_i]                                      # (P, nx)
        keep = col_ok[target_i] & (values >= kth[target_i, None])
        weights = np.exp(np.where(keep, values, -np.inf) / TEMPERATURE)
        y, slot = np.divmod(row_i, slots)
        labels = self.band_labels[tile.band][tile.wy.start + y, slot]   # (P, nx, C)
        mixed = np.einsum("pn,pnc->pc", weights, labels)
        starts = np.flatnonzero(np.r_[True, target_i[1:] != target_i[:-1]])
        total = np.add.reduceat(weights.sum(axis=1), starts)
        return (np.add.reduceat(mixed, starts, axis=0) / total[:, None]).reshape(ty, tx, -1)

    def _row_maxima(self, tile: Tile, scores: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """scores (ty, tx, ny, slots, nx) -> each target's row maxima over its neighbourhood's
        columns (b, ny slots), whether the row is in its neighbourhood and a filled frame
        (b, ny slots), whether each window column is in its neighbourhood (b, nx).

        Taken per target column, over the slice of columns its neighbourhood spans: no mask
        is added to the scores (a pass over all of them), and no column outside is read."""
        ty, tx, ny, slots, nx = scores.shape
        row_max = np.empty((ty, tx, ny, slots), np.float32)
        col_ok = np.zeros((ty, tx, nx), bool)
        for j, (c0, c1) in enumerate(tile.cols):
            np.max(scores[:, j, :, :, c0:c1], axis=-1, out=row_max[:, j])
            col_ok[:, j, c0:c1] = True
        row_ok = np.zeros((ty, tx, ny, slots), bool)
        for i, (r0, r1) in enumerate(tile.rows):
            row_ok[i, :, r0:r1, :1 + self.filled] = True  # ring slots not filled take no part
        b = ty * tx
        return row_max.reshape(b, -1), row_ok.reshape(b, -1), col_ok.reshape(b, nx)

    def _kth_largest(self, rows: np.ndarray, row_max: np.ndarray, row_ok: np.ndarray,
                     col_ok: np.ndarray) -> np.ndarray:
        """rows (b, R, n) -> (b,) the topk-th largest value in each target's neighbourhood
        (-inf when it holds fewer: then every source counts, as in the official code)."""
        b, count, n = rows.shape
        k = self.topk
        ranked = np.where(row_ok, row_max, -np.inf)
        best = (np.argpartition(ranked, count - k, axis=1)[:, count - k:] if count > k
                else np.broadcast_to(np.arange(count), (b, count)))
        # only the k rows with the largest maxima can hold the k largest values
        values = np.take_along_axis(rows, best[:, :, None], axis=1)
        ok = np.take_along_axis(row_ok, best, axis=1)[:, :, None] & col_ok[:, None, :]
        flat = np.where(ok, values, -np.inf).reshape(b, -1)
        if flat.shape[1] < k:
            return np.full(b, -np.inf, np.float32)
        return np.partition(flat, flat.shape[1] - k, axis=1)[:, flat.shape[1] - k]
