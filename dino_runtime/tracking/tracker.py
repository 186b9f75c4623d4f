"""One stream's tracker: a seed (a mask or a box on a frame), label propagation over the patch
tokens of every later frame, and the official conversion of soft labels to a label image.

All the state of one stream lives in a :class:`Tracker` (its context ring of feature maps, the
first frame's labels), so a program that runs several streams makes one tracker per stream.
It is called once per frame, in order, from one thread (:meth:`Tracker.update`); another
thread (a window's mouse) may ask it to restart or stop with :meth:`Tracker.request`, which
takes effect on the next frame.

From soft labels to ids, as the official script does: bilinear upsampling by the patch size
(half-pixel centres: ``F.interpolate(..., align_corners=False)``), each object's channel min-max
normalised over the frame, the argmax, and a nearest resize to the frame (Pillow's rule, which
OpenCV's ``INTER_NEAREST_EXACT`` follows).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from dino_core.errors import OptionError, UserError

from .palette import MAX_OBJECTS
from .propagation import TEMPERATURE, LabelPropagation, l2_normalize, one_blas_thread

log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]   # x, y, width, height in the frame's pixels
_CLEAR = object()                 # a request to stop tracking


class TrackError(UserError):
    """A seed that cannot start tracking (its size, no object, too many objects, empty box)."""


@dataclass(frozen=True)
class TrackOptions:
    """The propagation's settings; the defaults are the official script's."""

    context: int = 7     # the n last frames kept besides the first (--n_last_frames)
    radius: int = 12     # neighbourhood half-size in patches, 0: the whole frame (--size_mask_neighborhood)
    topk: int = 5        # affinities kept per patch (--topk)

    def check(self) -> "TrackOptions":
        for name, value, low in (("--track-context", self.context, 0),
                                 ("--track-radius", self.radius, 0),
                                 ("--track-topk", self.topk, 1)):
            if not isinstance(value, int) or value < low:
                raise OptionError(f"{name} {value}: expected an integer >= {low}")
        return self


@dataclass(frozen=True)
class Seed:
    """What tracking starts from on a frame: a label image of the frame's size (0 background,
    1..255 objects), or a box around one object. ``origin`` names it in messages."""

    labels: np.ndarray | None = None
    box: Box | None = None
    origin: str = "the seed"

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.box is None):
            raise ValueError("a Seed holds exactly one of labels and box")
        if self.labels is not None:
            check_labels(self.labels, self.origin)
        else:
            check_box(self.box, self.origin)


def check_labels(labels: np.ndarray, origin: str) -> None:
    """:class:`TrackError` for a label image with no object or more than 255."""
    if labels.ndim != 2 or labels.dtype.kind not in "ui":
        raise TrackError(f"{origin}: expected an (H, W) image of integer object ids, got "
                         f"{labels.shape} {labels.dtype}")
    ids = np.unique(labels)
    objects = ids[ids > 0]
    if objects.size == 0:
        raise TrackError(f"{origin}: the mask holds no object (every pixel is 0, the "
                         "background); a 0/255 mask marks the object white, a palette PNG "
                         "gives each object its index")
    if objects.size > MAX_OBJECTS:
        raise TrackError(f"{origin}: {objects.size} objects; at most {MAX_OBJECTS} can be "
                         "tracked (the ids 1..255 of a palette PNG)")
    if objects[-1] > MAX_OBJECTS:
        raise TrackError(f"{origin}: object id {objects[-1]}; ids must be 1..{MAX_OBJECTS} "
                         "(the indices of a palette PNG)")


def check_box(box: Box, origin: str) -> None:
    if len(box) != 4 or box[2] <= 0 or box[3] <= 0:
        raise TrackError(f"{origin}: an empty box {box}; expected X,Y,W,H with W and H >= 1")


def parse_box(text: str) -> Box:
    """``"X,Y,W,H"`` (pixels of the first frame) -> a box; OptionError for anything else."""
    parts = text.replace(" ", "").split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise OptionError(f"--track-box {text!r}: expected X,Y,W,H in pixels, e.g. "
                          "120,80,200,150") from None
    if w <= 0 or h <= 0:
        raise OptionError(f"--track-box {text!r}: an empty box; W and H must be >= 1")
    return x, y, w, h


@dataclass(frozen=True)
class ObjectStats:
    """One object in one frame, in the frame's pixels: ``area`` in pixels, ``box`` (x, y,
    width, height) around its pixels, ``centroid`` (x, y) their mean."""

    id: int
    area: int
    box: Box
    centroid: tuple[float, float]

    def as_dict(self) -> dict:
        return {"id": self.id, "area": self.area, "box": list(self.box),
                "centroid": [round(self.centroid[0], 2), round(self.centroid[1], 2)]}


@dataclass
class TrackFrame:
    """Tracking of one frame: ``labels`` (H, W) uint8 ids at the frame's resolution, the
    ``objects`` present, and whether tracking (re)started on this frame."""

    labels: np.ndarray
    objects: list[ObjectStats] = field(default_factory=list)
    started: bool = False


def object_stats(labels: np.ndarray) -> list[ObjectStats]:
    """labels (H, W) -> one :class:`ObjectStats` per id > 0 present, in id order.

    From each object's row and column counts: its box is where they are nonzero, its centroid
    their weighted mean (two small projections instead of coordinate images per frame)."""
    counts = np.bincount(labels.ravel())
    out = []
    for i in np.flatnonzero(counts[1:]) + 1:
        mask = labels == i
        per_row, per_col = np.count_nonzero(mask, axis=1), np.count_nonzero(mask, axis=0)
        rows, cols = np.flatnonzero(per_row), np.flatnonzero(per_col)
        area = int(counts[i])
        box = (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))
        centroid = (float(per_col @ np.arange(len(per_col))) / area,
                    float(per_row @ np.arange(len(per_row))) / area)
        out.append(ObjectStats(int(i), area, box, centroid))
    return out


def soft_to_labels(soft: np.ndarray, patch_size: int, frame_hw: tuple[int, int]) -> np.ndarray:
    """soft (h, w, C) -> (H, W) uint8 ids, the official way (module docstring).

    A channel that is constant and positive over the frame is 0/0 in the official
    normalisation, a NaN that ``torch.max`` takes as the maximum: it wins everywhere here too.
    """
    h, w, classes = soft.shape
    size = (w * patch_size, h * patch_size)
    # One object at a time, each a contiguous plane: the argmax is a running maximum (the first
    # of equal values wins, as in torch.max), with no (H, W, C) array in between.
    best = ids = None
    for c in range(classes):
        plane = cv2.resize(np.ascontiguousarray(soft[:, :, c]), size,
                           interpolation=cv2.INTER_LINEAR)
        low, high = plane.min(), plane.max()
        if high > 0 and high > low:
            plane -= low
            plane /= high - low
        elif high > 0:
            plane.fill(np.inf)
        if best is None:
            best, ids = plane, np.zeros(plane.shape, np.uint8)
        else:
            ids[plane > best] = c
            np.maximum(best, plane, out=best)
    return nearest(ids, frame_hw)


def nearest(ids: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(h, w) uint8 -> (H, W) with Pillow's nearest rule (DAVIS tools and the official script
    resize label images with Pillow)."""
    if ids.shape == tuple(size_hw):
        return ids
    return cv2.resize(ids, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST_EXACT)


@dataclass(frozen=True)
class TrackConfig:
    """Tracking asked of a run: the options, and the seed of its first frame (None: nothing is
    tracked until :meth:`Tracker.request` gives one, e.g. a box drawn in the window)."""

    options: TrackOptions = TrackOptions()
    seed: Seed | None = None

    def tracker(self, grid: tuple[int, int], patch_size: int) -> "Tracker":
        """A new tracker for one stream of a model with this patch ``grid`` (h, w)."""
        return Tracker(self.options, patch_size, grid, self.seed)


class Tracker:
    """Tracking of one stream on a model's patch ``grid`` (h, w); ``seed`` starts it on the
    first frame given to :meth:`update`."""

    def __init__(self, options: TrackOptions, patch_size: int, grid: tuple[int, int],
                 seed: Seed | None = None) -> None:
        self.options = options.check()
        self.patch_size = patch_size
        self.grid = tuple(grid)
        self.propagation = LabelPropagation(options.context, options.radius, options.topk)
        self._lock = threading.Lock()
        self._pending: Seed | object | None = seed

    @property
    def active(self) -> bool:
        return self.propagation.started

    def request(self, seed: Seed | None) -> None:
        """Restart from ``seed`` on the next frame (None: stop tracking). Any thread."""
        with self._lock:
            self._pending = _CLEAR if seed is None else seed

    def update(self, image: np.ndarray, patch: np.ndarray) -> TrackFrame | None:
        """One frame: image (H, W, 3), its patch tokens (h*w, D) -> its tracking (None when
        nothing is tracked)."""
        with self._lock:
            pending, self._pending = self._pending, None
        features = np.asarray(patch, np.float32).reshape(*self.grid, -1)
        if pending is _CLEAR:
            self.propagation = LabelPropagation(**vars(self.options))
            return None
        if pending is not None:
            return self._start(pending, image.shape[:2], features)
        if not self.propagation.started:
            return None
        soft = self.propagation.step(features)
        labels = soft_to_labels(soft, self.patch_size, image.shape[:2])
        return TrackFrame(labels, object_stats(labels))

    def _start(self, seed: Seed, frame_hw: tuple[int, int], features: np.ndarray) -> TrackFrame:
        if seed.labels is not None:
            full = seed.labels
            if full.shape != tuple(frame_hw):
                raise TrackError(f"{seed.origin} is {full.shape[1]}x{full.shape[0]} and the "
                                 f"first frame {frame_hw[1]}x{frame_hw[0]}; give a mask of the "
                                 "first frame's size")
            grid_ids = self._grid_labels(full, seed.origin)
        else:
            grid_ids = box_seed(l2_normalize(features), seed.box, frame_hw, self.options.topk,
                                seed.origin)
        one_hot = np.eye(int(grid_ids.max()) + 1, dtype=np.float32)[grid_ids]
        self.propagation = LabelPropagation(**vars(self.options))
        self.propagation.start(features, one_hot)
        if seed.labels is None:
            full = soft_to_labels(one_hot, self.patch_size, frame_hw)
        full = full.astype(np.uint8)
        return TrackFrame(full, object_stats(full), started=True)

    def _grid_labels(self, full: np.ndarray, origin: str) -> np.ndarray:
        """The seed on the patch grid: Pillow's nearest resize, as the official read_seg."""
        h, w = self.grid
        small = nearest(full.astype(np.uint8), (h, w))
        present, kept = set(np.unique(full)) - {0}, set(np.unique(small)) - {0}
        if not kept:
            raise TrackError(f"{origin}: every object is smaller than one patch of the model "
                             f"({w}x{h} patches); use a model exported at a larger size")
        lost = sorted(int(i) for i in present - kept)
        if lost:
            log.warning("%s: object%s %s cover%s no patch of the %dx%d grid and cannot be "
                        "tracked", origin, "s" if len(lost) > 1 else "",
                        ", ".join(map(str, lost)), "" if len(lost) > 1 else "s", w, h)
        return small


# The box's middle half (a quarter of the box off each side) is taken as the object.
BOX_CORE = 0.25


def box_seed(features: np.ndarray, box: Box, frame_hw: tuple[int, int], topk: int,
             origin: str = "--track-box") -> np.ndarray:
    """features (h, w, D) unit vectors of the frame, a box in its pixels -> (h, w) uint8 ids
    (1 the object, 0 background).

    A box holds background in its corners and margins, which a rectangle seed would track as
    object. So: the patches whose centres lie in the box's middle half are the object, those
    outside the box background, and each patch between the two takes the label of its
    ``topk`` most similar patches among those (the tracker's own affinity exp(cos / 0.1)),
    so that a corner of grass joins the grass around the box. A box a few patches wide is the
    object as it is; a box smaller than a patch marks the patch under its centre.
    """
    grid_h, grid_w = features.shape[:2]
    frame_h, frame_w = frame_hw
    x, y, w, h = box
    if x >= frame_w or y >= frame_h or x + w <= 0 or y + h <= 0:
        raise TrackError(f"{origin} {x},{y},{w},{h} lies outside the {frame_w}x{frame_h} frame")
    cy = (np.arange(grid_h) + 0.5) * frame_h / grid_h
    cx = (np.arange(grid_w) + 0.5) * frame_w / grid_w

    def centres_in(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]

    inside = centres_in(x, y, x + w, y + h)
    if not inside.any():
        row = min(grid_h - 1, int((y + h / 2) * grid_h / frame_h))
        col = min(grid_w - 1, int((x + w / 2) * grid_w / frame_w))
        inside[max(row, 0), max(col, 0)] = True
        return inside.astype(np.uint8)
    core = centres_in(x + BOX_CORE * w, y + BOX_CORE * h, x + (1 - BOX_CORE) * w,
                      y + (1 - BOX_CORE) * h)
    ring = inside & ~core
    if not core.any() or not ring.any() or inside.all():
        return inside.astype(np.uint8)
    flat = features.reshape(grid_h * grid_w, -1)
    sources = np.flatnonzero((core | ~inside).ravel())
    votes = _vote(flat[ring.ravel()], flat[sources], core.ravel()[sources], topk)
    seed = core.copy()
    seed[ring] = votes
    return seed.astype(np.uint8)


def _vote(targets: np.ndarray, sources: np.ndarray, is_object: np.ndarray, topk: int,
          chunk: int = 512) -> np.ndarray:
    """For each target (T, D): whether the top-k affinities to sources (S, D) weigh more on
    object sources than on background ones -> (T,) bool."""
    k = min(topk, len(sources))
    out = np.empty(len(targets), bool)
    for start in range(0, len(targets), chunk):    # bounded memory: chunk x S scores
        with one_blas_thread():
            scores = targets[start:start + chunk] @ sources.T
        best = np.argpartition(scores, scores.shape[1] - k, axis=1)[:, -k:]
        weights = np.exp(np.take_along_axis(scores, best, axis=1) / TEMPERATURE)
        on_object = (weights * is_object[best]).sum(axis=1)
        out[start:start + chunk] = on_object * 2 >= weights.sum(axis=1)
    return out
