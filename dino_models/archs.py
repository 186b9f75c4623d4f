"""The one table of architecture names: short names (``vit_s8``) and official ones (``vit_small``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .vision_transformer import VisionTransformer, vit_base, vit_large, vit_small, vit_tiny


@dataclass(frozen=True)
class Family:
    """One ViT width; ``builder(patch_size, **kwargs)`` has the official signature."""

    name: str
    embed_dim: int
    depth: int
    num_heads: int
    builder: Callable[..., VisionTransformer]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("vit_tiny", 192, 12, 3, vit_tiny),
    Family("vit_small", 384, 12, 6, vit_small),
    Family("vit_base", 768, 12, 12, vit_base),
    Family("vit_large", 1024, 24, 16, vit_large),
)}

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


@dataclass(frozen=True)
class Arch:
    """A resolved architecture: family plus patch size."""

    family: Family
    patch_size: int

    @property
    def short_name(self) -> str:
        return f"vit_{self.family.name[4]}{self.patch_size}"

    def build(self, **kwargs) -> VisionTransformer:
        return self.family.builder(patch_size=self.patch_size, **kwargs)


def valid_names() -> list[str]:
    return sorted(SHORT_NAMES) + sorted(FAMILIES)


def resolve_arch(name: str, patch_size: int | None = None) -> Arch:
    """``vit_s8`` or ``vit_small`` (+ ``patch_size``, default 16) -> :class:`Arch`.

    An unknown name raises ``ValueError`` listing the valid ones; a short name with a
    contradicting ``patch_size`` is an error rather than a silent choice.
    """
    if name in SHORT_NAMES:
        family, patch = SHORT_NAMES[name]
        if patch_size is not None and patch_size != patch:
            raise ValueError(f"--arch {name} has patch size {patch}, but patch size "
                             f"{patch_size} was given; use {family} --patch-size {patch_size}")
        return Arch(FAMILIES[family], patch)
    if name in FAMILIES:
        return Arch(FAMILIES[name], patch_size or 16)
    raise ValueError(f"unknown architecture {name!r}; valid: {', '.join(valid_names())}")


def family_for_width(embed_dim: int) -> Family | None:
    """The family with this embedding width, used to infer heads from a bare state dict."""
    return next((f for f in FAMILIES.values() if f.embed_dim == embed_dim), None)
