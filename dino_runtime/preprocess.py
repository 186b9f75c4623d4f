"""Frames (H, W, 3) uint8 BGR -> the exported graph's input, vectorised with OpenCV and numpy.

Exported graphs have a fixed input size (metadata ``img_size``). Each frame is resized to that
size as a whole: no crop, so the attention map covers every pixel of the frame and maps back to
it by a plain resize, and no letterbox, so no padding tokens take part in the attention. The
aspect ratio is kept by exporting the model at the source's aspect (``fit_size``: short side
224 at 16:9 is 224x400); when the two differ by more than 10%, :func:`aspect_warning` says
which size to export instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dino_core.constants import IMAGENET_MEAN, IMAGENET_STD
from dino_core.metadata import InputFormat, ModelMetadata

ASPECT_TOLERANCE = 0.10


@dataclass(frozen=True)
class InputSpec:
    """The graph's input: size (H, W), layout and normalisation."""

    size: tuple[int, int]
    format: InputFormat = InputFormat.FLOAT_NCHW
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_metadata(cls, meta: ModelMetadata) -> "InputSpec":
        return cls(tuple(meta.img_size), meta.input_format, tuple(meta.mean), tuple(meta.std))


class Preprocessor:
    """``resize`` one frame to the model size, ``normalize`` it to the graph's layout."""

    def __init__(self, spec: InputSpec) -> None:
        self.spec = spec
        # (x / 255 - mean) / std folded into one multiply-add per channel, RGB order, (3, 1, 1).
        std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
        mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        self._scale = (1.0 / (255.0 * std)).astype(np.float32)
        self._offset = (-mean / std).astype(np.float32)

    def resize(self, image: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (H, W, 3) uint8 at the model size."""
        height, width = self.spec.size
        if image.shape[:2] == (height, width):
            return image
        if image.shape[0] <= height and image.shape[1] <= width:
            return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        # Shrinking: INTER_AREA averages the pixels each model pixel covers (no aliasing), but
        # its general path is slow for non-integer factors (3.5 ms for 720p -> 224x400). A
        # bilinear step to twice the size, then INTER_AREA's exact 2x path, costs 1 ms and
        # differs from it by about half a grey level on average.
        if image.shape[0] > 2 * height and image.shape[1] > 2 * width:
            image = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 BGR -> (3, H, W) float32 RGB normalised, or unchanged for uint8 graphs."""
        if self.spec.format is InputFormat.UINT8_NHWC:
            return image
        # blobFromImage converts, swaps BGR -> RGB and transposes to CHW in one pass (0.2 ms
        # at 224x400 against 1.3 ms for the numpy astype/transpose/copy chain).
        x = cv2.dnn.blobFromImage(image, 1.0, swapRB=True)[0]
        x *= self._scale
        x += self._offset
        return x

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.normalize(self.resize(image))


def fit_size(frame_hw: tuple[int, int], short_side: int, patch: int) -> tuple[int, int]:
    """(H, W) with the frame's aspect, the short side ``short_side``, both multiples of ``patch``."""
    h, w = frame_hw
    scale = short_side / min(h, w)
    return (max(patch, round(h * scale / patch) * patch), max(patch, round(w * scale / patch) * patch))


def aspect_warning(frame_hw: tuple[int, int], model_hw: tuple[int, int], patch: int) -> str | None:
    """A hint when frames would be visibly stretched to the model's size, else None."""
    frame_aspect, model_aspect = frame_hw[1] / frame_hw[0], model_hw[1] / model_hw[0]
    if abs(frame_aspect / model_aspect - 1) <= ASPECT_TOLERANCE:
        return None
    better = fit_size(frame_hw, min(model_hw), patch)
    return (f"frames {frame_hw[1]}x{frame_hw[0]} are stretched to the model's "
            f"{model_hw[1]}x{model_hw[0]} (aspect {frame_aspect:.2f} vs {model_aspect:.2f}); "
            f"export the model with --img-size {better[0]} {better[1]} to keep the aspect")
