"""Training data: any folder of images and videos, turned into DINO multi-crop views.

* :func:`scan_folder` finds the samples: images in an ImageFolder tree or flat, and frames of
  the videos in it (one every ``video_stride`` frames). Labels are not needed.
* :class:`MultiCropAugmentation`: the official DINO views (2 global crops, N local crops, flip,
  colour jitter, grayscale, blur, solarisation, ImageNet normalisation).
* :class:`MultiCropDataset`: a corrupt or unreadable file is skipped with a warning and counted
  (the official code stops), and the views of a sample depend only on (seed, epoch, index),
  so a resumed or distributed run sees the same crops as an uninterrupted one.
"""
from __future__ import annotations

import logging
import os
import random
import signal
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchvision import transforms

from dino_core.constants import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, VIDEO_SUFFIXES
from dino_core.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One training image: a file, or frame ``frame`` of a video file."""

    path: str
    frame: int | None = None


@dataclass
class ScanResult:
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def scan_folder(root: str | os.PathLike, video_stride: int = 15) -> ScanResult:
    """All images and sampled video frames under ``root`` (sorted, hidden files ignored).

    Raises :class:`UserError` when ``root`` is missing or holds no image or video at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: data path is not a directory")
    result = ScanResult(samples=[])
    for path in sorted(_walk(root)):
        ext = path.suffix.lower()
        if ext in IMAGE_SUFFIXES:
            result.samples.append(Sample(str(path)))
        elif ext in VIDEO_SUFFIXES:
            frames = _video_frame_count(path)
            if frames <= 0:
                result.skipped.append((str(path), "unreadable video"))
            result.samples.extend(Sample(str(path), f) for f in range(0, max(frames, 0), video_stride))
        else:
            result.skipped.append((str(path), "not an image or video file"))
    if not result.samples:
        raise UserError(f"{root}: no images or videos found (looked for "
                        f"{' '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    for path, reason in result.skipped[:5]:
        log.warning(f"skipping {path}: {reason}")
    if len(result.skipped) > 5:
        log.warning(f"skipping {len(result.skipped) - 5} more files that are not images or "
                    "videos")
    return result


def _walk(root: Path) -> Iterator[Path]:
    """Files under ``root``, following links to folders but entering each folder once (by its
    real path): a link back to a parent would otherwise repeat the tree until the path is too
    long, or forever. Folders are visited in name order, so a folder reached by two paths is
    always listed under the same one."""
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        yield from (Path(dirpath) / f for f in filenames if not f.startswith("."))


def _video_frame_count(path: Path) -> int:
    import cv2
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


def load_rgb(sample: Sample) -> Image.Image:
    """The sample as an RGB PIL image; raises ``OSError``/``ValueError`` when unreadable."""
    if sample.frame is None:
        with Image.open(sample.path) as img:
            return img.convert("RGB")
    import cv2
    cap = cv2.VideoCapture(sample.path)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, sample.frame)
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok:
        raise OSError(f"cannot decode frame {sample.frame}")
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


# -- augmentation -------------------------------------------------------------------------------
class GaussianBlur:
    """PIL Gaussian blur with probability ``p`` and radius uniform in [min, max] (official:
    [0.1, 2] pixels)."""

    def __init__(self, p: float, radius_min: float = 0.1, radius_max: float = 2.0) -> None:
        self.p, self.radius_min, self.radius_max = p, radius_min, radius_max

    def __call__(self, img: Image.Image) -> Image.Image:
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(random.uniform(self.radius_min, self.radius_max)))


class Solarization:
    """Invert pixels above 128 with probability ``p``."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img: Image.Image) -> Image.Image:
        return ImageOps.solarize(img) if random.random() < self.p else img


@dataclass(frozen=True)
class CropConfig:
    """Multi-crop parameters; the defaults are the official ones (224 and 96 pixel crops)."""

    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    local_crops_number: int = 8
    global_crop_size: int = 224
    local_crop_size: int = 96
    random: bool = True  # False: deterministic resized views, for parity tests
    # Colour-jitter strength: 1 is the official ColorJitter(0.4, 0.4, 0.2, 0.1); 2 is close to
    # SimCLR's CIFAR-strength distortion. On CIFAR-10 in 30 CPU minutes it gave the same k-NN
    # as 1 (docs/benchmarks/training-quality.md, runs I and J).
    color_jitter: float = 1.0

    @property
    def ncrops(self) -> int:
        return 2 + self.local_crops_number


class MultiCropAugmentation:
    """PIL image -> [global1, global2, local_1..local_N], tensors (3, S, S), normalised."""

    def __init__(self, cfg: CropConfig) -> None:
        self.cfg = cfg
        normalize = transforms.Compose([transforms.ToTensor(),
                                        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        if not cfg.random:
            g, loc = cfg.global_crop_size, cfg.local_crop_size
            resize = transforms.InterpolationMode.BICUBIC
            self.global1 = self.global2 = transforms.Compose(
                [transforms.Resize((g, g), resize), normalize])
            self.local = transforms.Compose([transforms.Resize((loc, loc), resize), normalize])
            return
        cj = cfg.color_jitter
        flip_and_jitter = transforms.Compose([
            transforms.RandomHorizontalFlip(p=0.5),
            transforms.RandomApply([transforms.ColorJitter(
                0.4 * cj, 0.4 * cj, 0.2 * cj, min(0.1 * cj, 0.5))], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])

        def crop(size: int, scale: tuple[float, float]) -> transforms.RandomResizedCrop:
            return transforms.RandomResizedCrop(
                size, scale=tuple(scale), interpolation=transforms.InterpolationMode.BICUBIC)

        # The official blur radii (0.1-2 px) are meant for 224-px global crops; with smaller
        # crops (e.g. 32 px for CIFAR) the same radius in pixels erases most of the image, so
        # the radii scale with the global crop size (identical to the official at 224).
        r = cfg.global_crop_size / 224

        def blur(p: float) -> GaussianBlur:
            return GaussianBlur(p, 0.1 * r, 2.0 * r)

        self.global1 = transforms.Compose([crop(cfg.global_crop_size, cfg.global_crops_scale),
                                           flip_and_jitter, blur(1.0), normalize])
        self.global2 = transforms.Compose([crop(cfg.global_crop_size, cfg.global_crops_scale),
                                           flip_and_jitter, blur(0.1), Solarization(0.2),
                                           normalize])
        self.local = transforms.Compose([crop(cfg.local_crop_size, cfg.local_crops_scale),
                                         flip_and_jitter, blur(0.5), normalize])

    def __call__(self, img: Image.Image) -> list[torch.Tensor]:
        crops = [self.global1(img), self.global2(img)]
        crops += [self.local(img) for _ in range(self.cfg.local_crops_number)]
        return crops


# -- dataset and sampler ------------------------------------------------------------------------
class MultiCropDataset(Dataset):
    """Indexed by ``(epoch, index)`` (see :class:`EpochSampler`); returns (the transform's
    output, files skipped): the crops, or with ``--augmentation batched`` the decoded image.

    An unreadable sample is replaced by the next readable one, with a warning; the count of
    skipped files travels with the batch so that the training log can report it.
    """

    def __init__(self, samples: list[Sample], transform: Callable[[Image.Image], Any],
                 seed: int) -> None:
        self.samples, self.transform, self.seed = samples, transform, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Any, int]:
        epoch, index = key
        for skipped in range(len(self.samples)):
            sample = self.samples[(index + skipped) % len(self.samples)]
            try:
                img = load_rgb(sample)
            except (OSError, ValueError, SyntaxError) as e:  # PIL raises all three on bad bytes
                where = sample.path if sample.frame is None else f"{sample.path}#{sample.frame}"
                log.warning(f"skipping {where}: "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
                continue
            return self._views(img, epoch, index), skipped
        raise UserError("no readable image in the dataset")

    def _views(self, img: Image.Image, epoch: int, index: int) -> Any:
        """Crops drawn from RNGs seeded by (seed, epoch, index); the caller's RNG is untouched."""
        if getattr(self.transform, "deterministic", False):
            return self.transform(img)  # nothing random: skip the seeding (about 1 ms a sample)
        seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            # The CPU generator only: torch.manual_seed also queues a seed for every CUDA
            # device, which took 6 of the 28 ms that a sample's ten crops cost.
            torch.default_generator.manual_seed(seed)
            try:
                return self.transform(img)
            finally:
                random.setstate(py_state)


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(epoch, index)`` and can start mid-epoch.

    ``start_batch`` skips that many batches of this process's share, which is how a run resumed
    from a mid-epoch checkpoint continues with the batches it had not seen.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int,
                 batch_size: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.start_batch = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start_batch * self.batch_size:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size


def steps_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Full batches per process and epoch (the last partial batch is dropped, as officially)."""
    per_rank = -(-num_samples // world_size)
    return per_rank // batch_size


def build_loader(dataset: MultiCropDataset, sampler: EpochSampler, batch_size: int,
                 num_workers: int, pin_memory: bool, worker_niceness: int = 0,
                 collate_fn: Callable | None = None) -> DataLoader:
    """The training loader; ``worker_niceness`` > 0 lowers the workers' scheduling priority
    (see :func:`lower_priority`); ``collate_fn`` None: the default (lists of crops). The
    workers leave Ctrl-C and SIGHUP to the training process (:func:`_init_worker`)."""
    init = partial(_init_worker, worker_niceness) if num_workers else None
    return DataLoader(dataset, sampler=sampler, batch_size=batch_size, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=True, worker_init_fn=init,
                      collate_fn=collate_fn,
                      persistent_workers=False, prefetch_factor=4 if num_workers else None,
                      # worker seeds come from this generator, not the global RNG: views are
                      # seeded per sample anyway, and the global RNG (stochastic depth) must not
                      # depend on when an epoch's iterator was created (exact resume).
                      generator=torch.Generator().manual_seed(0))


def _init_worker(niceness: int, worker_id: int = 0) -> None:
    """Ignore SIGINT and SIGHUP, and lower the priority by ``niceness``.

    Ctrl-C and a closed terminal signal the whole process group, workers included; a worker
    that died of it would make the training process's next batch fail instead of letting it
    finish its step and write its checkpoint (:mod:`dino_train.loop`). SIGTERM keeps its
    default: the loader and multiprocessing end workers with it (a worker that ignored it kept
    the training process waiting at exit).
    """
    for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
        if s is not None:
            signal.signal(s, signal.SIG_IGN)
    if niceness:
        lower_priority(niceness)


def lower_priority(niceness: int, worker_id: int = 0) -> None:
    """Run this (worker) process at a lower priority: ``niceness`` added, as ``nice`` does.

    For training on the CPU, where the workers share the cores with the training threads:
    a worker that preempts one of them in the middle of a parallel region stalls all of them,
    which cost far more than the worker's own CPU time (measured: 0.3 CPU s of augmentation
    per batch made each ViT-Tiny step about 0.7 s slower). At low priority, the workers run when
    the training threads wait. Ignored where the platform has no ``os.nice``.
    """
    try:
        os.nice(niceness)
    except (AttributeError, OSError):
        pass
