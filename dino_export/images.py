"""Images for verification and calibration, as uint8 BGR (N, H, W, 3), and the reference
preprocessing that the baked ``--preprocess`` graph must reproduce."""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import cv2
import numpy as np

from dino_runtime.metadata import IMAGENET_MEAN, IMAGENET_STD
from dino_train.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Real photos when the project's shared data is present (read from the tar, never copied).
IMAGENETTE_TAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenette-val.tar"


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
    """Encoded image bytes -> uint8 BGR (H, W, 3); greyscale becomes 3 channels."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return img


def folder_images(folder: str | Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """Up to ``count`` images from ``folder`` (recursively, sorted), fitted to ``size``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--calib-data {folder}: not a directory of images")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    imgs = [fit(img, size) for p in paths[:count * 2]
            if (img := decode(p.read_bytes())) is not None][:count]
    if not imgs:
        raise UserError(f"--calib-data {folder}: no readable images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    return np.stack(imgs)


def imagenette_images(count: int, size: tuple[int, int]) -> np.ndarray | None:
    """``count`` Imagenette photos (one per class in turn) or ``None`` without the data."""
    if not IMAGENETTE_TAR.is_file():
        return None
    with tarfile.open(IMAGENETTE_TAR) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile()), key=lambda m: m.name)
        by_class: dict[str, list] = {}
        for m in members:
            by_class.setdefault(m.name.split("/")[1], []).append(m)
        picked = [m for group in zip(*by_class.values()) for m in group][:count]
        imgs = [decode(tar.extractfile(m).read()) for m in picked]
    return np.stack([fit(i, size) for i in imgs if i is not None])


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


def real_images(count: int, size: tuple[int, int]) -> tuple[str, np.ndarray]:
    """(label, images): Imagenette photos when present, else synthetic ones (said in the label)."""
    imgs = imagenette_images(count, size)
    if imgs is not None and len(imgs):
        return "imagenette", imgs
    return "synthetic", synthetic_images(count, size)


def normalize_bgr(bgr: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 BGR (N, H, W, 3) -> float32 RGB (N, 3, H, W), ``(x / 255 - mean) / std``."""
    rgb = bgr[..., ::-1].astype(np.float32) / 255.0
    rgb = (rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))
