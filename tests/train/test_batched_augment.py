"""--augmentation batched: each operation against torchvision's, the crop boxes against
RandomResizedCrop's rule, and the views' statistics against the PIL pipeline's."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision import transforms

from dino_train.batched_augment import (
    BatchedMultiCrop,
    SourceImage,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    collate_sources,
    crop_resize,
    gaussian_blur,
    grayscale,
    random_resized_boxes,
)
from dino_train.data import CropConfig, MultiCropAugmentation, MultiCropDataset, scan_folder

SMALL = CropConfig(global_crops_scale=(0.25, 1.0), local_crops_scale=(0.05, 0.25),
                   local_crops_number=3, global_crop_size=32, local_crop_size=16)


def _images(n: int = 6, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ours, theirs, low, high", [
    (adjust_brightness, TF.adjust_brightness, 0.6, 1.4),
    (adjust_contrast, TF.adjust_contrast, 0.6, 1.4),
    (adjust_saturation, TF.adjust_saturation, 0.8, 1.2),
    (adjust_hue, TF.adjust_hue, -0.1, 0.1),
], ids=["brightness", "contrast", "saturation", "hue"])
def test_colour_operations_match_torchvision_per_image(ours, theirs, low, high):
    x = _images()
    factors = torch.linspace(low, high, len(x))
    got = ours(x.clone(), factors[:, None, None, None])
    for img, f, out in zip(x, factors, got):
        # 5e-5: torchvision's float luma weighs red 0.2989, PIL's (ours, as the official views) 0.299
        torch.testing.assert_close(out, theirs(img, float(f)), atol=5e-5, rtol=0)


def test_grayscale_matches_torchvision():
    x = _images()
    torch.testing.assert_close(grayscale(x), TF.rgb_to_grayscale(x), atol=1e-4, rtol=0)
    assert (grayscale(x) - TF.rgb_to_grayscale(x)).abs().max() > 0  # 0.299 (PIL), not 0.2989


def test_blur_matches_torchvision_away_from_the_edges_and_sigma_zero_is_identity():
    x = _images(4, 24)
    sigma = torch.tensor([0.5, 1.0, 2.0, 0.0])
    got = gaussian_blur(x, sigma)
    half = math.ceil(3 * 2.0)
    inner = (..., slice(half, -half), slice(half, -half))  # torchvision pads by reflection
    for img, s, out in zip(x[:3], sigma[:3], got[:3]):
        want = TF.gaussian_blur(img, kernel_size=2 * half + 1, sigma=float(s))
        torch.testing.assert_close(out[inner], want[inner], atol=2e-6, rtol=0)
    torch.testing.assert_close(got[3], x[3], atol=1e-6, rtol=0)


def test_a_box_of_the_output_size_crops_exact_pixels():
    x = _images(2, 16)
    boxes = torch.tensor([[4.0, 2.0, 12.0, 10.0], [0.0, 8.0, 8.0, 16.0]])
    got = crop_resize(x, boxes, torch.tensor([0, 1]), 8)
    torch.testing.assert_close(got[0], x[0, :, 2:10, 4:12], atol=1e-6, rtol=0)
    torch.testing.assert_close(got[1], x[1, :, 8:16, 0:8], atol=1e-6, rtol=0)


def test_boxes_follow_random_resized_crop():
    n, scale = 4000, (0.25, 1.0)
    sizes = torch.tensor([[48, 64]] * n)
    boxes = random_resized_boxes(sizes, scale, torch.Generator().manual_seed(0))
    x1, y1, x2, y2 = boxes.unbind(1)
    w, h = x2 - x1, y2 - y1
    assert torch.equal(boxes, boxes.round())
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= 64).all() and (y2 <= 48).all()
    assert (w * h / (48 * 64) >= scale[0] - 0.03).all()  # area, up to the rounding of w and h
    ratio = w / h
    assert (ratio > 0.7).all() and (ratio < 1.43).all()
    # the same distribution as torchvision's get_params (means over 4,000 draws)
    torch.manual_seed(0)
    ref = torch.tensor([transforms.RandomResizedCrop.get_params(torch.empty(3, 48, 64), list(scale),
                                                                [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)  # (i, j, h, w)
    ref_area = (ref[:, 2] * ref[:, 3] / (48 * 64)).mean()
    assert abs(float((w * h / (48 * 64)).mean()) - float(ref_area)) < 0.015
    assert abs(float((x1 + w / 2).mean()) - float((ref[:, 1] + ref[:, 3] / 2).mean())) < 0.6


def test_box_falls_back_to_the_central_crop_when_nothing_fits():
    boxes = random_resized_boxes(torch.tensor([[4, 200]]), (0.9, 1.0),
                                 torch.Generator().manual_seed(0))
    # torchvision's fallback: height 4, width round(4 * 4/3) = 5, centred
    assert boxes.tolist() == [[97.0, 0.0, 102.0, 4.0]]


def test_mixed_sizes_are_padded_with_their_edges_and_crops_never_see_the_padding():
    small = torch.full((3, 10, 8), 200, dtype=torch.uint8)
    large = torch.zeros(3, 30, 40, dtype=torch.uint8)
    (batch, sizes), skipped = collate_sources([(small, 0), (large, 2)])
    assert batch.shape == (2, 3, 30, 40) and sizes.tolist() == [[10, 8], [30, 40]]
    assert skipped.tolist() == [0, 2]
    assert (batch[0] == 200).all()  # edge copies, not zeros
    views = BatchedMultiCrop(CropConfig(global_crop_size=32, local_crop_size=16,
                                        local_crops_number=1, random=False))
    crops = views(batch, sizes, torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    for crop in crops:
        torch.testing.assert_close(crop[0], ((200 / 255 - mean) / std).expand_as(crop[0]))


def test_source_image_shrinks_only_large_images():
    big = Image.fromarray(np.zeros((300, 500, 3), np.uint8))
    assert SourceImage(64)(big).shape == (3, 64, 107)
    assert SourceImage(64)(Image.fromarray(np.zeros((40, 48, 3), np.uint8))).shape == (3, 40, 48)


def test_views_have_the_official_layout_and_depend_only_on_the_seed():
    images = (_images(5, 40) * 255).to(torch.uint8)
    sizes = torch.tensor([[40, 40]] * 5)
    views = BatchedMultiCrop(SMALL)
    first = views(images, sizes, torch.Generator().manual_seed(1))
    assert [tuple(c.shape) for c in first] == [(5, 3, 32, 32)] * 2 + [(5, 3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in first)
    again = views(images, sizes, torch.Generator().manual_seed(1))
    other = views(images, sizes, torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not any(torch.equal(a, b) for a, b in zip(first, other))


def test_view_statistics_match_the_pil_pipeline(tmp_path):
    """Same images, both pipelines: per-channel mean and spread of each kind of view agree
    (a scaling, channel-order or normalisation mistake moves them by far more), and the share
    of grayscale crops is RandomGrayscale's 0.2."""
    folder = tmp_path / "imgs"
    rs = np.random.RandomState(0)
    folder.mkdir()
    for i in range(96):  # smooth colour images: a gradient and a random tint
        ramp = np.linspace(0, 1, 40)[None, :, None]
        tint = rs.uniform(0.2, 1.0, 3)[None, None, :]
        Image.fromarray((255 * ramp * tint * np.ones((40, 1, 1))).astype(np.uint8)).save(
            folder / f"{i:03d}.png")
    samples = scan_folder(folder).samples
    pil = MultiCropDataset(samples, MultiCropAugmentation(SMALL), seed=0)
    pil_views = [torch.stack(v) for v in zip(*[pil[(e, i)][0] for e in range(3)
                                               for i in range(len(samples))])]
    src = MultiCropDataset(samples, SourceImage(64), seed=0)
    (batch, sizes), _ = collate_sources([src[(0, i)] for i in range(len(samples))])
    views = BatchedMultiCrop(SMALL)
    ours = [torch.cat(v) for v in zip(*[views(batch, sizes, torch.Generator().manual_seed(e))
                                        for e in range(3)])]
    pairs = [(pil_views[0], ours[0]), (pil_views[1], ours[1]),  # global 1, global 2 (solarised)
             (torch.cat(pil_views[2:]), torch.cat(ours[2:]))]    # the local crops
    for kind, (a, b) in enumerate(pairs):
        assert (a.mean((0, 2, 3)) - b.mean((0, 2, 3))).abs().max() < 0.08, kind
        assert (a.std((0, 2, 3)) - b.std((0, 2, 3))).abs().max() < 0.08, kind
    gray = torch.cat([(c[:, 0] * 0.229 + 0.485 - c[:, 1] * 0.224 - 0.456).abs().amax((1, 2)) < 1e-4
                      for c in ours])
    assert 0.15 < gray.float().mean() < 0.25  # 1,440 crops: 0.2 +- 0.011
