"""Patch tokens -> colours through one PCA basis fitted once, the DINOv2 parts view.

The DINOv2 paper (Oquab et al. 2023, Fig. 1 and Sec. 7) shows that the first principal
components of patch features, computed across several images, colour the same parts alike
(wings, wheels, heads) whatever the instance. This module does that for a stream: a
:class:`PcaBasis` is fitted once, on the first frames or on a folder of images, kept for the
whole run (refitting per frame would flip signs and recolour the same part), and can be saved
and loaded so that separate runs share colours.

With ``foreground`` the background is dropped as the paper does: a first PCA over all patches
separates foreground from background by thresholding its first component, and a second PCA
over the foreground patches alone gives the three colours. The first component's sign is
arbitrary; it is oriented so that the border patches of the fit images (background, in
photographs of objects) lie below the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from dino_core.errors import ModelError

MAX_FIT_TOKENS = 200_000   # tokens kept for a fit (a subsample beyond): 300 MB at D=384 float32
PERCENTILES = (1, 99)      # colour range: robust to a few extreme patches


@dataclass(frozen=True)
class PcaBasis:
    """A fitted colour basis for tokens of width D.

    ``mean`` (D,) and ``components`` (D, 3) project tokens to colours, scaled by ``low``/
    ``high`` (3,) to [0, 1]. With a foreground split, ``split_mean`` (D,) and ``split_axis``
    (D,) give the first component of all tokens, in units of its standard deviation; tokens at
    or below ``threshold`` are background.
    """

    mean: np.ndarray
    components: np.ndarray
    low: np.ndarray
    high: np.ndarray
    split_mean: np.ndarray | None = None
    split_axis: np.ndarray | None = None
    threshold: float = 0.0

    @property
    def has_foreground(self) -> bool:
        return self.split_axis is not None

    def foreground(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (..., D) -> bool (...): True where the token is foreground (all True without
        a split)."""
        if self.split_axis is None:
            return np.ones(tokens.shape[:-1], bool)
        return (tokens - self.split_mean) @ self.split_axis > self.threshold

    def colors(self, tokens: np.ndarray) -> np.ndarray:
        """tokens (..., D) -> RGB in [0, 1], shape (..., 3)."""
        proj = (tokens - self.mean) @ self.components
        return np.clip((proj - self.low) / np.maximum(self.high - self.low, 1e-6), 0, 1)

    def save(self, file: str | Path | BinaryIO) -> None:
        """Write the basis as ``.npz`` to a path or an open binary file."""
        arrays = {"mean": self.mean, "components": self.components, "low": self.low,
                  "high": self.high, "threshold": np.float32(self.threshold)}
        if self.split_axis is not None:
            arrays.update(split_mean=self.split_mean, split_axis=self.split_axis)
        if isinstance(file, (str, Path)):
            with open(file, "wb") as f:   # np.savez would append .npz to a name without it
                np.savez(f, **arrays)
        else:
            np.savez(file, **arrays)

    @classmethod
    def load(cls, path: str | Path, dim: int | None = None) -> PcaBasis:
        """A basis written by :meth:`save`; :class:`ModelError` (one line) for anything else,
        or for a basis of another token width than ``dim``."""
        try:
            with np.load(path, allow_pickle=False) as data:
                if not hasattr(data, "files"):
                    raise ValueError("a single array, not an .npz archive")
                values = {k: data[k].astype(np.float32) for k in data.files}
        except FileNotFoundError:
            raise ModelError(f"{path}: no such PCA basis file") from None
        except (OSError, ValueError, KeyError, EOFError):
            raise ModelError(f"{path}: not a PCA basis written by dino-run --pca-save (an .npz "
                             "archive of its arrays)") from None
        basis = cls._from_arrays(values, str(path))
        if dim is not None and basis.mean.shape[0] != dim:
            raise ModelError(f"{path}: a PCA basis for {basis.mean.shape[0]}-wide tokens; this "
                             f"model's are {dim} wide")
        return basis

    @classmethod
    def _from_arrays(cls, values: dict[str, np.ndarray], where: str) -> PcaBasis:
        needed = ("mean", "components", "low", "high", "threshold")
        if not all(k in values for k in needed):
            raise ModelError(f"{where}: not a PCA basis (needs {', '.join(needed)})")
        d = values["mean"].shape[0] if values["mean"].ndim == 1 else -1
        shapes = {"mean": (d,), "components": (d, 3), "low": (3,), "high": (3,),
                  "threshold": (), "split_mean": (d,), "split_axis": (d,)}
        for k, v in values.items():
            if k not in shapes or v.shape != shapes[k] or not np.isfinite(v).all():
                raise ModelError(f"{where}: PCA basis entry {k!r} has shape {v.shape} or "
                                 "non-finite values")
        return cls(values["mean"], values["components"], values["low"], values["high"],
                   values.get("split_mean"), values.get("split_axis"),
                   float(values["threshold"]))


def fit_basis(patch: np.ndarray, grid: tuple[int, int], foreground: bool = False,
              threshold: float = 0.0, seed: int = 0) -> PcaBasis:
    """Fit on patch tokens (F, h*w, D) of F frames with patch grid ``grid`` = (h, w).

    Without ``foreground``: one PCA of all tokens. With it: the first PCA's first component
    (oriented so that border patches score low, scaled to unit variance) splits foreground
    (> ``threshold``) from background, and a second PCA of the foreground tokens gives the
    colours. Raises ``ValueError`` when no token is foreground.
    """
    frames, n, dim = patch.shape
    positions = _subsample_positions(frames, n, seed)
    tokens = patch[:, positions].astype(np.float32)
    if not foreground:
        return _colour_basis(tokens.reshape(-1, dim))
    flat = tokens.reshape(-1, dim)
    split_mean = flat.mean(axis=0, dtype=np.float64).astype(np.float32)
    axis = _principal_axes(flat - split_mean, 1)[:, 0]
    scores = (flat - split_mean) @ axis
    axis = axis / max(float(scores.std()), 1e-12)
    border = _border(grid)[positions]
    if ((tokens[:, border] - split_mean) @ axis).mean() > 0:
        axis = -axis          # background (the border) on the low side
    keep = (flat - split_mean) @ axis > threshold
    if not keep.any():
        raise ValueError(f"no patch has a first component above {threshold}: lower the "
                         "threshold")
    colours = _colour_basis(flat[keep])
    return PcaBasis(colours.mean, colours.components, colours.low, colours.high,
                    split_mean, axis.astype(np.float32), float(threshold))


def _colour_basis(tokens: np.ndarray) -> PcaBasis:
    mean = tokens.mean(axis=0, dtype=np.float64).astype(np.float32)
    components = _principal_axes(tokens - mean, 3)
    proj = (tokens - mean) @ components
    low, high = (np.percentile(proj, q, axis=0) for q in PERCENTILES)
    return PcaBasis(mean, components, low.astype(np.float32), high.astype(np.float32))


def _principal_axes(centred: np.ndarray, k: int) -> np.ndarray:
    """(T, D) centred tokens -> (D, k) leading principal axes (columns; zero-padded when
    there are fewer than k directions)."""
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((centred.shape[1], k), np.float32)
    axes[:, : min(k, len(vt))] = vt[:k].T
    return axes


def _subsample_positions(frames: int, n: int, seed: int) -> np.ndarray:
    """Token positions to fit on, the same in every frame: all of them, or a random subset
    when F * N exceeds MAX_FIT_TOKENS."""
    if frames * n <= MAX_FIT_TOKENS:
        return np.arange(n)
    keep = max(1, MAX_FIT_TOKENS // frames)
    return np.sort(np.random.default_rng(seed).choice(n, keep, replace=False))


def _border(grid: tuple[int, int]) -> np.ndarray:
    """bool (h*w,): the patches on the edge of an (h, w) grid."""
    h, w = grid
    edge = np.zeros((h, w), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    return edge.reshape(-1)


@dataclass(frozen=True)
class PcaOptions:
    """How ``--pca`` colours: a given basis (else fitted on the first batch), and whether to
    drop the background below ``threshold`` on the first component."""

    basis: PcaBasis | None = None
    foreground: bool = False
    threshold: float = 0.0

    def colors(self) -> PcaColors:
        return PcaColors(self.basis, self.foreground, self.threshold)


class PcaColors:
    """Patch tokens (B, N, D) -> colours (B, h, w, 3) uint8, BGR, first component in red.

    The basis is ``basis`` when given (``--pca-fit``), else fitted on the first batch seen and
    kept. With ``foreground`` the background patches are black.
    """

    def __init__(self, basis: PcaBasis | None = None, foreground: bool = False,
                 threshold: float = 0.0) -> None:
        self.fitted = basis
        self.foreground = foreground or (basis is not None and basis.has_foreground)
        self.threshold = threshold

    @property
    def basis(self) -> np.ndarray | None:
        """The (D, 3) colour components, once fitted."""
        return None if self.fitted is None else self.fitted.components

    def fit(self, patch: np.ndarray, grid: tuple[int, int]) -> PcaBasis:
        """Fit on patch (F, N, D) and keep the basis; returns it."""
        self.fitted = fit_basis(patch, grid, self.foreground, self.threshold)
        return self.fitted

    def __call__(self, patch: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        if self.fitted is None:
            self.fit(patch, grid)
        tokens = patch.astype(np.float32)
        rgb = self.fitted.colors(tokens) * self.fitted.foreground(tokens)[..., None]
        out = (rgb * 255).astype(np.uint8).reshape(patch.shape[0], *grid, 3)
        return out[..., ::-1]
