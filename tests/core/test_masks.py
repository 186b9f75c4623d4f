"""The official attention mask, and the measures that compare two models' outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dino_core.errors import OptionError
from dino_core.masks import cosine, mask_iou, mass_threshold_masks


def official_mask(attn: torch.Tensor, threshold: float) -> torch.Tensor:
    """The procedure of the official visualize_attention.py, head by head, in torch:
    sort ascending, normalise by the sum, cumulative sum > 1 - threshold, undo the sort."""
    nh, h, w = attn.shape
    flat = attn.reshape(nh, -1)
    val, idx = torch.sort(flat)
    val = val / val.sum(dim=1, keepdim=True)
    keep = torch.cumsum(val, dim=1) > (1 - threshold)
    unsort = torch.argsort(idx)
    return torch.stack([keep[i][unsort[i]] for i in range(nh)]).reshape(nh, h, w)


@pytest.mark.parametrize("threshold", [0.6, 0.9, 0.3])
def test_mass_threshold_matches_the_official_procedure(threshold):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 6, 12, 20)).astype(np.float32) * 3
    attn = np.exp(logits) / np.exp(logits).sum(axis=(-2, -1), keepdims=True)  # softmax per head
    ours = mass_threshold_masks(attn, threshold)
    for b in range(4):
        ref = official_mask(torch.from_numpy(attn[b]), threshold).numpy()
        np.testing.assert_array_equal(ours[b], ref)
    kept_mass = (attn * ours).sum(axis=(-2, -1))
    assert np.all(kept_mass >= threshold - 1e-5)  # at least the asked mass is inside the mask


def test_masks_refuse_a_mass_outside_zero_one():
    with pytest.raises(OptionError, match="mass fraction"):
        mass_threshold_masks(np.ones((1, 2, 2), np.float32), 1.5)


def test_iou_and_cosine():
    a = np.zeros((2, 3, 3), bool)
    b = a.copy()
    a[0, :2], b[0, 1:] = True, True
    np.testing.assert_allclose(mask_iou(a, b), [3 / 9, 1.0])  # two empty masks count as equal
    x = np.array([[1.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(cosine(x, np.array([[2.0, 0.0], [-1.0, -1.0]])), [1.0, -1.0])
