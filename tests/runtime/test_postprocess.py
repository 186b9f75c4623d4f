"""Post-processing (head selection, PCA colours) and the overlays drawn from them; the mask
algorithm itself is tested in tests/core/test_masks.py."""
from __future__ import annotations

import numpy as np
import pytest

from dino_core.errors import OptionError
from dino_core.masks import mass_threshold_masks
from dino_runtime.postprocess import HeadSelection, PcaColors, normalize_maps
from dino_runtime.render import RenderOptions, render

from .conftest import synthetic_frame


def test_head_selection():
    attn = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_allclose(HeadSelection.parse("mean").select(attn), attn.mean(1, keepdims=True))
    assert HeadSelection.parse("all").select(attn).shape == (2, 3, 2, 2)
    np.testing.assert_array_equal(HeadSelection.parse("2").select(attn), attn[:, 2:3])
    with pytest.raises(OptionError, match="has 3 heads"):
        HeadSelection.parse("3").check(3)
    with pytest.raises(OptionError, match="mean|all|K"):
        HeadSelection.parse("first")
    with pytest.raises(OptionError, match="mass fraction"):
        mass_threshold_masks(attn, 1.5)


def test_normalize_maps_each_map_to_unit_range():
    maps = np.random.default_rng(1).normal(size=(3, 2, 4, 5)).astype(np.float32)
    out = normalize_maps(maps)
    np.testing.assert_allclose(out.min(axis=(-2, -1)), 0, atol=1e-6)
    np.testing.assert_allclose(out.max(axis=(-2, -1)), 1, atol=1e-6)
    assert normalize_maps(np.ones((1, 1, 2, 2))).max() == 0  # flat map: no division by zero


def test_pca_colours_follow_the_main_directions_and_stay_fixed():
    rng = np.random.default_rng(2)
    direction = rng.normal(size=16)
    coeff = np.linspace(-1, 1, 24)
    patch = (coeff[:, None] * direction * 10 + rng.normal(size=(24, 16)) * 0.1)[None]  # (1, N, D)
    pca = PcaColors()
    colors = pca(patch.astype(np.float32), (4, 6))
    assert colors.shape == (1, 4, 6, 3) and colors.dtype == np.uint8
    red = colors[0, ..., 2].reshape(-1).astype(int)  # first component -> red (BGR order)
    assert abs(np.corrcoef(red, coeff)[0, 1]) > 0.99
    basis = pca.basis.copy()
    pca(patch[:, ::-1].astype(np.float32), (4, 6))
    np.testing.assert_array_equal(pca.basis, basis)  # fitted once: no flicker between frames


def test_overlays_draw_heat_contours_and_mosaic():
    frame = np.full((96, 160, 3), 128, np.uint8)
    heat = np.zeros((1, 6, 10), np.float32)
    heat[0, 2:4, 3:6] = 1.0
    mask = heat > 0.5
    plain = render(frame, heat, mask, None, RenderOptions())
    np.testing.assert_array_equal(plain, frame)  # nothing asked, nothing drawn
    hot = render(frame, heat, None, None, RenderOptions(attention=True))
    assert hot.shape == frame.shape and not np.array_equal(hot, frame)
    spread = hot.astype(int).max(axis=2) - hot.astype(int).min(axis=2)
    assert spread[40:60, 50:90].mean() > 40 and spread[:10, :10].mean() < 10  # colour where attended
    outlined = render(frame, None, mask, None, RenderOptions(mask=True))
    edge = np.argwhere((outlined != frame).any(axis=2))
    # contour of the mask block: rows 32..63, cols 48..95 at 16 px per patch
    assert edge[:, 0].min() >= 30 and edge[:, 0].max() <= 66
    assert edge[:, 1].min() >= 46 and edge[:, 1].max() <= 98
    heads = np.stack([heat[0], heat[0][::-1], heat[0][:, ::-1]])
    mosaic = render(synthetic_frame(0), heads, heads > 0.5, None,
                    RenderOptions(attention=True, mask=True))
    assert mosaic.shape == (96, 160, 3)  # 3 heads tiled 2x2 into the frame's size
    assert mosaic[48:, 80:].max() == 0   # the fourth tile is empty
