"""The one table of architecture names: DINO's short names (``vit_s8``) and official ones
(``vit_small``), DINOv2's (``dinov2_s14``, ``dinov2_s14_reg`` with 4 registers) and DINOv3's
ViTs (``dinov3_s16``, ``dinov3_s16plus``, ... ``dinov3_7b16``, all with 4 storage tokens) and
ConvNeXts (``dinov3_convnext_tiny`` ... ``_large``, output stride 32)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

from torch import nn

from . import dinov3
from .dinov2 import NUM_REGISTERS, SIZES, build_dinov2
from .dinov3_convnext import OUTPUT_STRIDE, build_convnext
from .dinov3_convnext import SIZES as CONVNEXT_SIZES
from .vision_transformer import vit_base, vit_large, vit_small, vit_tiny


@dataclass(frozen=True)
class Family:
    """One ViT width of one model family (or one DINOv3 ConvNeXt size: ``num_heads`` 0, no
    attention); ``builder(patch_size, **kwargs)`` has the official signature. ``kind`` is
    "dino", "dinov2" or "dinov3" (the ``family`` of exported metadata); ``ffn_layer`` tells
    apart DINOv3 ViT widths that share an embedding width (S and S+, L and L+)."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    builder: Callable[..., nn.Module]
    kind: str = "dino"
    ffn_layer: str = "mlp"


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("vit_tiny", 192, 12, 3, vit_tiny),
    Family("vit_small", 384, 12, 6, vit_small),
    Family("vit_base", 768, 12, 12, vit_base),
    Family("vit_large", 1024, 24, 16, vit_large),
)}

DINOV2_FAMILIES: dict[str, Family] = {
    name: Family(name, dim, depth, heads, partial(build_dinov2, name), "dinov2")
    for name, (dim, depth, heads, _) in SIZES.items()}

DINOV3_FAMILIES: dict[str, Family] = {
    name: Family(name, size.embed_dim, size.depth, size.num_heads,
                 partial(dinov3.build_dinov3, name), "dinov3", size.ffn_layer)
    for name, size in dinov3.SIZES.items()}

# The DINOv3 ConvNeXts: the arch name is the family name (one output stride, no registers).
CONVNEXT_FAMILIES: dict[str, Family] = {
    f"dinov3_convnext_{size}": Family(f"dinov3_convnext_{size}", dims[-1], sum(depths), 0,
                                      partial(build_convnext, size), "dinov3")
    for size, (depths, dims) in CONVNEXT_SIZES.items()}

# Short name -> (family, patch size). ViT-S/8 and ViT-B/8 are the official DINO releases.
SHORT_NAMES: dict[str, tuple[str, int]] = {
    "vit_t16": ("vit_tiny", 16),
    "vit_t8": ("vit_tiny", 8),
    "vit_s16": ("vit_small", 16),
    "vit_s8": ("vit_small", 8),
    "vit_b16": ("vit_base", 16),
    "vit_b8": ("vit_base", 8),
    "vit_l16": ("vit_large", 16),
}

# DINOv2 name -> (family, registers): the eight official hub backbones, all patch 14.
DINOV2_NAMES: dict[str, tuple[str, int]] = {
    f"dinov2_{name[4]}14{suffix}": (name, registers)
    for name in SIZES for suffix, registers in (("", 0), ("_reg", NUM_REGISTERS))}

# DINOv3 name -> family: the official hub entries (dinov3_vits16 ... dinov3_vit7b16), patch 16.
DINOV3_NAMES: dict[str, str] = {
    "dinov3_s16": "vit_small", "dinov3_s16plus": "vit_small_plus", "dinov3_b16": "vit_base",
    "dinov3_l16": "vit_large", "dinov3_l16plus": "vit_large_plus",
    "dinov3_h16plus": "vit_huge_plus", "dinov3_7b16": "vit_7b",
}
DINOV3_PATCH = 16


@dataclass(frozen=True)
class Arch:
    """A resolved architecture: family, patch size and (DINOv2) register count."""

    family: Family
    patch_size: int
    num_registers: int = 0

    @property
    def short_name(self) -> str:
        if self.family.name in CONVNEXT_FAMILIES:
            return self.family.name
        if self.family.kind == "dinov3":
            return next(n for n, f in DINOV3_NAMES.items() if f == self.family.name)
        if self.family.kind == "dinov2":
            return (f"dinov2_{self.family.name[4]}{self.patch_size}"
                    f"{'_reg' if self.num_registers else ''}")
        return f"vit_{self.family.name[4]}{self.patch_size}"

    def build(self, **kwargs) -> nn.Module:
        if self.family.name in CONVNEXT_FAMILIES:  # no registers or storage tokens to pass
            return self.family.builder(patch_size=self.patch_size, **kwargs)
        if self.family.kind == "dinov2":
            kwargs["num_register_tokens"] = self.num_registers
        if self.family.kind == "dinov3":
            kwargs["n_storage_tokens"] = self.num_registers
        return self.family.builder(patch_size=self.patch_size, **kwargs)


def valid_names() -> list[str]:
    return (sorted(SHORT_NAMES) + sorted(FAMILIES) + sorted(DINOV2_NAMES) + sorted(DINOV3_NAMES)
            + list(CONVNEXT_FAMILIES))


def resolve_arch(name: str, patch_size: int | None = None) -> Arch:
    """``vit_s8``, ``vit_small`` (+ ``patch_size``, default 16), ``dinov2_s14_reg`` or
    ``dinov3_s16`` -> :class:`Arch`.

    An unknown name raises ``ValueError`` listing the valid ones; a short name with a
    contradicting ``patch_size`` is an error rather than a silent choice.
    """
    if name in DINOV3_NAMES:
        if patch_size is not None and patch_size != DINOV3_PATCH:
            raise ValueError(f"--arch {name} has patch size {DINOV3_PATCH}, but patch size "
                             f"{patch_size} was given")
        return Arch(DINOV3_FAMILIES[DINOV3_NAMES[name]], DINOV3_PATCH,
                    dinov3.NUM_STORAGE_TOKENS)
    if name in SHORT_NAMES or name in DINOV2_NAMES:
        family, patch = SHORT_NAMES[name] if name in SHORT_NAMES else (DINOV2_NAMES[name][0], 14)
        if patch_size is not None and patch_size != patch:
            raise ValueError(f"--arch {name} has patch size {patch}, but patch size "
                             f"{patch_size} was given; use {family} --patch-size {patch_size}")
        if name in DINOV2_NAMES:
            return Arch(DINOV2_FAMILIES[family], patch, DINOV2_NAMES[name][1])
        return Arch(FAMILIES[family], patch)
    if name in FAMILIES:
        return Arch(FAMILIES[name], patch_size or 16)
    if name in CONVNEXT_FAMILIES:
        if patch_size not in (None, OUTPUT_STRIDE):
            raise ValueError(f"--arch {name} has output stride {OUTPUT_STRIDE}; no patch size "
                             f"{patch_size}")
        return Arch(CONVNEXT_FAMILIES[name], OUTPUT_STRIDE)
    raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(valid_names())}")


def family_for_width(embed_dim: int, kind: str = "dino", ffn_layer: str | None = None
                     ) -> Family | None:
    """The family with this embedding width (and, for DINOv3, this feed-forward: "mlp" or a
    SwiGLU), used to infer heads from a bare state dict."""
    table = {"dinov2": DINOV2_FAMILIES, "dinov3": DINOV3_FAMILIES}.get(kind, FAMILIES)
    fits = [f for f in table.values() if f.embed_dim == embed_dim]
    if kind == "dinov3" and ffn_layer is not None:
        swiglu = ffn_layer != "mlp"
        fits = [f for f in fits if (f.ffn_layer != "mlp") == swiglu]
    return fits[0] if fits else None
