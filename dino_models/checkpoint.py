"""One entry point for every checkpoint a DINO, DINOv2 or DINOv3 user has: :func:`load_backbone`.

Accepted, with the architecture (family, size, patch, registers) inferred from the weights:
  * official pretrained backbones (plain state dict, e.g. ``dino_deitsmall8_pretrain.pth``,
    ``dinov2_vits14_pretrain.pth``, ``dinov2_vitg14_reg4_pretrain.pth``,
    ``dinov3_vits16_pretrain_lvd1689m-08c60483.pth``, ``dinov3_vitl16_pretrain_sat493m-*.pth``);
  * official DINO training checkpoints (``student``/``teacher``/``optimizer``/``epoch``/
    ``args``/``dino_loss``; keys prefixed ``module.`` and ``backbone.``); the teacher by default;
    DINOv3's ``teacher_checkpoint.pth`` (``{"teacher": backbone.*, dino_head.*, ibot_head.*}``);
  * this toolkit's training checkpoints (the official format plus a ``dino_edge`` record);
  * ``.safetensors`` files holding a backbone state dict;
  * Hugging Face ``transformers`` DINOv2 and DINOv3 ViT models: a ``save_pretrained`` folder, or
    its ``model.safetensors`` with ``config.json`` beside it; timm's DINOv2 and DINOv3 weights
    (:mod:`dino_models.convert` and :mod:`dino_models.convert_dinov3_vit` map them to the
    official keys);
  * the official hub names (:data:`HUB`): ``dino_vits16`` ... and ``dinov2_vits14``,
    ``dinov2_vits14_reg`` ...; downloads are checked against the SHA-256 pinned there. The
    DINOv3 names (``dinov3_vits16`` ..., ``dinov3_convnext_tiny`` ...) resolve to the torch hub
    cache only: Meta gives those files out behind the DINOv3 License form, so there is nothing
    to download from here, and a missing one is a one-line error saying where to put it;
  * DINOv3 ConvNeXts in the official, transformers and timm layouts
    (:mod:`dino_models.dinov3_convnext_checkpoint`).
Loading is strict: a missing or unexpected backbone key is an error naming it.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_core import memory
from dino_core.errors import CheckpointError
from dino_core.metadata import INT_RANGES, shown

from . import convert_dinov3_vit as v3convert
from . import dinov3_convnext_checkpoint as convnext_checkpoint
from .archs import DINOV2_FAMILIES, DINOV3_FAMILIES, DINOV3_NAMES, FAMILIES, Arch, family_for_width
from .convert import (
    HFConfig,
    from_hf,
    from_timm,
    hf_config_path,
    is_hf_layout,
    is_timm_dinov2_layout,
    read_config_json,
)
from .dinov2 import DinoVisionTransformer
from .dinov3 import NORM_EPS, Dinov3VisionTransformer
from .dinov3_convnext import ConvNeXt
from .safe_load import load_pickle_checkpoint
from .vision_transformer import VisionTransformer

_BASE_URL = "https://dl.fbaipublicfiles.com/dino"
_DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"
_DINOV3_BASE_URL = "https://dl.fbaipublicfiles.com/dinov3"
# Where DINOv3 weights are given out (after accepting the DINOv3 License), and the licence.
DINOV3_DOWNLOADS = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"
DINOV3_LICENSE = "https://ai.meta.com/resources/models-and-libraries/dinov3-license/"


@dataclass(frozen=True)
class HubFile:
    """One official release file: ``folder/stem.pth`` under its family's base URL."""

    folder: str
    stem: str
    sha256: str | None = None   # pinned only where a public source gives it (see HUB)

    @property
    def family(self) -> str:
        return next((f for f in ("dinov2", "dinov3") if self.stem.startswith(f)), "dino")


# Official release files (facebookresearch/dino and facebookresearch/dinov2 hubconf.py and
# README). Meta publishes no checksums. The SHA-256 values pinned here are those that public
# projects which download the official files pin in their own code (found by code search,
# 2026): dinov2_vits14 and dinov2_vitb14 in several independent projects (they agree),
# dinov2_vitl14, dinov2_vitg14 and dinov2_vits14_reg in one or two each. For the DINO files
# and the other register files no SHA-256 was found (only 6-digit MD5 prefixes for DINO), so
# they are not checked rather than checked against an invented value.
HUB: dict[str, HubFile] = {
    "dino_vits16": HubFile("dino_deitsmall16_pretrain", "dino_deitsmall16_pretrain"),
    "dino_vits8": HubFile("dino_deitsmall8_pretrain", "dino_deitsmall8_pretrain"),
    "dino_vitb16": HubFile("dino_vitbase16_pretrain", "dino_vitbase16_pretrain"),
    "dino_vitb8": HubFile("dino_vitbase8_pretrain", "dino_vitbase8_pretrain"),
    "dinov2_vits14": HubFile(
        "dinov2_vits14", "dinov2_vits14_pretrain",
        "b938bf1bc15cd2ec0feacfe3a1bb553fe8ea9ca46a7e1d8d00217f29aef60cd9"),
    "dinov2_vitb14": HubFile(
        "dinov2_vitb14", "dinov2_vitb14_pretrain",
        "0b8b82f85de91b424aded121c7e1dcc2b7bc6d0adeea651bf73a13307fad8c73"),
    "dinov2_vitl14": HubFile(
        "dinov2_vitl14", "dinov2_vitl14_pretrain",
        "d5383ea8f4877b2472eb973e0fd72d557c7da5d3611bd527ceeb1d7162cbf428"),
    "dinov2_vitg14": HubFile(
        "dinov2_vitg14", "dinov2_vitg14_pretrain",
        "baf8467e50af277596bbbafa06887c177ee899ab46033649c383577d7e9309d3"),
    "dinov2_vits14_reg": HubFile(
        "dinov2_vits14", "dinov2_vits14_reg4_pretrain",
        "f433177089a681826f849f194ece3bb48f4d63fb38d32fc837e3dc7a4e5641fb"),
    "dinov2_vitb14_reg": HubFile("dinov2_vitb14", "dinov2_vitb14_reg4_pretrain"),
    "dinov2_vitl14_reg": HubFile("dinov2_vitl14", "dinov2_vitl14_reg4_pretrain"),
    "dinov2_vitg14_reg": HubFile("dinov2_vitg14", "dinov2_vitg14_reg4_pretrain"),
    # DINOv3 ConvNeXts (dinov3/hub/backbones.py): the file names carry the hashes Meta gives
    # them; they are never downloaded (see _fetch_hub_file) and no SHA-256 is published.
    **{f"dinov3_convnext_{size}": HubFile(f"dinov3_convnext_{size}",
                                          f"dinov3_convnext_{size}_pretrain_lvd1689m-{tag}")
       for size, tag in (("tiny", "21b726bb"), ("small", "296db49d"), ("base", "801f2ba9"),
                         ("large", "61fa432d"))},
}
# DINOv3 release files (facebookresearch/dinov3 hub/backbones.py: folder dinov3_<arch>, file
# dinov3_<arch>_pretrain_<dataset>-<hash>.pth, with each entry's hash). The hash follows torch
# hub's naming (a SHA-256 prefix), but the official loader does not check it (check_hash=False)
# and no full SHA-256 is published, so none is pinned.
_DINOV3_RELEASES = {
    "dinov3_vits16": ("vits16", "lvd1689m", "08c60483"),
    "dinov3_vits16plus": ("vits16plus", "lvd1689m", "4057cbaa"),
    "dinov3_vitb16": ("vitb16", "lvd1689m", "73cec8be"),
    "dinov3_vitl16": ("vitl16", "lvd1689m", "8aa4cbdd"),
    "dinov3_vitl16plus": ("vitl16plus", "lvd1689m", "46503df0"),
    "dinov3_vith16plus": ("vith16plus", "lvd1689m", "7c1da9a5"),
    "dinov3_vit7b16": ("vit7b16", "lvd1689m", "a955f4ea"),
    "dinov3_vitl16_sat493m": ("vitl16", "sat493m", "eadcf0ff"),
    "dinov3_vit7b16_sat493m": ("vit7b16", "sat493m", "a6675841"),
}
HUB.update({name: HubFile(f"dinov3_{arch}", f"dinov3_{arch}_pretrain_{data}-{tag}")
            for name, (arch, data, tag) in _DINOV3_RELEASES.items()})
TRAINING_KEYS = ("student", "teacher")
TOOLKIT_KEY = "dino_edge"   # this toolkit's record in a training checkpoint


@dataclass(frozen=True)
class BackboneInfo:
    """What :func:`load_backbone` learned about a checkpoint."""

    source: str
    path: Path
    format: str                # official-pretrained | official-training | toolkit-training |
    #                            safetensors | transformers | timm
    checkpoint_key: str | None  # "teacher"/"student" for training checkpoints
    arch: str                  # family name, e.g. "vit_small"
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int              # side of the stored position-embedding grid, in pixels
    sha256: str
    epoch: int | None = None
    family: str = "dino"       # dino | dinov2 | dinov3 (a ConvNeXt: num_heads 0, patch_size
    num_registers: int = 0     # its output stride 32, img_size 224); DINOv3 ViTs: storage tokens

    @property
    def short_name(self) -> str:
        if self.family == "dinov3" and self.arch in DINOV3_FAMILIES:
            return next(n for n, f in DINOV3_NAMES.items() if f == self.arch)
        if self.family == "dinov2" and self.arch in DINOV2_FAMILIES:
            return f"dinov2_{self.arch[4]}{self.patch_size}{'_reg' if self.num_registers else ''}"
        return f"vit_{self.arch[4]}{self.patch_size}" if self.arch in FAMILIES else self.arch


def hub_url(name: str) -> str:
    entry = HUB[name]
    base = {"dinov2": _DINOV2_BASE_URL, "dinov3": _DINOV3_BASE_URL}.get(entry.family, _BASE_URL)
    return f"{base}/{entry.folder}/{entry.stem}.pth"


def hub_cache_path(name: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the release file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{HUB[name].stem}.pth"


def check_hub_sha256(name: str, path: Path, sha256: str) -> None:
    """:class:`CheckpointError` when the file behind hub name ``name`` is not the official one
    (its SHA-256 differs from the pinned value); files without a pinned value pass."""
    expected = HUB[name].sha256
    if expected is not None and sha256 != expected:
        raise CheckpointError(
            f"{name}: {path} has SHA-256 {sha256}, the official {HUB[name].stem}.pth has "
            f"{expected}; delete the file and download it again from {hub_url(name)}")


# The weights file of a transformers save_pretrained folder (safetensors first, as it writes).
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def resolve_source(source: str | os.PathLike, download: bool = True) -> Path:
    """A path (a transformers folder resolved to its weights file), or a hub name resolved to
    the cached (or freshly downloaded) release file."""
    text = str(source)
    if text in HUB and not Path(text).exists():
        return _fetch_hub_file(text, download)
    path = Path(text).expanduser()
    if not path.exists():
        hint = f"; hub names: {', '.join(HUB)}" if "/" not in text else ""
        raise CheckpointError(f"{text}: no such file{hint}")
    if path.is_dir():
        weights = [path / name for name in HF_WEIGHTS if (path / name).is_file()]
        if not weights or not (path / "config.json").is_file():
            raise CheckpointError(f"{text}: is a directory, expected a checkpoint file or a "
                                  "transformers folder (config.json and model.safetensors)")
        return weights[0]
    return path


def _fetch_hub_file(name: str, download: bool) -> Path:
    cached = hub_cache_path(name)
    if cached.exists():
        return cached
    if HUB[name].family == "dinov3":  # gated: no URL to fetch without the licence form's link
        raise CheckpointError(
            f"{name}: not in the cache; get {cached.name} from Meta ({DINOV3_DOWNLOADS}, after "
            f"accepting the DINOv3 License) and put it at {cached}, or pass its path; the "
            f"weights are under the DINOv3 License ({DINOV3_LICENSE})")
    url = hub_url(name)
    if not download:
        raise CheckpointError(f"{name}: not in the cache; download {url} to {cached}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".partial")
    try:
        torch.hub.download_url_to_file(url, str(partial), progress=True)
    except (urllib.error.URLError, OSError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"{name}: could not download {url} ({getattr(e, 'reason', e)}); when offline, "
            f"place that file at {cached}") from None
    try:
        check_hub_sha256(name, cached, file_sha256(partial))
    except CheckpointError:
        partial.unlink(missing_ok=True)  # a file that is not the official one is not kept
        raise
    partial.replace(cached)  # atomic: a half-downloaded file never sits at the cache path
    return cached


def read_checkpoint(path: Path) -> Any:
    """The raw contents of a ``.pth``/``.pt`` (safe unpickling) or ``.safetensors`` file."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path}: not a readable .safetensors file ({e})") from None
    return load_pickle_checkpoint(path)


def extract_backbone(obj: Any, checkpoint_key: str = "teacher", where: str = "checkpoint"
                     ) -> tuple[dict[str, torch.Tensor], str, str | None]:
    """Backbone state dict, format name and key used, from whatever a checkpoint holds."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: holds a {type(obj).__name__}, not a state dict or "
                              "a training checkpoint")
    if any(k in obj for k in TRAINING_KEYS):
        if checkpoint_key not in obj or not isinstance(obj[checkpoint_key], Mapping):
            have = ", ".join(str(k)[:40] for k in obj if isinstance(obj[k], Mapping))
            raise CheckpointError(f"{where}: no checkpoint key {checkpoint_key!r}; "
                                  f"available: {have}")
        fmt = "toolkit-training" if TOOLKIT_KEY in obj else "official-training"
        return _strip_training_prefixes(obj[checkpoint_key], where), fmt, checkpoint_key
    for wrapper in ("model", "state_dict"):  # common wrappers around a bare backbone
        if wrapper in obj and isinstance(obj[wrapper], Mapping) and "cls_token" not in obj:
            obj = obj[wrapper]
    _check_keys(obj, where)
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(state) != len(obj):
        other = next(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise CheckpointError(f"{where}: entry {shown(other)} is not a tensor; not a state dict")
    return strip_prefix(state, "module."), "official-pretrained", None


def _check_keys(state: Mapping, where: str) -> None:
    bad = next((k for k in state if not isinstance(k, str)), None)
    if bad is not None:
        raise CheckpointError(f"{where}: key {shown(bad)} is not a string; not a state dict")


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``prefix + key`` -> ``key``; keys without the prefix are kept as they are."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


# The projection heads of a training checkpoint: DINO's (head.*), DINOv3's (dino_head.*, ibot_head.*).
TRAINING_HEADS = ("head.", "dino_head.", "ibot_head.")


def _strip_training_prefixes(state: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """``module.backbone.x`` -> ``x``; the projection heads are left out on purpose."""
    _check_keys(state, where)
    state = strip_prefix(state, "module.")
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    stray = [k for k in state if not k.startswith(("backbone.", *TRAINING_HEADS))]
    if stray:
        raise CheckpointError(f"{where}: unexpected key {shown(stray[0])} in a training checkpoint "
                              "(expected backbone.* and head.*)")
    if not backbone:
        raise CheckpointError(f"{where}: the training checkpoint has no backbone.* weights")
    other = next((k for k, v in backbone.items() if not isinstance(v, torch.Tensor)), None)
    if other is not None:
        raise CheckpointError(f"{where}: entry {shown('backbone.' + other)} is not a tensor")
    return backbone


@dataclass(frozen=True)
class InferredConfig:
    arch: str
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int
    mlp_ratio: float
    qkv_bias: bool
    family: str = "dino"          # dino | dinov2 | dinov3
    num_registers: int = 0
    ffn_layer: str = "mlp"        # mlp | swiglu (DINOv2's w12) | swiglu_split (DINOv3's w1, w2)
    ffn_hidden: int = 0
    layer_norm_eps: float = 1e-6
    # DINOv3 only: what the keys say the official constructor was given
    mask_k_bias: bool = False
    layerscale: bool = False
    untie_cls_and_patch_norms: bool = False
    untie_global_and_local_cls_norm: bool = False


def infer_config(state: Mapping[str, torch.Tensor], num_heads: Any = None,
                 where: str = "checkpoint") -> InferredConfig:
    """Architecture from weight shapes: family, patch size, width, depth, grid, registers and
    feed-forward; heads from the width (or ``num_heads`` when a record or config gives it).

    Every shape is checked before it is used, and the result against the ranges a model file
    may have (``dino_core.metadata.INT_RANGES``): the shapes are untrusted input.
    """
    if is_dinov3_state(state):
        return _infer_dinov3(state, num_heads, where)
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight")
    if not all(k in state for k in needed):
        kind = _guess_kind(state)
        raise CheckpointError(f"{where}: {kind}, not a DINO ViT backbone "
                              f"(no {', '.join(k for k in needed if k not in state)})")
    patch_weight = _shaped(state, "patch_embed.proj.weight", 4, "(dim, 3, patch, patch)", where)
    embed_dim, _, patch, patch_w = patch_weight
    if patch != patch_w:
        raise CheckpointError(f"{where}: non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))),
                    default=-1)
    if depth < 1:
        raise CheckpointError(f"{where}: no transformer blocks (blocks.0.*) in the state dict")
    tokens = _shaped(state, "pos_embed", 3, "(1, tokens, dim)", where)[1]
    family = "dinov2" if "mask_token" in state or "blocks.0.ls1.gamma" in state else "dino"
    table = family_for_width(embed_dim, family)
    if num_heads is None:
        num_heads = table.num_heads if table else max(1, embed_dim // 64)
    swiglu = "blocks.0.mlp.w12.weight" in state
    ffn_key = "blocks.0.mlp.w12.weight" if swiglu else "blocks.0.mlp.fc1.weight"
    if ffn_key not in state:
        raise CheckpointError(f"{where}: not a DINO ViT backbone (no {ffn_key})")
    # w12 packs the gate and the value: twice the hidden width
    hidden = _shaped(state, ffn_key, 2, "(hidden, dim)", where)[0] // (2 if swiglu else 1)
    registers = (_shaped(state, "register_tokens", 3, "(1, registers, dim)", where)[1]
                 if "register_tokens" in state else 0)
    grid = round(max(tokens - 1, 0) ** 0.5)
    _check_ranges(where, patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    if grid < 1 or hidden < 1:
        raise CheckpointError(f"{where}: pos_embed holds {tokens} tokens and the MLP {hidden} "
                              "hidden units; not a ViT")
    return InferredConfig(
        arch=table.name if table else f"vit_d{embed_dim}", patch_size=patch,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, img_size=grid * patch,
        mlp_ratio=hidden / embed_dim, qkv_bias="blocks.0.attn.qkv.bias" in state,
        family=family, num_registers=registers, ffn_layer="swiglu" if swiglu else "mlp",
        ffn_hidden=hidden)


def _check_ranges(where: str, **values: Any) -> None:
    """Each value in its ``INT_RANGES`` range, and the width a multiple of the heads."""
    for name, value in values.items():
        low, high = INT_RANGES[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise CheckpointError(f"{where}: {name} {shown(value)}: expected an integer in "
                                  f"{low}..{high}")
    if values["embed_dim"] % values["num_heads"]:
        raise CheckpointError(f"{where}: embed_dim {values['embed_dim']} is not a multiple of "
                              f"num_heads {values['num_heads']}")


def is_dinov3_state(state: Mapping[str, Any]) -> bool:
    """DINOv3's ViT layout: storage tokens or RoPE periods, no learned position table."""
    return ("storage_tokens" in state or "rope_embed.periods" in state) and "pos_embed" not in state


def _infer_dinov3(state: Mapping[str, torch.Tensor], num_heads: Any, where: str
                  ) -> InferredConfig:
    """:func:`infer_config` for DINOv3's layout: the head width from the RoPE periods
    (head_dim / 4 of them), every optional part from the presence of its keys."""
    needed = ("cls_token", "patch_embed.proj.weight", "rope_embed.periods")
    missing = [k for k in needed if k not in state]
    if missing:
        raise CheckpointError(f"{where}: a DINOv3 ViT state dict without {', '.join(missing)}")
    embed_dim, _, patch, patch_w = _shaped(state, "patch_embed.proj.weight", 4,
                                           "(dim, 3, patch, patch)", where)
    if patch != patch_w:
        raise CheckpointError(f"{where}: non-square patches {patch}x{patch_w} are not supported")
    depth = 1 + max((int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))),
                    default=-1)
    if depth < 1:
        raise CheckpointError(f"{where}: no transformer blocks (blocks.0.*) in the state dict")
    head_dim = 4 * _shaped(state, "rope_embed.periods", 1, "(head_dim / 4,)", where)[0]
    if num_heads is None:
        num_heads = embed_dim // head_dim if embed_dim % head_dim == 0 else head_dim
    elif not isinstance(num_heads, int) or num_heads < 1 or embed_dim != num_heads * head_dim:
        raise CheckpointError(f"{where}: {shown(num_heads)} heads of width {head_dim} (from "
                              f"rope_embed.periods) do not make {embed_dim}")
    swiglu = "blocks.0.mlp.w1.weight" in state
    ffn_key = "blocks.0.mlp.w1.weight" if swiglu else "blocks.0.mlp.fc1.weight"
    if ffn_key not in state:
        raise CheckpointError(f"{where}: not a DINOv3 ViT backbone (no {ffn_key})")
    hidden = _shaped(state, ffn_key, 2, "(hidden, dim)", where)[0]
    storage = (_shaped(state, "storage_tokens", 3, "(1, tokens, dim)", where)[1]
               if "storage_tokens" in state else 0)
    _check_ranges(where, patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
    ffn_layer = "swiglu_split" if swiglu else "mlp"
    table = v3_family(embed_dim, ffn_layer)
    return InferredConfig(
        arch=table.name if table else f"vit_d{embed_dim}", patch_size=patch,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, img_size=224,
        mlp_ratio=hidden / embed_dim, qkv_bias="blocks.0.attn.qkv.bias" in state,
        family="dinov3", num_registers=storage, ffn_layer=ffn_layer, ffn_hidden=hidden,
        layer_norm_eps=NORM_EPS["layernormbf16"],
        mask_k_bias="blocks.0.attn.qkv.bias_mask" in state,
        layerscale="blocks.0.ls1.gamma" in state,
        untie_cls_and_patch_norms="cls_norm.weight" in state,
        untie_global_and_local_cls_norm="local_cls_norm.weight" in state)


def v3_family(embed_dim: int, ffn_layer: str):
    """The DINOv3 table row of this width and feed-forward (S and S+ share a width)."""
    return family_for_width(embed_dim, "dinov3", ffn_layer)


def _shaped(state: Mapping[str, Any], key: str, rank: int, expected: str,
            where: str) -> tuple[int, ...]:
    """The shape of ``state[key]``, which must be a tensor of ``rank`` non-empty dimensions."""
    value = state[key]
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape is None or len(shape) != rank or min(shape) < 1:
        raise CheckpointError(f"{where}: {key} has shape {shape}, expected {expected}")
    return shape


def parameter_bytes(cfg: InferredConfig) -> int:
    """float32 bytes of the ViT ``cfg`` describes (what :func:`build_backbone` allocates)."""
    d, hidden = cfg.embed_dim, cfg.ffn_hidden or round(cfg.mlp_ratio * cfg.embed_dim)
    ffn = (3 if cfg.ffn_layer == "swiglu" else 2) * d * hidden  # fc1, fc2 (or w12, w3)
    block = 4 * d * d + ffn + 9 * d + hidden  # qkv, proj, feed-forward, two norms
    tokens = (cfg.img_size // cfg.patch_size) ** 2 + 1 + cfg.num_registers
    stem = d * 3 * cfg.patch_size ** 2 + d + tokens * d + 3 * d
    return 4 * (cfg.depth * block + stem)


def check_model_size(cfg: InferredConfig, path: Path, where: str) -> None:
    """:func:`check_build_size` for the ViT ``cfg`` describes."""
    check_build_size(parameter_bytes(cfg), f"a ViT {cfg.embed_dim} wide and {cfg.depth} blocks "
                     "deep", path, where)


def check_build_size(need: int, described: str, path: Path, where: str) -> None:
    """:class:`CheckpointError` before building a model of ``need`` float32 bytes far larger
    than the file's weights (views with stride 0 can describe any shape in a few bytes) or
    than free memory."""
    size = path.stat().st_size
    # fp16 weights hold half the float32 bytes; a training checkpoint holds more than one copy
    if need > 4 * size + (64 << 20):
        raise CheckpointError(f"{where}: refused to build {described} "
                              f"({memory.format_bytes(need)} of float32 weights): the file holds "
                              f"only {memory.format_bytes(size)}")
    available = memory.available_bytes()
    if available is not None and need > available:
        raise CheckpointError(f"{where}: refused to build {described}: its weights need "
                              f"{memory.format_bytes(need)} and this machine has "
                              f"{memory.format_bytes(available)} available")


def _guess_kind(state: Mapping[str, Any]) -> str:
    keys = list(state)
    if any(k.startswith(("conv1.", "layer1.", "bn1.")) for k in keys):
        return "a ResNet checkpoint"
    if any(".attn.qkv." in k for k in keys) and any("cls_attn_blocks" in k for k in keys):
        return "an XCiT checkpoint"
    return f"an unrecognised state dict (first keys: {', '.join(keys[:3])})"


def build_backbone(cfg: InferredConfig) -> VisionTransformer:
    """An untrained ViT of the inferred shape (LayerNorm eps 1e-6 unless a config says)."""
    from functools import partial

    import torch.nn as nn
    if cfg.family == "dinov3":
        return Dinov3VisionTransformer(
            patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
            num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, mask_k_bias=cfg.mask_k_bias,
            ffn_layer="mlp" if cfg.ffn_layer == "mlp" else "swiglu", ffn_hidden=cfg.ffn_hidden,
            layerscale_init=1e-5 if cfg.layerscale else None, layer_norm_eps=cfg.layer_norm_eps,
            n_storage_tokens=cfg.num_registers,
            untie_cls_and_patch_norms=cfg.untie_cls_and_patch_norms,
            untie_global_and_local_cls_norm=cfg.untie_global_and_local_cls_norm)
    if cfg.family == "dinov2":
        # The official hub settings; register models interpolate as dinov2/hub/backbones.py.
        interpolation = ({"interpolate_antialias": True, "interpolate_offset": 0.0}
                         if cfg.num_registers else {})
        return DinoVisionTransformer(
            img_size=cfg.img_size, patch_size=cfg.patch_size, embed_dim=cfg.embed_dim,
            depth=cfg.depth, num_heads=cfg.num_heads, qkv_bias=cfg.qkv_bias, init_values=1.0,
            ffn_layer=cfg.ffn_layer, ffn_hidden=cfg.ffn_hidden,
            num_register_tokens=cfg.num_registers, layer_norm_eps=cfg.layer_norm_eps,
            **interpolation)
    return VisionTransformer(img_size=[cfg.img_size], patch_size=cfg.patch_size,
                             embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                             mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                             norm_layer=partial(nn.LayerNorm, eps=cfg.layer_norm_eps))


def to_official_layout(state: dict[str, torch.Tensor], fmt: str, path: Path, where: str
                       ) -> tuple[dict[str, torch.Tensor], str, Any]:
    """transformers and timm DINOv2/DINOv3 state dicts in the official layout, with the format
    name and (transformers) the config that fixes heads and LayerNorm eps; others unchanged."""
    if is_hf_layout(state) or v3convert.is_hf_dinov3_state(state):
        config_path = hf_config_path(path)
        if config_path is None:
            raise CheckpointError(f"{where}: a transformers state dict without config.json "
                                  f"beside it (in {path.parent}); pass the save_pretrained folder")
        raw = read_config_json(config_path)
        if isinstance(raw, dict) and raw.get("model_type") == v3convert.HF_MODEL_TYPE:
            config = v3convert.HFDinov3Config.parse(raw, str(config_path))
            return v3convert.from_hf(state, config, where), "transformers", config
        return from_hf(state, where), "transformers", HFConfig.parse(raw, str(config_path))
    if v3convert.is_timm_dinov3_layout(state):
        return _from_timm_dinov3(state, where), "timm", None
    if is_timm_dinov2_layout(state):
        return from_timm(state), "timm", None
    return state, fmt, None


def _from_timm_dinov3(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """timm stores no RoPE periods: the head count (hence their width) from the table."""
    width = _shaped(state, "cls_token", 3, "(1, 1, dim)", where)[-1]
    table = v3_family(width, "swiglu_split" if "blocks.0.mlp.fc1_g.weight" in state else "mlp")
    if table is None:
        raise CheckpointError(f"{where}: a timm DINOv3 state dict {width} wide; no released "
                              "DINOv3 ViT has that width, so its head count is unknown")
    return v3convert.from_timm(state, table.num_heads, where)


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor],
                      where: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first bad keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(shown(k, 80)[1:-1] for k in unexpected[:5])}"
                         f"{' ...' if len(unexpected) > 5 else ''}")
        raise CheckpointError(f"{where}: backbone keys do not match: {'; '.join(parts)}")
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        k = bad[0]
        raise CheckpointError(f"{where}: {k} has shape {tuple(state[k].shape)}, "
                              f"expected {tuple(own[k].shape)}")
    odd = next((k for k in own if not state[k].is_floating_point()), None)
    if odd is not None:
        raise CheckpointError(f"{where}: {odd} holds {state[odd].dtype} values; expected "
                              "floating point weights")
    model.load_state_dict(state, strict=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_backbone(source: str | os.PathLike, checkpoint_key: str = "teacher",
                  download: bool = True) -> tuple[VisionTransformer | ConvNeXt, BackboneInfo]:
    """Checkpoint path, transformers folder or hub name -> (backbone in eval mode,
    :class:`BackboneInfo`).

    Raises :class:`CheckpointError` (one line) for a missing, truncated, unsafe or foreign file,
    an unknown ``checkpoint_key``, any missing/unexpected backbone key, or a hub file whose
    SHA-256 is not the official one.
    """
    path = resolve_source(source, download)
    where = str(source)
    sha256 = file_sha256(path)
    if str(source) in HUB and path == hub_cache_path(str(source)):
        check_hub_sha256(str(source), path, sha256)
    obj = read_checkpoint(path)
    state, fmt, key = extract_backbone(obj, checkpoint_key, where)
    if path.suffix == ".safetensors":
        fmt = "safetensors"
    if convnext_checkpoint.is_convnext(state):
        return _load_convnext(state, fmt, path, where, str(source), sha256, key)
    state, fmt, hf = to_official_layout(state, fmt, path, where)
    record = obj.get(TOOLKIT_KEY, {}) if isinstance(obj, Mapping) else {}
    heads = hf.num_attention_heads if hf else (
        record.get("num_heads") if isinstance(record, Mapping) else None)
    cfg = infer_config(state, heads, where)
    check_model_size(cfg, path, where)
    if hf is not None:
        cfg = replace(cfg, layer_norm_eps=hf.layer_norm_eps)
    model = build_backbone(cfg)
    load_state_strict(model, state, where)
    epoch = obj.get("epoch") if isinstance(obj, Mapping) and key else None
    info = BackboneInfo(
        source=str(source), path=path, format=fmt, checkpoint_key=key, arch=cfg.arch,
        patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, img_size=cfg.img_size, sha256=sha256,
        epoch=int(epoch) if isinstance(epoch, int) else None, family=cfg.family,
        num_registers=cfg.num_registers)
    return model.eval(), info


def _load_convnext(state: Mapping[str, torch.Tensor], fmt: str, path: Path, where: str,
                   source: str, sha256: str, checkpoint_key: str | None
                   ) -> tuple[ConvNeXt, BackboneInfo]:
    """A DINOv3 ConvNeXt state dict in any layout (:mod:`dino_models.dinov3_convnext_checkpoint`)
    -> (model in eval mode, :class:`BackboneInfo`)."""
    state, fmt, eps = convnext_checkpoint.to_official(state, fmt, path, where)
    cfg = convnext_checkpoint.infer_config(state, where)
    check_build_size(cfg.parameter_bytes(), f"a ConvNeXt {cfg.dims[-1]} wide with blocks "
                     f"{list(cfg.depths)}", path, where)
    model = ConvNeXt(depths=cfg.depths, dims=cfg.dims, layer_norm_eps=eps)
    load_state_strict(model, state, where)
    info = BackboneInfo(
        source=source, path=path, format=fmt, checkpoint_key=checkpoint_key, arch=cfg.arch,
        patch_size=ConvNeXt.patch_size, embed_dim=cfg.dims[-1], depth=sum(cfg.depths),
        num_heads=0, img_size=224, sha256=sha256, family=ConvNeXt.family)
    return model.eval(), info


def arch_of(info: BackboneInfo) -> Arch | None:
    """The table entry for a loaded backbone, when it is one of the known families."""
    table = {"dinov2": DINOV2_FAMILIES, "dinov3": DINOV3_FAMILIES}.get(info.family, FAMILIES)
    fam = table.get(info.arch)
    return Arch(fam, info.patch_size, info.num_registers) if fam else None
