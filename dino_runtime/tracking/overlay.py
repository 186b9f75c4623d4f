"""Tracked objects drawn over a frame: one DAVIS palette colour per object, filled and outlined."""
from __future__ import annotations

import cv2
import numpy as np

from .palette import DAVIS_PALETTE
from .tracker import TrackFrame, object_stats

PALETTE_BGR = np.ascontiguousarray(DAVIS_PALETTE[:, ::-1])


def draw_tracking(image: np.ndarray, track: TrackFrame | None, alpha: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with each object of ``track`` blended in its
    colour and outlined; ``image`` itself when nothing is tracked. Labels of another size (a
    mosaic of heads) are resized to the image."""
    if track is None or not track.objects:
        return image
    labels, objects = track.labels, track.objects
    if labels.shape != image.shape[:2]:
        labels = cv2.resize(labels, (image.shape[1], image.shape[0]),
                            interpolation=cv2.INTER_NEAREST)
        objects = object_stats(labels)
    out = image.copy()
    thickness = max(1, image.shape[0] // 240)
    for obj in objects:
        # Only the object's box is blended: OpenCV calls on a region, no full-frame temporaries.
        x, y, w, h = obj.box
        mask = (labels[y:y + h, x:x + w] == obj.id).astype(np.uint8)
        region = out[y:y + h, x:x + w]
        color = PALETTE_BGR[obj.id].tolist()
        blended = cv2.addWeighted(region, 1 - alpha, np.full_like(region, color), alpha, 0)
        cv2.copyTo(blended, mask, region)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                       offset=(x, y))
        cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_AA)
    return out
