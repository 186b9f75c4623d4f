"""Overlays drawn on the frame at its own resolution: attention heat map, mask contours, PCA colours.

With several maps per frame (``--heads all``) the frame is drawn once per head and the copies
are tiled into a mosaic of the frame's size, so a written video keeps the source resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# One contour colour per head (BGR), cycled for models with more heads.
HEAD_COLORS = ((0, 255, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255), (0, 0, 255),
               (255, 255, 0), (128, 255, 128), (255, 255, 255))


@dataclass(frozen=True)
class RenderOptions:
    attention: bool = False      # heat map of the selected attention
    mask: bool = False           # contours of the mass-threshold mask
    pca: bool = False            # PCA colours of the patch tokens
    alpha: float = 0.5           # weight of the overlay in the blend

    @property
    def any(self) -> bool:
        return self.attention or self.mask or self.pca


def render(image: np.ndarray, heat: np.ndarray | None, masks: np.ndarray | None,
           pca: np.ndarray | None, options: RenderOptions) -> np.ndarray:
    """Draw the overlays on a copy of ``image`` (H, W, 3) uint8.

    heat (k, h, w) in [0, 1], masks (k, h, w) bool, pca (h, w, 3) uint8; each may be None.
    """
    heat = heat if options.attention else None
    masks = masks if options.mask else None
    pca = pca if options.pca else None
    k = max(len(heat) if heat is not None else 1, len(masks) if masks is not None else 1)
    if k == 1:
        return _draw(image, _first(heat), _first(masks), pca, options.alpha, HEAD_COLORS[0])
    rows, cols = math.ceil(k / math.ceil(math.sqrt(k))), math.ceil(math.sqrt(k))
    h, w = image.shape[0] // rows, image.shape[1] // cols
    small = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    canvas = np.zeros_like(image)
    for i in range(k):
        tile = _draw(small, _pick(heat, i), _pick(masks, i), pca, options.alpha,
                     HEAD_COLORS[i % len(HEAD_COLORS)])
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return canvas


def _first(maps: np.ndarray | None) -> np.ndarray | None:
    return None if maps is None else maps[0]


def _pick(maps: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if maps is None else maps[min(i, len(maps) - 1)]


def _draw(image: np.ndarray, heat: np.ndarray | None, mask: np.ndarray | None,
          pca: np.ndarray | None, alpha: float, color: tuple[int, int, int]) -> np.ndarray:
    size = (image.shape[1], image.shape[0])
    out = image
    if pca is not None:
        out = cv2.addWeighted(out, 1 - alpha, cv2.resize(pca, size, interpolation=cv2.INTER_NEAREST),
                              alpha, 0)
    if heat is not None:
        # Colour the (h, w) map first, then resize 3 channels: the colormap runs on h*w
        # pixels instead of H*W.
        colored = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
        out = cv2.addWeighted(out, 1 - alpha, cv2.resize(colored, size, interpolation=cv2.INTER_LINEAR),
                              alpha, 0)
    if mask is not None:
        out = out.copy() if out is image else out
        full = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(full, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, max(1, image.shape[0] // 240), cv2.LINE_AA)
    return out


def upsample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) bool -> (H, W) uint8 0/255 at ``size`` = (W, H), nearest (each patch a block)."""
    return cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_NEAREST)
