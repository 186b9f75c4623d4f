"""Frames for viewers: the newest image of each stream, JPEG-encoded at a capped rate in a
thread of its own, and only while someone watches.

The pipeline's consumer hands each image over with :meth:`FrameHub.publish`, which only stores a
reference (O(1), no lock, no copy: a result's image is never changed after it is made), so a
slow, stuck or absent viewer never slows inference. Viewers wait for :meth:`wait_newer` and take
the newest JPEG of each stream; the frames they miss are dropped, never queued.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

PREVIEW_FPS = 10.0        # JPEGs per stream and second at most, whatever the stream's rate
PREVIEW_LONG_SIDE = 640   # pixels: a tile on the page, not the source resolution
JPEG_QUALITY = 75


class FrameHub:
    """The newest image and JPEG of each of ``count`` streams."""

    def __init__(self, count: int, fps: float = PREVIEW_FPS,
                 long_side: int = PREVIEW_LONG_SIDE) -> None:
        self.count = count
        self.interval = 1.0 / fps
        self.long_side = long_side
        self.viewers = 0                                 # set by the server
        self._images: list[np.ndarray | None] = [None] * count
        self._published = [0] * count                    # images handed over, per stream
        self._encoded = [0] * count                      # the image each JPEG was made from
        self.jpegs: list[bytes | None] = [None] * count
        self.versions = [0] * count                      # bumped with each new JPEG
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._encode_loop, name="dino-run-jpeg",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def publish(self, index: int, image: np.ndarray) -> None:
        """The consumer's newest image (H, W, 3) uint8 BGR of stream ``index``."""
        self._images[index] = image
        self._published[index] += 1

    def wait_newer(self, seen: list[int], timeout: float) -> bool:
        """Wait until some stream has a JPEG newer than ``seen`` (versions); False on timeout
        or once the hub is closed."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._closed.is_set() or self.versions != seen, timeout) \
                and not self._closed.is_set()

    def close(self) -> None:
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(2.0)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def _encode_loop(self) -> None:
        while not self._closed.wait(self.interval):
            if self.viewers <= 0:
                continue
            for i in range(self.count):
                if self._published[i] != self._encoded[i] and self._images[i] is not None:
                    self._encoded[i] = self._published[i]
                    self._store(i, self._jpeg(self._images[i]))

    def _jpeg(self, image: np.ndarray) -> bytes:
        h, w = image.shape[:2]
        scale = self.long_side / max(h, w)
        if scale < 1:
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                               interpolation=cv2.INTER_AREA)
        return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()

    def _store(self, index: int, jpeg: bytes) -> None:
        with self._cond:
            self.jpegs[index] = jpeg
            self.versions = [*self.versions[:index], self.versions[index] + 1,
                             *self.versions[index + 1:]]
            self._cond.notify_all()
