"""Weighted k-NN evaluation of a backbone, as the official ``eval_knn.py``.

Features are the backbone's [CLS] output, L2-normalised; each validation image is classified by
the votes of its ``k`` most cosine-similar training images, each weighted ``exp(sim / T)``
(T = 0.07); top-1 and top-5 accuracies in percent.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from dino_core.constants import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD
from dino_core.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_KS = (10, 20, 100, 200)


class NonFiniteFeatures(UserError):
    """The backbone's features are NaN or infinite (damaged weights, or a diverged run)."""


@dataclass(frozen=True)
class LabelledImages:
    paths: list[str]
    labels: list[int]
    classes: list[str]


@dataclass(frozen=True)
class KnnResult:
    k: int
    top1: float
    top5: float


def labelled_folder(root: str | os.PathLike, classes: list[str] | None = None,
                    max_per_class: int | None = None) -> LabelledImages:
    """ImageFolder layout ``root/<class>/**/<image>``; ``classes`` fixes the label order."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory (expected <root>/<class>/<images>)")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = classes if classes is not None else found
    if not found:
        raise UserError(f"{root}: no class folders (expected <root>/<class>/<images>)")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise UserError(f"{root}: classes {', '.join(unknown[:5])} are not in the training set")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (root / name).is_dir() else []
        files = files[:max_per_class] if max_per_class else files
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise UserError(f"{root}: no images in the class folders")
    return LabelledImages(paths, labels, list(classes))


def eval_transform(image_size: int) -> transforms.Compose:
    """Official evaluation preprocessing: resize to size * 256/224 (bicubic), centre crop."""
    return transforms.Compose([
        transforms.Resize(int(round(image_size * 256 / 224)),
                          interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageFiles(Dataset):
    """Image files through a transform: (image (3, S, S), readable); an unreadable
    file is warned about and gives zeros and False."""

    def __init__(self, paths: list[str], transform: transforms.Compose, size: int) -> None:
        self.paths, self.transform, self.size = paths, transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool]:
        try:
            with Image.open(self.paths[i]) as img:
                return self.transform(img.convert("RGB")), True
        except (OSError, ValueError, SyntaxError) as e:
            log.warning(f"skipping {self.paths[i]}: {e}")
            return torch.zeros(3, self.size, self.size), False


@torch.no_grad()
def extract_features(model: nn.Module, paths: list[str], image_size: int, batch_size: int = 128,
                     device: torch.device | str = "cpu", num_workers: int = 2,
                     dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised [CLS] features (N, D) in fp32 and a mask (N,) of the readable images.

    Raises :class:`NonFiniteFeatures` when the first batch's features are not all finite:
    normalised NaN features would otherwise vote at random and give chance-level accuracy.
    """
    device = torch.device(device)
    loader = DataLoader(ImageFiles(paths, eval_transform(image_size), image_size),
                        batch_size=batch_size, num_workers=num_workers)
    feats, ok = [], []
    was_training = model.training
    model.eval()
    for images, good in loader:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            feats.append(model(images.to(device)).float().cpu())
        ok.append(good)
        if len(feats) == 1 and not torch.isfinite(feats[0]).all():
            model.train(was_training)
            raise NonFiniteFeatures("the backbone's features are NaN or infinite on the first "
                                    "batch of images: its weights are damaged or come from a "
                                    "diverged run; evaluate an earlier checkpoint")
    model.train(was_training)
    return F.normalize(torch.cat(feats), dim=1, p=2), torch.cat(ok)


def knn_classify(train_features: torch.Tensor, train_labels: torch.Tensor,
                 test_features: torch.Tensor, test_labels: torch.Tensor, k: int,
                 temperature: float = 0.07, num_classes: int | None = None,
                 chunk: int = 1024) -> tuple[float, float]:
    """Weighted k-NN top-1/top-5 (%): features (N, D) L2-normalised, labels (N,) int64."""
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max())) + 1
    correct1 = correct5 = 0
    for start in range(0, len(test_labels), chunk):
        feats, targets = test_features[start:start + chunk], test_labels[start:start + chunk]
        sims, idx = (feats @ train_features.T).topk(k, dim=1, largest=True, sorted=True)
        weights = (sims / temperature).exp()
        votes = torch.zeros(len(targets), num_classes, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[idx], weights)
        ranked = votes.argsort(dim=1, descending=True)
        hits = ranked.eq(targets.view(-1, 1))
        correct1 += hits[:, :1].sum().item()
        correct5 += hits[:, :min(5, k)].sum().item()
    return 100.0 * correct1 / len(test_labels), 100.0 * correct5 / len(test_labels)


def knn_evaluate(model: nn.Module, train: LabelledImages, val: LabelledImages,
                 ks: tuple[int, ...] = DEFAULT_KS, temperature: float = 0.07,
                 image_size: int = 224, batch_size: int = 128, device: str = "cpu",
                 num_workers: int = 2, dtype: torch.dtype | None = None) -> list[KnnResult]:
    """Features of both sets, then one :class:`KnnResult` per ``k`` (k <= training images)."""
    too_big = [k for k in ks if k > len(train.paths)]
    if too_big:
        raise UserError(f"k={too_big[0]} is more than the {len(train.paths)} training images; "
                        f"pass smaller values")
    tr_f, tr_ok = extract_features(model, train.paths, image_size, batch_size, device,
                                   num_workers, dtype)
    va_f, va_ok = extract_features(model, val.paths, image_size, batch_size, device,
                                   num_workers, dtype)
    tr_l, va_l = torch.tensor(train.labels)[tr_ok], torch.tensor(val.labels)[va_ok]
    return [KnnResult(k, *knn_classify(tr_f[tr_ok], tr_l, va_f[va_ok], va_l, k, temperature,
                                       len(train.classes)))
            for k in ks]
