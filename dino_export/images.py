"""Images for verification and calibration, as uint8 BGR (N, H, W, 3).

Verification runs on images made here (smooth synthetic scenes with an object-like blob, and
uniform noise) plus, with ``--verify-data DIR``, the user's own photos; calibration on
``--calib-data DIR``. Nothing here reads the repository's development data: what a check
measures depends on what the user passed, not on where the package is installed.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import cv2
import numpy as np

from dino_core.batching import chunks, stack_padded
from dino_core.constants import IMAGE_SUFFIXES
from dino_core.errors import OptionError
from dino_core.metadata import InputFormat
from dino_runtime.preprocess import InputSpec, Preprocessor

ImageSet = tuple[str, np.ndarray]   # (label for the report, uint8 BGR (N, H, W, 3))


def fit(bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop to the aspect ratio of ``size`` (H, W), then resize to it (area filter)."""
    h, w = bgr.shape[:2]
    th, tw = size
    scale = min(h / th, w / tw)
    ch, cw = round(th * scale), round(tw * scale)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = bgr[top:top + ch, left:left + cw]
    return cv2.resize(crop, (tw, th), interpolation=cv2.INTER_AREA)


def decode(data: bytes) -> np.ndarray | None:
    """Encoded image bytes -> uint8 BGR (H, W, 3) (greyscale becomes 3 channels), or None."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def folder_images(folder: str | Path, count: int, size: tuple[int, int],
                  option: str = "--calib-data") -> np.ndarray:
    """Up to ``count`` images from ``folder`` (recursively, sorted), fitted to ``size``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OptionError(f"{option} {folder}: not a directory of images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    imgs = [fit(img, size) for p in paths[:count * 2]
            if (img := decode(p.read_bytes())) is not None][:count]
    if not imgs:
        raise OptionError(f"{option} {folder}: no readable images ({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(imgs)


def synthetic_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random images with a bright blob: structured enough for attention masks."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(count):
        low = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (w, h))
        cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.15 * min(h, w)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]
        img = low * (1 - blob) + rng.uniform(0, 255, 3) * blob + rng.normal(0, 8, (h, w, 3))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


def random_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Uniform noise images, uint8 BGR (N, H, W, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (count, *size, 3), dtype=np.uint8)


def verification_sets(size: tuple[int, int], verify_data: Path | None = None,
                      count: int = 8, noise: int = 4) -> list[ImageSet]:
    """The image sets a file is verified on: the user's photos (``--verify-data``, up to
    ``count``) when given, synthetic scenes, and uniform noise."""
    sets: list[ImageSet] = []
    if verify_data is not None:
        sets.append(("verify-data", folder_images(verify_data, count, size, "--verify-data")))
    sets.append(("synthetic", synthetic_images(count, size)))
    sets.append(("random", random_images(noise, size, seed=1)))
    return sets


def photos_from_tar(tar_path: str | Path, out: str | Path, count: int) -> Path:
    """Unpack ``count`` images of an ImageFolder-layout tar (``split/<class>/<file>``), one
    class after another in sorted order, into ``out``: a ``--calib-data``/``--verify-data``
    folder from a dataset archive such as Imagenette's, without extracting all of it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path) as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and Path(m.name).suffix.lower() in IMAGE_SUFFIXES),
                         key=lambda m: m.name)
        by_class: dict[str, list] = {}
        for m in members:
            by_class.setdefault(Path(m.name).parent.name, []).append(m)
        picked = [m for group in zip(*by_class.values()) for m in group][:count]
        for i, m in enumerate(picked):
            (out / f"{i:03d}_{Path(m.name).name}").write_bytes(tar.extractfile(m).read())
    return out


def check_feeds(size: tuple[int, int], preprocess: bool, batch: int) -> list[np.ndarray]:
    """The synthetic and noise images of :func:`verification_sets` as graph inputs (uint8 BGR
    (B, H, W, 3) with ``preprocess``, else normalised float (B, 3, H, W)) in batches of
    ``batch`` (a fixed-batch graph takes exactly its batch)."""
    frames = np.concatenate([images for _, images in verification_sets(size)])
    if not preprocess:
        to_float = Preprocessor(InputSpec(size, InputFormat.FLOAT_NCHW))
        frames = np.stack([to_float(frame) for frame in frames])
    return [stack_padded(list(frames[part]), batch) for part in chunks(len(frames), batch)]
