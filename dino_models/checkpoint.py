"""One entry point for every checkpoint a DINO user has: :func:`load_backbone`.

Accepted, with the architecture inferred from the weights:
  * official pretrained backbones (plain state dict, e.g. ``dino_deitsmall8_pretrain.pth``);
  * official training checkpoints (``student``/``teacher``/``optimizer``/``epoch``/``args``/
    ``dino_loss``; keys prefixed ``module.`` and ``backbone.``); the teacher by default;
  * this toolkit's training checkpoints (the official format plus a ``dino_edge`` record);
  * ``.safetensors`` files holding a backbone state dict;
  * the official hub names ``dino_vits16 dino_vits8 dino_vitb16 dino_vitb8``.
Loading is strict: a missing or unexpected backbone key is an error naming it.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from dino_core import memory
from dino_core.errors import CheckpointError
from dino_core.metadata import INT_RANGES, shown

from .archs import FAMILIES, Arch, family_for_width
from .safe_load import load_pickle_checkpoint
from .vision_transformer import VisionTransformer

_BASE_URL = "https://dl.fbaipublicfiles.com/dino"
# Official release files (facebookresearch/dino, hubconf.py and README).
HUB_FILES: dict[str, str] = {
    "dino_vits16": "dino_deitsmall16_pretrain",
    "dino_vits8": "dino_deitsmall8_pretrain",
    "dino_vitb16": "dino_vitbase16_pretrain",
    "dino_vitb8": "dino_vitbase8_pretrain",
}
TRAINING_KEYS = ("student", "teacher")
TOOLKIT_KEY = "dino_edge"   # this toolkit's record in a training checkpoint


@dataclass(frozen=True)
class BackboneInfo:
    """What :func:`load_backbone` learned about a checkpoint."""

    source: str
    path: Path
    format: str                # official-pretrained | official-training | toolkit-training | safetensors
    checkpoint_key: str | None  # "teacher"/"student" for training checkpoints
    arch: str                  # family name, e.g. "vit_small"
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    img_size: int              # side of the stored position-embedding grid, in pixels
    sha256: str
    epoch: int | None = None

    @property
    def short_name(self) -> str:
        return f"vit_{self.arch[4]}{self.patch_size}" if self.arch in FAMILIES else self.arch


def hub_url(name: str) -> str:
    stem = HUB_FILES[name]
    return f"{_BASE_URL}/{stem}/{stem}.pth"


def hub_cache_path(name: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps the release file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{HUB_FILES[name]}.pth"


def resolve_source(source: str | os.PathLike, download: bool = True) -> Path:
    """A path, or a hub name resolved to the cached (or freshly downloaded) release file."""
    text = str(source)
    if text in HUB_FILES and not Path(text).exists():
        return _fetch_hub_file(text, download)
    path = Path(text).expanduser()
    if not path.exists():
        hint = f"; hub names: {', '.join(HUB_FILES)}" if "/" not in text else ""
        raise CheckpointError(f"{text}: no such file{hint}")
    if path.is_dir():
        raise CheckpointError(f"{text}: is a directory, expected a checkpoint file")
    return path


def _fetch_hub_file(name: str, download: bool) -> Path:
    cached = hub_cache_path(name)
    if cached.exists():
        return cached
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


def _strip_training_prefixes(state: Mapping[str, Any], where: str) -> dict[str, torch.Tensor]:
    """``module.backbone.x`` -> ``x``; the projection head (``head.*``) is left out on purpose."""
    _check_keys(state, where)
    state = strip_prefix(state, "module.")
    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    stray = [k for k in state if not k.startswith(("backbone.", "head."))]
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


def infer_config(state: Mapping[str, torch.Tensor], num_heads: Any = None,
                 where: str = "checkpoint") -> InferredConfig:
    """Architecture from weight shapes: patch size, width, depth, grid; heads from the width.

    Every shape is checked before it is used, and the result against the ranges a model file
    may have (``dino_core.metadata.INT_RANGES``): the shapes are untrusted input.
    """
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    if not all(k in state for k in needed[:3]):
        kind = _guess_kind(state)
        raise CheckpointError(f"{where}: {kind}, not a DINO ViT backbone "
                              f"(no {', '.join(k for k in needed[:3] if k not in state)})")
    if needed[3] not in state:
        raise CheckpointError(f"{where}: not a DINO ViT backbone (no {needed[3]})")
    patch_weight = _shaped(state, "patch_embed.proj.weight", 4, "(dim, 3, patch, patch)", where)
    embed_dim, _, patch, patch_w = patch_weight
    if patch != patch_w:
        raise CheckpointError(f"{where}: non-square patches {patch}x{patch_w} are not supported")
    tokens = _shaped(state, "pos_embed", 3, "(1, tokens, dim)", where)[1]
    hidden = _shaped(state, "blocks.0.mlp.fc1.weight", 2, "(hidden, dim)", where)[0]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = round(max(tokens - 1, 0) ** 0.5)
    family = family_for_width(embed_dim)
    if num_heads is None:
        num_heads = family.num_heads if family else max(1, embed_dim // 64)
    for name, value in (("patch_size", patch), ("embed_dim", embed_dim), ("depth", depth),
                        ("num_heads", num_heads)):
        low, high = INT_RANGES[name]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise CheckpointError(f"{where}: {name} {shown(value)}: expected an integer in "
                                  f"{low}..{high}")
    if embed_dim % num_heads:
        raise CheckpointError(f"{where}: embed_dim {embed_dim} is not a multiple of num_heads "
                              f"{num_heads}")
    if grid < 1 or hidden < 1:
        raise CheckpointError(f"{where}: pos_embed holds {tokens} tokens and the MLP {hidden} "
                              "hidden units; not a ViT")
    return InferredConfig(
        arch=family.name if family else f"vit_d{embed_dim}", patch_size=patch,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, img_size=grid * patch,
        mlp_ratio=hidden / embed_dim, qkv_bias="blocks.0.attn.qkv.bias" in state)


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
    d, hidden = cfg.embed_dim, round(cfg.mlp_ratio * cfg.embed_dim)
    block = 4 * d * d + 2 * d * hidden + 9 * d + hidden  # qkv, proj, fc1, fc2, two norms
    tokens = (cfg.img_size // cfg.patch_size) ** 2 + 1
    stem = d * 3 * cfg.patch_size ** 2 + d + tokens * d + 3 * d
    return 4 * (cfg.depth * block + stem)


def check_model_size(cfg: InferredConfig, path: Path, where: str) -> None:
    """:class:`CheckpointError` before building a model far larger than the file's weights
    (views with stride 0 can describe any shape in a few bytes) or than free memory."""
    need, size = parameter_bytes(cfg), path.stat().st_size
    described = f"a ViT {cfg.embed_dim} wide and {cfg.depth} blocks deep"
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
    """An untrained ViT of the inferred shape (ImageNet-style LayerNorm eps 1e-6)."""
    from functools import partial

    import torch.nn as nn
    return VisionTransformer(img_size=[cfg.img_size], patch_size=cfg.patch_size,
                             embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.num_heads,
                             mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))


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
                  download: bool = True) -> tuple[VisionTransformer, BackboneInfo]:
    """Checkpoint path or hub name -> (backbone in eval mode, :class:`BackboneInfo`).

    Raises :class:`CheckpointError` (one line) for a missing, truncated, unsafe or foreign file,
    an unknown ``checkpoint_key``, or any missing/unexpected backbone key.
    """
    path = resolve_source(source, download)
    where = str(source)
    obj = read_checkpoint(path)
    state, fmt, key = extract_backbone(obj, checkpoint_key, where)
    if path.suffix == ".safetensors":
        fmt = "safetensors"
    record = obj.get(TOOLKIT_KEY, {}) if isinstance(obj, Mapping) else {}
    cfg = infer_config(state, record.get("num_heads") if isinstance(record, Mapping) else None,
                       where)
    check_model_size(cfg, path, where)
    model = build_backbone(cfg)
    load_state_strict(model, state, where)
    epoch = obj.get("epoch") if isinstance(obj, Mapping) and key else None
    info = BackboneInfo(
        source=str(source), path=path, format=fmt, checkpoint_key=key, arch=cfg.arch,
        patch_size=cfg.patch_size, embed_dim=cfg.embed_dim, depth=cfg.depth,
        num_heads=cfg.num_heads, img_size=cfg.img_size, sha256=file_sha256(path),
        epoch=int(epoch) if isinstance(epoch, int) else None)
    return model.eval(), info


def arch_of(info: BackboneInfo) -> Arch | None:
    """The table entry for a loaded backbone, when it is one of the known families."""
    fam = FAMILIES.get(info.arch)
    return Arch(fam, info.patch_size) if fam else None
