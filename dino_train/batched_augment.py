"""DINO's multi-crop views made from a whole batch at once, on the training device.

``--augmentation batched``: the loader workers only decode images (:class:`SourceImage`,
:func:`collate_sources`); :class:`BatchedMultiCrop` then makes every crop of the batch with a
few tensor operations where the training runs. The per-image PIL pipeline
(:class:`~dino_train.data.MultiCropAugmentation`) costs about 3 ms of one core per CIFAR image
(ten 224/96-pixel crops: 28 ms), so on a GPU the workers, not the GPU, set the pace
(docs/benchmarks/gpu.md), and on a 2-core CPU the worker's time is taken from the training threads.

The transforms, their order and their parameter ranges are the official ones (those of
``MultiCropAugmentation``): random resized crop (scale, aspect 3/4-4/3), horizontal flip 0.5,
colour jitter 0.8 (brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, in a random order per
crop), grayscale 0.2, Gaussian blur (1.0 / 0.1 / 0.5), solarisation 0.2 on the second global
crop, ImageNet normalisation. Two differences, both in the resampling and rounding, not in
what the views show: crops are resized with ``roi_align`` (bilinear, averaging several source
pixels per output pixel when shrinking) instead of PIL's bicubic filter, and the colour
operations work on floats instead of rounding to 8 bits after each of them.

Every random draw comes from one CPU generator seeded by the caller (the trainer seeds it with
(seed, step, rank)), so a resumed run makes the same views, on any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align

from dino_core.constants import IMAGENET_MEAN, IMAGENET_STD

from .data import CropConfig

ASPECT_RANGE = (3 / 4, 4 / 3)   # RandomResizedCrop's default ratio range
CROP_ATTEMPTS = 10              # ... and its number of tries before the central fallback
GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as PIL's convert("L")


# -- loader side: decode only -------------------------------------------------------------------
class SourceImage:
    """PIL image -> uint8 tensor (3, H, W), shrunk so that its shorter side is at most ``max_side``.

    Shrinking bounds the memory and transfer of a padded batch of large photos; at twice the
    global crop size no crop loses resolution (a global crop covers at least ``scale[0]`` of
    the image, and at the default 0.4 that is more pixels than the crop has).
    """

    deterministic = True  # no random draw: the dataset needs no per-sample seeding

    def __init__(self, max_side: int) -> None:
        self.max_side = max_side

    def __call__(self, img: Image.Image) -> torch.Tensor:
        w, h = img.size
        if min(w, h) > self.max_side:
            f = self.max_side / min(w, h)
            img = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.BICUBIC,
                             reducing_gap=3.0)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def collate_sources(items: list[tuple[torch.Tensor, int]]
                    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """[(uint8 (3, H_i, W_i), skipped)] -> ((uint8 (B, 3, H, W), sizes (B, 2) as (H_i, W_i)),
    skipped (B,)).

    Images of different sizes are padded at the bottom and right with copies of their last row
    and column: a crop's bilinear samples at the image's edge then read the edge, as when the
    image is alone, not the padding.
    """
    images = [img for img, _ in items]
    sizes = torch.tensor([img.shape[1:] for img in images], dtype=torch.int64)
    height, width = (int(v) for v in sizes.max(0).values)
    if all(img.shape[1:] == (height, width) for img in images):
        batch = torch.stack(images)
    else:
        batch = torch.empty(len(images), 3, height, width, dtype=torch.uint8)
        for out, img in zip(batch, images):
            h, w = img.shape[1:]
            out[:, :h, :w] = img
            out[:, :h, w:] = img[:, :, w - 1:]
            out[:, h:, :] = out[:, h - 1:h, :]
    return (batch, sizes), torch.tensor([skipped for _, skipped in items])


# -- crop boxes ---------------------------------------------------------------------------------
def random_resized_boxes(sizes: torch.Tensor, scale: tuple[float, float],
                         generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop's box for each image: sizes (K, 2) as (H, W) -> boxes (K, 4) as
    (x1, y1, x2, y2) in pixels, integer-valued.

    torchvision's rule, drawn for all images at once: up to 10 tries of an area in ``scale``
    times the image's and an aspect ratio log-uniform in [3/4, 4/3]; the first try that fits
    is placed uniformly; when none fits, the largest central crop of a ratio in that range.
    """
    k = sizes.shape[0]
    h, w = sizes[:, :1].double(), sizes[:, 1:].double()
    area = h * w * torch.empty(k, CROP_ATTEMPTS, dtype=torch.float64).uniform_(
        *scale, generator=generator)
    log_ratio = torch.empty(k, CROP_ATTEMPTS, dtype=torch.float64).uniform_(
        math.log(ASPECT_RANGE[0]), math.log(ASPECT_RANGE[1]), generator=generator)
    ratio = log_ratio.exp()
    cw, ch = (area * ratio).sqrt().round(), (area / ratio).sqrt().round()
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.double().argmax(1, keepdim=True)
    cw, ch = cw.gather(1, first).squeeze(1), ch.gather(1, first).squeeze(1)
    h, w = h.squeeze(1), w.squeeze(1)
    pos = torch.rand(k, 2, dtype=torch.float64, generator=generator)
    y = (pos[:, 0] * (h - ch + 1)).floor()
    x = (pos[:, 1] * (w - cw + 1)).floor()
    # The fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
    in_ratio = w / h
    fw = torch.where(in_ratio > ASPECT_RANGE[1], (h * ASPECT_RANGE[1]).round(), w)
    fh = torch.where(in_ratio < ASPECT_RANGE[0], (w / ASPECT_RANGE[0]).round(), h)
    fall = ~fits.any(1)
    cw, ch = torch.where(fall, fw, cw), torch.where(fall, fh, ch)
    x = torch.where(fall, ((w - cw) / 2).floor(), x)
    y = torch.where(fall, ((h - ch) / 2).floor(), y)
    return torch.stack([x, y, x + cw, y + ch], 1).float()


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, index: torch.Tensor,
                size: int) -> torch.Tensor:
    """images (B, 3, H, W) float, boxes (K, 4) in pixels, index (K,) into the batch -> crops
    (K, 3, size, size). Bilinear; when a box is larger than the output, each output pixel
    averages ceil(box / size)^2 samples (``roi_align``'s adaptive sampling), which keeps the
    shrink from aliasing as PIL's filter does."""
    rois = torch.cat([index[:, None].to(boxes), boxes], 1).to(images)
    return roi_align(images, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1,
                     aligned=True)


# -- colour -------------------------------------------------------------------------------------
def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * x + (1 - factor) * other).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x (N, 3, H, W) in [0, 1], f (N, 1, 1, 1)."""
    return (x * f).clamp_(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (one value per image)."""
    return _blend(x, grayscale(x).mean((1, 2, 3), keepdim=True), f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Blend with the image's luma (per pixel)."""
    return _blend(x, grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` turns (N, 1, 1, 1), through HSV."""
    h, s, v = rgb_to_hsv(x)
    return hsv_to_rgb((h + shift[:, 0]) % 1.0, s, v)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) -> hue in [0, 1), saturation, value, each (N, H, W)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    chroma = v - x.min(1).values
    grey = chroma == 0
    safe = torch.where(grey, torch.ones_like(chroma), chroma)
    s = torch.where(v > 0, chroma / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    # Which channel is the largest decides the sector; ties go red, then green (as colorsys).
    hue = torch.where(v == r, (g - b) / safe,
                      torch.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    return (hue / 6.0) % 1.0, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Hue, saturation, value (N, H, W) -> (N, 3, H, W)."""
    h6 = h * 6.0
    sector = h6.floor()
    frac = h6 - sector
    sector = sector.long() % 6
    p, q, t = v * (1 - s), v * (1 - s * frac), v * (1 - s * (1 - frac))
    # (r, g, b) per sector 0..5, as colorsys.hsv_to_rgb
    table = torch.stack([torch.stack(c, 1) for c in
                         [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]], 1)
    return table.gather(1, sector[:, None, None].expand(-1, 1, 3, -1, -1)).squeeze(1).clamp_(0, 1)


JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


# -- blur ---------------------------------------------------------------------------------------
def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x (N, 3, H, W), sigma (N,) in pixels (0: unchanged) -> blurred; separable, edges
    replicated as PIL does. Each axis is a sum of shifted copies weighted per crop: for the
    few taps these radii need, cheaper than a grouped convolution with 3N groups."""
    half = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    sig = sigma.to(x)[:, None]
    kernel = torch.exp(-0.5 * (offsets / sig.clamp_min(1e-6)) ** 2)
    kernel = torch.where(sig > 0, kernel, (offsets == 0).to(x))  # sigma 0: identity
    kernel = kernel / kernel.sum(1, keepdim=True)  # (N, 2 * half + 1)
    for dim in (-1, -2):
        length = x.shape[dim]
        pad = (half, half, 0, 0) if dim == -1 else (0, 0, half, half)
        padded = F.pad(x, pad, mode="replicate")
        x = sum(kernel[:, i, None, None, None] * padded.narrow(dim, i, length)
                for i in range(2 * half + 1))
    return x


# -- the views ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ViewKind:
    """One of the official three pipelines: its crop size and scale, blur and solarisation."""

    size: int
    scale: tuple[float, float]
    blur_p: float
    solarize_p: float


class BatchedMultiCrop:
    """(uint8 (B, 3, H, W), sizes (B, 2)) -> [global1, global2, local_1..local_N], each
    (B, 3, S, S) float32, normalised: the views of :class:`MultiCropAugmentation`."""

    def __init__(self, cfg: CropConfig) -> None:
        self.cfg = cfg
        g, loc = cfg.global_crop_size, cfg.local_crop_size
        self.kinds = ([ViewKind(g, cfg.global_crops_scale, 1.0, 0.0),
                       ViewKind(g, cfg.global_crops_scale, 0.1, 0.2)]
                      + [ViewKind(loc, cfg.local_crops_scale, 0.5, 0.0)]
                      * cfg.local_crops_number)
        cj = cfg.color_jitter
        # (low, high) of each jitter factor, as ColorJitter(0.4, 0.4, 0.2, 0.1) x strength
        self.jitter_ranges = ((max(0.0, 1 - 0.4 * cj), 1 + 0.4 * cj),
                              (max(0.0, 1 - 0.4 * cj), 1 + 0.4 * cj),
                              (max(0.0, 1 - 0.2 * cj), 1 + 0.2 * cj),
                              (-min(0.1 * cj, 0.5), min(0.1 * cj, 0.5)))
        self.blur_radius = (0.1 * g / 224, 2.0 * g / 224)  # scaled as MultiCropAugmentation's

    def __call__(self, images: torch.Tensor, sizes: torch.Tensor,
                 generator: torch.Generator) -> list[torch.Tensor]:
        x = images.float().div_(255)
        batch = images.shape[0]
        index = torch.arange(batch)
        out: list[torch.Tensor] = []
        # Crops of one size go through the colour pipeline together: 2 passes for 2 + N views.
        for size in dict.fromkeys(k.size for k in self.kinds):
            kinds = [k for k in self.kinds if k.size == size]
            if self.cfg.random:
                boxes = torch.cat([random_resized_boxes(sizes, k.scale, generator) for k in kinds])
            else:  # the whole image resized, no colour change: parity runs
                boxes = torch.cat([torch.cat([torch.zeros(batch, 2), sizes.flip(1).float()], 1)
                                   for _ in kinds])
            crops = crop_resize(x, boxes.to(x.device), index.repeat(len(kinds)).to(x.device), size)
            if self.cfg.random:
                crops = self._distort(crops, kinds, batch, generator)
            out += list(crops.chunk(len(kinds)))
        mean = torch.tensor(IMAGENET_MEAN, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=x.device)[:, None, None]
        return [(c - mean) / std for c in out]

    def _distort(self, x: torch.Tensor, kinds: list[ViewKind], batch: int,
                 generator: torch.Generator) -> torch.Tensor:
        """Flip, colour jitter, grayscale, blur, solarisation on crops (len(kinds) * B, 3, S, S)."""
        n = x.shape[0]

        def draw(p: float | torch.Tensor) -> torch.Tensor:
            return (torch.rand(n, generator=generator) < p).to(x.device)

        flip = draw(0.5)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        self._jitter(x, draw(0.8), generator)
        gray = draw(0.2)
        x = torch.where(gray[:, None, None, None], grayscale(x).expand_as(x), x)
        blur_p = torch.tensor([k.blur_p for k in kinds]).repeat_interleave(batch)
        sigma = torch.empty(n).uniform_(*self.blur_radius, generator=generator)
        blurred = draw(blur_p).nonzero().squeeze(1)
        if len(blurred):
            x[blurred] = gaussian_blur(x[blurred], sigma[blurred.cpu()])
        solarize = draw(torch.tensor([k.solarize_p for k in kinds]).repeat_interleave(batch))
        return torch.where(solarize[:, None, None, None] & (x >= 128 / 255), 1 - x, x)

    def _jitter(self, x: torch.Tensor, apply: torch.Tensor, generator: torch.Generator) -> None:
        """In place on the crops where ``apply``: the four jitter operations, each with its own
        factor, in an order drawn per crop (ColorJitter draws a permutation per call)."""
        n = x.shape[0]
        factors = torch.stack([torch.empty(n).uniform_(lo, hi, generator=generator)
                               for lo, hi in self.jitter_ranges], 1).to(x)
        order = torch.rand(n, 4, generator=generator).argsort(1).to(x.device)
        for slot in range(4):
            for op, fn in enumerate(JITTER_OPS):
                sel = (apply & (order[:, slot] == op)).nonzero().squeeze(1)
                if len(sel):
                    x[sel] = fn(x[sel], factors[sel, op, None, None, None])
