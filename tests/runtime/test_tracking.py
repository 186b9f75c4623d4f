"""Label propagation against the official algorithm, and the pieces of the tracker.

* ``tracking_vectors/tracking_reference.npz``: facebookresearch/dino's
  ``eval_video_segmentation.py`` run on the CPU on stored features of three clips (real video,
  real photos moved over it, 854x480), with the defaults and other options; our tracker on the
  same features gives the same masks (mean IoU >= 0.99 per case, the issue's bound).
* A dense numpy transcription of the official ``label_propagation`` (every h*w x h*w affinity)
  on random features, ties included, for many grid sizes and options: the tiled propagation
  computes the same soft labels.
* The conversion to ids against torch's ``F.interpolate`` and Pillow's nearest resize, palette
  PNGs against Pillow, the box seed, the object statistics.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dino_runtime.tracking import (
    DAVIS_PALETTE,
    LabelPropagation,
    Seed,
    TrackError,
    Tracker,
    TrackOptions,
    encode_palette_png,
    read_labels,
)
from dino_runtime.tracking.propagation import l2_normalize
from dino_runtime.tracking.tracker import box_seed, nearest, object_stats, soft_to_labels

VECTORS = Path(__file__).parent / "tracking_vectors"
REFERENCE = np.load(VECTORS / "tracking_reference.npz")
CASES = sorted(k for k in REFERENCE.files if "/n" in k)
MEAN_IOU = 0.99       # the fidelity bound, per case (clip and options)
FRAME_IOU = 0.95      # and no frame's object far from it


def object_ious(ours: np.ndarray, ref: np.ndarray, objects: int) -> list[float]:
    out = []
    for i in range(1, objects + 1):
        a, b = ours == i, ref == i
        union = np.count_nonzero(a | b)
        out.append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
    return out


@pytest.mark.parametrize("case", CASES)
def test_masks_match_the_official_script_on_the_same_features(case):
    clip, options = case.split("/")
    n, r, k = (int(part[1:]) for part in options.split("_"))
    features = REFERENCE[f"{clip}/features"].astype(np.float32)   # (T, h*w, D)
    patch, first = int(REFERENCE[f"{clip}/patch"]), REFERENCE[f"{clip}/first"]
    official = REFERENCE[case]                                     # (T, 480, 854)
    tracker = Tracker(TrackOptions(n, r, k), patch, (480 // patch, 832 // patch),
                      Seed(labels=first))
    frame = np.zeros((*first.shape, 3), np.uint8)
    ious = []
    for t in range(len(features)):
        ious.append(object_ious(tracker.update(frame, features[t]).labels, official[t],
                                int(first.max())))
    ious = np.array(ious)
    assert ious.mean() >= MEAN_IOU, f"{case}: mean IoU {ious.mean():.4f}"
    assert ious.min() >= FRAME_IOU, f"{case}: frame IoU {ious.min():.4f}"
    assert ious[0].min() == 1.0       # the first frame is the annotation itself


def dense_official(context_features, context_labels, target, radius, topk):
    """The official label_propagation, transcribed densely in numpy (float64)."""
    m, h, w, dim = context_features.shape
    n = h * w
    aff = np.exp(np.einsum("td,msd->mts", target.reshape(n, dim).astype(np.float64),
                           context_features.reshape(m, n, dim).astype(np.float64)) / 0.1)
    if radius > 0:
        y, x = np.divmod(np.arange(n), w)
        near = (np.abs(y[:, None] - y[None]) <= radius) & (np.abs(x[:, None] - x[None]) <= radius)
        aff *= near[None]
    aff = aff.transpose(0, 2, 1).reshape(m * n, n)              # sources x targets
    kth = np.sort(aff, axis=0)[-topk]
    aff[aff < kth] = 0
    aff /= aff.sum(axis=0, keepdims=True)
    return (context_labels.reshape(m * n, -1).T @ aff).T.reshape(h, w, -1)


def test_tiled_propagation_equals_the_dense_official_one():
    rng = np.random.default_rng(0)
    for trial in range(36):
        h, w = (int(v) for v in rng.integers(1, 22, 2))
        dim, classes = int(rng.integers(2, 12)), int(rng.integers(2, 5))
        n, radius, k = int(rng.integers(0, 4)), int(rng.integers(0, 7)), int(rng.integers(1, 8))
        if trial % 3 == 0:   # exact ties: unit vectors of +-0.5, whose dot products are exact
            frames = [(rng.integers(0, 2, (h, w, 4)) - 0.5).astype(np.float32) for _ in range(6)]
        else:
            base = rng.standard_normal((h, w, dim))
            frames = [(base + 0.4 * rng.standard_normal((h, w, dim))).astype(np.float32)
                      for _ in range(6)]
        first = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, (h, w))]
        prop = LabelPropagation(n, radius, k)
        prop.start(frames[0], first)
        ring: list[tuple[np.ndarray, np.ndarray]] = []
        for frame in frames[1:]:
            target = l2_normalize(frame)
            used_f = np.stack([l2_normalize(frames[0])] + [f for f, _ in ring])
            used_l = np.stack([first] + [lab for _, lab in ring])
            if len(used_f) * h * w < k:
                break      # fewer sources than k: torch.topk itself refuses that
            expected = dense_official(used_f, used_l, target, radius, k)
            ours = prop.step(frame)
            np.testing.assert_allclose(ours, expected, atol=2e-5, err_msg=f"trial {trial}")
            ring = (ring + [(target, expected)])[-n:] if n else []


def test_ids_follow_torch_interpolate_and_pillow_nearest():
    rng = np.random.default_rng(1)
    for _ in range(8):
        h, w, classes, patch = int(rng.integers(2, 12)), int(rng.integers(2, 12)), 3, 8
        soft = rng.random((h, w, classes)).astype(np.float32)
        soft[..., 2] *= 0.01     # a faint object: the per-object normalisation lifts it
        frame_hw = (int(rng.integers(10, 120)), int(rng.integers(10, 120)))
        up = F.interpolate(torch.from_numpy(soft).permute(2, 0, 1)[None], scale_factor=patch,
                           mode="bilinear", align_corners=False, recompute_scale_factor=False)[0]
        for c in range(classes):    # the official norm_mask
            if up[c].max() > 0:
                up[c] = (up[c] - up[c].min()) / (up[c] - up[c].min()).max()
        ids = torch.max(up, dim=0)[1].numpy().astype(np.uint8)
        expected = np.array(Image.fromarray(ids).resize((frame_hw[1], frame_hw[0]), 0))
        ours = soft_to_labels(soft, patch, frame_hw)
        assert (ours == expected).mean() > 0.999


def test_a_channel_constant_over_the_frame_wins_as_the_official_nan_does():
    soft = np.zeros((3, 4, 3), np.float32)
    soft[..., 0], soft[..., 2] = 0.5, 0.7      # 0/0 in the official normalisation: NaN
    soft[1, 1, 1] = 0.9
    assert (soft_to_labels(soft, 4, (12, 16)) == 0).all()   # torch.max takes the first NaN


def test_nearest_resize_is_pillows():
    rng = np.random.default_rng(2)
    for _ in range(40):
        src = rng.integers(0, 255, tuple(int(v) for v in rng.integers(1, 300, 2))).astype(np.uint8)
        size = tuple(int(v) for v in rng.integers(1, 300, 2))
        expected = np.array(Image.fromarray(src).resize((size[1], size[0]), 0))
        assert np.array_equal(nearest(src, size), expected)


def test_palette_pngs_round_trip_with_pillow(tmp_path):
    labels = np.zeros((48, 80), np.uint8)
    labels[5:20, 10:30], labels[25:40, 40:70], labels[0, 0] = 1, 2, 255
    image = Image.open(io.BytesIO(encode_palette_png(labels)))
    assert image.mode == "P" and np.array_equal(np.array(image), labels)
    assert np.array_equal(np.array(image.getpalette()).reshape(-1, 3), DAVIS_PALETTE)
    assert DAVIS_PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    # Pillow-written palette PNGs: black palette (all entries alike), 2-bit, transparency
    for bits, palette, ids in ((8, [0, 0, 0] * 256, labels), (2, None, labels % 4)):
        pil = Image.fromarray(ids, "P")
        pil.putpalette(palette or DAVIS_PALETTE.ravel().tolist())
        path = tmp_path / f"p{bits}.png"
        pil.save(path, bits=bits, transparency=0)
        read, is_palette = read_labels(path)
        assert is_palette and np.array_equal(read, ids)
    # a 0/255 grey mask is one object; a 16-bit grey PNG holds instance ids
    import cv2
    cv2.imwrite(str(tmp_path / "mask.png"), (labels > 0).astype(np.uint8) * 255)
    assert np.array_equal(read_labels(tmp_path / "mask.png")[0], (labels > 0).astype(np.uint8))
    ids16 = (labels.astype(np.uint16) * 300)
    cv2.imwrite(str(tmp_path / "ids16.png"), ids16)
    assert np.array_equal(read_labels(tmp_path / "ids16.png")[0], ids16)


def test_box_seed_leaves_the_corners_to_the_background():
    # Oracle features: a disc of one vector on a background of another (plus noise).
    rng = np.random.default_rng(3)
    h, w = 20, 30
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 10) ** 2 + (xx - 15) ** 2 <= 36
    features = np.where(disc[..., None], [1.0, 0, 0, 0], [0, 1.0, 0, 0])
    features = l2_normalize(features + 0.05 * rng.standard_normal((h, w, 4)))
    frame_hw = (h * 16, w * 16)
    box = (9 * 16, 4 * 16, 13 * 16, 13 * 16)      # the disc's bounding box, in pixels
    seed = box_seed(features, box, frame_hw, topk=5)
    inside = np.zeros((h, w), bool)
    inside[4:17, 9:22] = True
    assert (seed.astype(bool) == disc).all()      # the box's corners went to the background
    assert not (seed.astype(bool) & ~inside).any()
    # a box inside one patch marks that patch; a box off the frame is refused
    tiny = box_seed(features, (15 * 16 + 3, 10 * 16 + 2, 4, 4), frame_hw, 5)
    assert tiny.sum() == 1 and tiny[10, 15] == 1
    with pytest.raises(TrackError, match="outside"):
        box_seed(features, (w * 16 + 5, 0, 10, 10), frame_hw, 5)


def test_tracker_restarts_and_stops_on_request():
    rng = np.random.default_rng(4)
    grid, patch = (6, 8), 16
    tokens = rng.standard_normal((grid[0] * grid[1], 8)).astype(np.float32)
    frame = np.zeros((96, 128, 3), np.uint8)
    tracker = Tracker(TrackOptions(), patch, grid)
    assert tracker.update(frame, tokens) is None            # nothing to track yet
    tracker.request(Seed(box=(32, 32, 48, 40), origin="the mouse box"))
    started = tracker.update(frame, tokens)
    assert started.started and [o.id for o in started.objects] == [1]
    following = tracker.update(frame, tokens)      # the same frame again: the same object
    assert not following.started
    assert object_ious(following.labels, started.labels, 1)[0] > 0.95
    tracker.request(None)
    assert tracker.update(frame, tokens) is None and not tracker.active


def test_object_stats():
    labels = np.zeros((10, 20), np.uint8)
    labels[2:5, 3:9] = 1       # 3 x 6
    labels[7, 15] = 3
    stats = object_stats(labels)
    assert [(s.id, s.area, s.box) for s in stats] == [(1, 18, (3, 2, 6, 3)), (3, 1, (15, 7, 1, 1))]
    assert stats[0].centroid == (5.5, 3.0)


def test_bad_seeds_say_what_is_wrong():
    with pytest.raises(TrackError, match="no object"):
        Seed(labels=np.zeros((4, 4), np.uint8))
    with pytest.raises(TrackError, match="300 objects; at most 255"):
        Seed(labels=np.arange(1, 301, dtype=np.uint16).reshape(15, 20))
    with pytest.raises(TrackError, match="empty box"):
        Seed(box=(3, 3, 0, 5))
    tracker = Tracker(TrackOptions(), 16, (2, 3), Seed(labels=np.ones((40, 40), np.uint8)))
    with pytest.raises(TrackError, match="is 40x40 and the first frame 48x32"):
        tracker.update(np.zeros((32, 48, 3), np.uint8), np.ones((6, 4), np.float32))
