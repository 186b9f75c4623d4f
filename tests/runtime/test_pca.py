"""The DINOv2 parts view: one PCA basis across images, background dropped by the first
component, saved and loaded so that runs share colours."""
from __future__ import annotations

import numpy as np
import pytest

from dino_core.errors import ModelError
from dino_runtime.pca import MAX_FIT_TOKENS, PcaBasis, PcaColors, fit_basis

GRID = (6, 8)


def _scenes(frames: int, seed: int = 0, dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Tokens (F, 48, D) of F scenes on a 6x8 grid: background everywhere, an object of three
    parts (labels 1, 2, 3; 2x2 patches each) at a different place in each scene; and the
    labels (F, 48). Parts are directions in token space shared by all scenes, as DINOv2's
    part features are; four clusters fill the three colour components.
    """
    rng = np.random.default_rng(seed)
    centres = [rng.normal(size=dim) * 3 for _ in range(4)]
    tokens = np.empty((frames, *GRID, dim), np.float32)
    labels = np.zeros((frames, *GRID), int)
    for f in range(frames):
        r, c = 1 + f % 3, 1 + f % 2
        for part in (1, 2, 3):
            labels[f, r:r + 2, c + 2 * (part - 1):c + 2 * part] = part
    for f in range(frames):
        for label, centre in enumerate(centres):
            where = labels[f] == label
            tokens[f][where] = centre + rng.normal(size=(where.sum(), dim)) * 0.3
    return tokens.reshape(frames, -1, dim), labels.reshape(frames, -1)


def test_the_same_part_gets_the_same_colour_across_images():
    tokens, labels = _scenes(4)
    colors = PcaColors()(tokens, GRID).reshape(4, -1, 3).astype(int)
    parts = (0, 1, 2, 3)
    mean = {label: colors[labels == label].mean(0) for label in parts}
    for label in parts:
        spread = np.abs(colors[labels == label] - mean[label]).max()
        assert spread < 40, f"part {label} varies by {spread} across images"
    assert min(np.abs(mean[a] - mean[b]).max() for a in parts for b in parts if a < b) > 60


def test_foreground_drops_the_background_by_the_first_component():
    tokens, labels = _scenes(4)
    pca = PcaColors(foreground=True)
    colors = pca(tokens, GRID).reshape(4, -1, 3)
    assert pca.fitted.has_foreground
    assert (colors[labels == 0] == 0).all()                 # background black
    assert (colors[labels > 0].max(-1) > 0).mean() > 0.95    # the object coloured
    # the colours come from a second PCA of the foreground: the three parts differ
    a, b, c = (colors[labels == k].astype(int).mean(0) for k in (1, 2, 3))
    assert min(np.abs(a - b).max(), np.abs(a - c).max(), np.abs(b - c).max()) > 100


def test_first_component_is_oriented_so_the_border_is_background():
    tokens, labels = _scenes(3, seed=5)
    for flip in (1.0, -1.0):   # whichever sign the SVD returns, the border ends up below
        basis = fit_basis(tokens * flip, GRID, foreground=True)
        keep = basis.foreground(tokens * flip)
        assert not keep[labels == 0].any() and keep[labels > 0].all()


def test_basis_is_kept_once_fitted_and_can_be_given():
    tokens, _ = _scenes(2)
    fitted = fit_basis(tokens, GRID)
    pca = PcaColors(basis=fitted)
    other, _ = _scenes(2, seed=9)
    pca(other, GRID)
    assert pca.fitted is fitted


def test_save_and_load_round_trip(tmp_path):
    tokens, _ = _scenes(2)
    basis = fit_basis(tokens, GRID, foreground=True, threshold=0.5)
    basis.save(tmp_path / "b.npz")
    loaded = PcaBasis.load(tmp_path / "b.npz", dim=32)
    for name in ("mean", "components", "low", "high", "split_mean", "split_axis"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(basis, name))
    assert loaded.threshold == 0.5
    np.testing.assert_array_equal(PcaColors(loaded)(tokens, GRID), PcaColors(basis)(tokens, GRID))


@pytest.mark.parametrize("content,expect", [
    (b"not an npz", "not a PCA basis written by dino-run --pca-save"),
    (None, "for 32-wide tokens; this model's are 64 wide"),
])
def test_bad_basis_files_are_one_line(tmp_path, content, expect):
    path = tmp_path / "b.npz"
    if content is None:
        fit_basis(_scenes(1)[0], GRID).save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError) as e:
        PcaBasis.load(path, dim=64)
    assert expect in str(e.value) and "\n" not in str(e.value)


def test_non_finite_basis_is_refused(tmp_path):
    np.savez(tmp_path / "b.npz", mean=np.full(4, np.nan), components=np.zeros((4, 3)),
             low=np.zeros(3), high=np.ones(3), threshold=np.float32(0))
    with pytest.raises(ModelError, match="non-finite"):
        PcaBasis.load(tmp_path / "b.npz")


def test_large_fits_use_a_subsample_of_positions(monkeypatch):
    from dino_runtime import pca
    monkeypatch.setattr(pca, "MAX_FIT_TOKENS", 60)
    tokens, labels = _scenes(4)
    basis = pca.fit_basis(tokens, GRID, foreground=True)
    keep = basis.foreground(tokens)
    assert (keep == (labels > 0)).mean() > 0.95
    assert MAX_FIT_TOKENS >= 100_000
