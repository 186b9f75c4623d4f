"""Linear probe: a linear classifier trained on a frozen backbone's features, as the official
``eval_linear.py`` (Caron et al. 2021, the DINO paper's second evaluation protocol).

Features (:func:`probe_features`): the [CLS] tokens of the last ``n`` blocks, concatenated, and
with ``avgpool`` the mean of the last block's patch tokens beside them; the official choice is
``n = 4`` without the pooled tokens for ViT-S (and narrower), ``n = 1`` with them for ViT-B (and
wider) (:func:`default_pooling`). The classifier (:class:`LinearClassifier`: weights N(0, 0.01),
bias 0) is trained with cross-entropy by SGD (momentum 0.9, no weight decay, lr scaled by the
batch / 256, cosine to 0 over the epochs, stepped per epoch), on

* ``augmented`` (the official protocol): every epoch, new random-resized crops and flips of the
  training images, through the backbone;
* ``cached`` (fast, for CPUs): the backbone runs once per image, on the evaluation view (resize,
  centre crop, as for validation); the epochs then train on those cached features.

The training order of an epoch is the official one on one process (``DistributedSampler`` with
seed 0: a permutation drawn from ``seed + epoch``). Validation: resize to size * 256/224, centre
crop; top-1 and top-5 (%), after every ``val_freq`` epochs and the last.

The backbone is read through the surface every family shares: ``get_intermediate_layers`` as
DINO's (normalised tokens (B, T, D), [CLS] first, then ``num_prefix_tokens - 1`` register or
storage tokens, then patches) or as DINOv2's and DINOv3's (``n=``, ``return_class_token=True``:
pairs of patch tokens (B, N, D) and [CLS] (B, D)).
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from torchvision import transforms

from dino_core.constants import IMAGENET_MEAN, IMAGENET_STD

from .knn import LabelledImages, NonFiniteFeatures, ImageFiles, eval_transform

log = logging.getLogger(__name__)

MODES = ("augmented", "cached")
WIDE_EMBED_DIM = 768  # ViT-B's width: from here on, the official recipe is n = 1 with avgpool


def default_pooling(embed_dim: int) -> tuple[int, bool]:
    """(n_last_blocks, avgpool_patchtokens) of the official recipe for a backbone this wide:
    ViT-S 4 blocks' [CLS], ViT-B the last [CLS] and the pooled patches (eval_linear.py's help)."""
    return (1, True) if embed_dim >= WIDE_EMBED_DIM else (4, False)


def last_blocks(model: nn.Module, images: torch.Tensor, n: int
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """([CLS] (B, D), patch tokens (B, N, D)) of the last ``n`` blocks, oldest first, after the
    final norm; registers and storage tokens are neither."""
    take = model.get_intermediate_layers
    if "return_class_token" in inspect.signature(take).parameters:  # DINOv2, DINOv3
        return [(cls, patches) for patches, cls in take(images, n=n, return_class_token=True)]
    prefix = getattr(model, "num_prefix_tokens", 1)  # DINO: [CLS] (and registers) first
    return [(tokens[:, 0], tokens[:, prefix:]) for tokens in take(images, n=n)]


def probe_features(model: nn.Module, images: torch.Tensor, n: int, avgpool: bool
                   ) -> torch.Tensor:
    """Images (B, 3, H, W) -> features (B, D * (n + avgpool)) in fp32.

    With ``n = 1`` and ``avgpool`` the two are interleaved per channel ([CLS]_0, pool_0,
    [CLS]_1, ...), as the official code's ``cat(..., dim=-1).reshape``, so its released linear
    weights fit; with ``n > 1`` (which the official code cannot combine with avgpool) the pooled
    patches follow the [CLS] tokens, as DINOv2's linear evaluation.
    """
    blocks = last_blocks(model, images, n)
    cls = torch.cat([c for c, _ in blocks], dim=-1)
    if not avgpool:
        return cls.float()
    pooled = blocks[-1][1].mean(dim=1)
    if n == 1:
        return torch.stack((cls, pooled), dim=-1).reshape(len(cls), -1).float()
    return torch.cat((cls, pooled), dim=-1).float()


class LinearClassifier(nn.Module):
    """The official linear layer on frozen features: (B, dim) -> logits (B, num_labels); its
    state dict keys are the official ``linear.weight`` and ``linear.bias``."""

    def __init__(self, dim: int, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.linear = nn.Linear(dim, num_labels)
        self.linear.weight.data.normal_(mean=0.0, std=0.01)
        self.linear.bias.data.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.view(x.size(0), -1))


@dataclass(frozen=True)
class LinearConfig:
    """How the probe is trained; the defaults are ``eval_linear.py``'s."""

    n_last_blocks: int = 4
    avgpool_patchtokens: bool = False
    mode: str = "augmented"
    epochs: int = 100
    lr: float = 0.001          # for a batch of 256; scaled linearly with batch_size
    batch_size: int = 128
    image_size: int = 224
    val_freq: int = 1
    seed: int = 0
    num_workers: int = 2
    device: str = "cpu"

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / 256.0


@dataclass
class EpochResult:
    epoch: int
    lr: float
    train_loss: float
    top1: float | None = None
    top5: float | None = None


@dataclass
class LinearResult:
    top1: float                 # after the last epoch
    top5: float | None          # None with fewer than 5 classes
    best_top1: float            # the best of the validated epochs (what eval_linear.py prints)
    feature_dim: int
    train_images: int
    val_images: int
    history: list[EpochResult] = field(default_factory=list)


# -- features -----------------------------------------------------------------------------------
def train_transform(image_size: int) -> transforms.Compose:
    """The official training augmentation: random-resized crop (scale 0.08-1, bilinear), flip."""
    return transforms.Compose([
        transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _loader(images: ImageFiles, batch_size: int, num_workers: int,
            order: list[int] | None = None, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)  # the workers' augmentation seeds
    return DataLoader(images, batch_size=batch_size, sampler=order, num_workers=num_workers,
                      generator=generator)


@torch.no_grad()
def _features(model: nn.Module, images: torch.Tensor, cfg: LinearConfig, first: bool
              ) -> torch.Tensor:
    feats = probe_features(model, images.to(cfg.device), cfg.n_last_blocks,
                           cfg.avgpool_patchtokens)
    if first and not torch.isfinite(feats).all():
        raise NonFiniteFeatures("the backbone's features are NaN or infinite on the first "
                                "batch of images: its weights are damaged or come from a "
                                "diverged run; evaluate an earlier checkpoint")
    return feats


def cached_features(model: nn.Module, data: LabelledImages, cfg: LinearConfig
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N', F) on the evaluation view and their labels (N',), unreadable images left
    out (each was warned about)."""
    loader = _loader(ImageFiles(data.paths, eval_transform(cfg.image_size), cfg.image_size),
                     cfg.batch_size, cfg.num_workers)
    feats, ok = [], []
    for i, (images, good) in enumerate(loader):
        feats.append(_features(model, images, cfg, i == 0).cpu())
        ok.append(good)
    mask = torch.cat(ok)
    return torch.cat(feats)[mask], torch.tensor(data.labels)[mask]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """One process's ``DistributedSampler(shuffle=True, seed=seed)`` order at ``epoch``."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=generator).tolist()


def augmented_batches(model: nn.Module, data: LabelledImages, cfg: LinearConfig
                      ) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """epoch -> its batches of (features (B, F), labels (B,)) from new augmented views."""
    images = ImageFiles(data.paths, train_transform(cfg.image_size), cfg.image_size)
    labels = torch.tensor(data.labels)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(images), cfg.seed, epoch)
        loader = _loader(images, cfg.batch_size, cfg.num_workers, order, cfg.seed + epoch)
        start = 0
        for i, (views, good) in enumerate(loader):
            idx = torch.tensor(order[start:start + len(views)])
            start += len(views)
            feats = _features(model, views, cfg, epoch == 0 and i == 0)
            if good.any():
                yield feats[good.to(feats.device)], labels[idx][good].to(cfg.device)
    return batches


def cached_batches(features: torch.Tensor, labels: torch.Tensor, cfg: LinearConfig
                   ) -> Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """epoch -> its batches of cached (features, labels), in the official order."""
    features, labels = features.to(cfg.device), labels.to(cfg.device)

    def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.tensor(epoch_order(len(labels), cfg.seed, epoch), device=cfg.device)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            yield features[idx], labels[idx]
    return batches


# -- training and evaluation --------------------------------------------------------------------
def train_epoch(classifier: LinearClassifier, optimizer: torch.optim.Optimizer,
                batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """One pass of SGD steps; returns the mean training loss."""
    classifier.train()
    total, steps = 0.0, 0
    for feats, labels in batches:
        loss = nn.functional.cross_entropy(classifier(feats), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)


@torch.no_grad()
def accuracy(classifier: LinearClassifier, features: torch.Tensor, labels: torch.Tensor,
             chunk: int = 4096) -> tuple[float, float | None]:
    """Top-1 and top-5 (%) of the classifier on features (N, F); top-5 is None with fewer than 5
    classes (as the official code, which then reports top-1 only)."""
    classifier.eval()
    k = 5 if classifier.num_labels >= 5 else 1
    hits1 = hits5 = 0
    for start in range(0, len(labels), chunk):
        logits = classifier(features[start:start + chunk])
        top = logits.topk(k, dim=1).indices.eq(labels[start:start + chunk].view(-1, 1))
        hits1 += top[:, 0].sum().item()
        hits5 += top.any(dim=1).sum().item()
    n = max(len(labels), 1)
    return 100.0 * hits1 / n, (100.0 * hits5 / n if k == 5 else None)


def train_probe(batches: Callable[[int], Iterator[tuple[torch.Tensor, torch.Tensor]]],
                feature_dim: int, num_labels: int, val: tuple[torch.Tensor, torch.Tensor],
                cfg: LinearConfig, report: Callable[[EpochResult], None] | None = None
                ) -> tuple[LinearClassifier, list[EpochResult]]:
    """The official optimisation: SGD (momentum 0.9, no weight decay) at ``cfg.scaled_lr``,
    cosine-annealed to 0 over the epochs (stepped per epoch); validated on ``val`` (cached
    evaluation-view features, labels) every ``val_freq`` epochs and after the last."""
    torch.manual_seed(cfg.seed)
    classifier = LinearClassifier(feature_dim, num_labels).to(cfg.device)
    optimizer = torch.optim.SGD(classifier.parameters(), cfg.scaled_lr, momentum=0.9,
                                weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs, eta_min=0)
    history = []
    for epoch in range(cfg.epochs):
        lr = optimizer.param_groups[0]["lr"]
        result = EpochResult(epoch, lr, train_epoch(classifier, optimizer, batches(epoch)))
        scheduler.step()
        if epoch % cfg.val_freq == 0 or epoch == cfg.epochs - 1:
            result.top1, result.top5 = accuracy(classifier, *val)
        if not math.isfinite(result.train_loss):
            log.warning(f"epoch {epoch}: the training loss is {result.train_loss}; lower --lr")
        history.append(result)
        if report is not None:
            report(result)
    return classifier, history


def linear_evaluate(model: nn.Module, train: LabelledImages, val: LabelledImages,
                    cfg: LinearConfig, report: Callable[[EpochResult], None] | None = None
                    ) -> tuple[LinearClassifier, LinearResult]:
    """Train the probe on ``train`` with ``cfg.mode`` and evaluate it on ``val``."""
    model = model.to(cfg.device).eval()
    val_feats, val_labels = cached_features(model, val, cfg)
    if cfg.mode == "cached":
        train_feats, train_labels = cached_features(model, train, cfg)
        batches, n_train = cached_batches(train_feats, train_labels, cfg), len(train_labels)
    else:
        batches, n_train = augmented_batches(model, train, cfg), len(train.paths)
    classifier, history = train_probe(batches, val_feats.shape[1], len(train.classes),
                                      (val_feats.to(cfg.device), val_labels.to(cfg.device)),
                                      cfg, report)
    validated = [h for h in history if h.top1 is not None]
    return classifier, LinearResult(
        top1=history[-1].top1, top5=history[-1].top5,
        best_top1=max(h.top1 for h in validated), feature_dim=val_feats.shape[1],
        train_images=n_train, val_images=len(val_labels), history=history)
