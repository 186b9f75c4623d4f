"""Tracked objects drawn over a frame: one DAVIS palette colour per object, filled and outlined."""
from __future__ import annotations

import cv2
import numpy as np

from .palette import DAVIS_PALETTE
from .tracker import TrackFrame

PALETTE_BGR = np.ascontiguousarray(DAVIS_PALETTE[:, ::-1])


def draw_tracking(image: np.ndarray, track: TrackFrame | None, alpha: float = 0.5) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 BGR with each object of ``track`` blended in its
    colour and outlined; ``image`` itself when nothing is tracked. Labels of another size (a
    mosaic of heads) are resized to the image."""
    if track is None or not track.objects:
        return image
    labels = track.labels
    if labels.shape != image.shape[:2]:
        labels = cv2.resize(labels, (image.shape[1], image.shape[0]),
                            interpolation=cv2.INTER_NEAREST)
    colors = PALETTE_BGR[labels]
    blended = cv2.addWeighted(image, 1 - alpha, colors, alpha, 0)
    out = np.where((labels > 0)[:, :, None], blended, image)
    thickness = max(1, image.shape[0] // 240)
    for obj in track.objects:
        contours, _ = cv2.findContours((labels == obj.id).astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, PALETTE_BGR[obj.id].tolist(), thickness, cv2.LINE_AA)
    return out
