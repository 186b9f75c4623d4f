"""DINOv3 ConvNeXt checkpoints: three key layouts -> the official one, the architecture inferred.

:func:`dino_models.checkpoint.load_backbone` maps every state dict that :func:`is_convnext`
recognises with :func:`to_official`, reads its shape with :func:`infer_config` and loads it
strictly. Layouts, each mapped key by key (a key the map does not know is an error, never
dropped):

  * official (``dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth`` ...):
    ``downsample_layers.{i}.{0,1}``, ``stages.{i}.{j}.{dwconv,norm,pwconv1,pwconv2,gamma}``,
    ``norm`` and ``norms.3`` (the same tensors as ``norm``; filled from it when absent);
  * Hugging Face ``transformers`` ``DINOv3ConvNextModel`` (a ``save_pretrained`` folder, or
    its ``model.safetensors`` with ``config.json`` beside it): ``stages.{i}.downsample_layers.
    {0,1}``, ``stages.{i}.layers.{j}.{depthwise_conv,layer_norm,pointwise_conv1,
    pointwise_conv2,gamma}``, ``layer_norm`` (``model.stages...`` as transformers 5 holds it
    in memory is accepted too); ``config.json`` gives the LayerNorm eps and is checked like any
    untrusted input;
  * timm's (``convnext_tiny.dinov3_lvd1689m`` ...): ``stem.{0,1}``, ``stages.{i}.downsample.
    {0,1}``, ``stages.{i}.blocks.{j}.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}``, ``head.norm``.
No ``transformers`` or ``timm`` import: the mapping is plain dictionary work.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dino_core.errors import CheckpointError
from dino_core.metadata import shown

from .convert import hf_config_path, read_config_json
from .dinov3_convnext import LAYER_NORM_EPS, NUM_STAGES, arch_name

HF_MODEL_TYPE = "dinov3_convnext"
MAX_DIM = 16384
MAX_BLOCKS = 1000   # per stage

_OFFICIAL = re.compile(r"downsample_layers\.0\.0\.weight$")
_HF = re.compile(r"(model\.)?stages\.\d+\.(downsample_layers|layers)\.")
_TIMM_STEM = "stem.0.weight"

# (pattern, replacement) for each layout; a key matching none is an error.
_HF_MAP = [
    (r"(?:model\.)?stages\.(\d+)\.downsample_layers\.([01])\.(weight|bias)$",
     r"downsample_layers.\1.\2.\3"),
    (r"(?:model\.)?stages\.(\d+)\.layers\.(\d+)\.gamma$", r"stages.\1.\2.gamma"),
    (r"(?:model\.)?stages\.(\d+)\.layers\.(\d+)\.depthwise_conv\.(weight|bias)$",
     r"stages.\1.\2.dwconv.\3"),
    (r"(?:model\.)?stages\.(\d+)\.layers\.(\d+)\.layer_norm\.(weight|bias)$",
     r"stages.\1.\2.norm.\3"),
    (r"(?:model\.)?stages\.(\d+)\.layers\.(\d+)\.pointwise_conv([12])\.(weight|bias)$",
     r"stages.\1.\2.pwconv\3.\4"),
    (r"layer_norm\.(weight|bias)$", r"norm.\1"),
]
_TIMM_MAP = [
    (r"stem\.([01])\.(weight|bias)$", r"downsample_layers.0.\1.\2"),
    (r"stages\.(\d+)\.downsample\.([01])\.(weight|bias)$", r"downsample_layers.\1.\2.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.gamma$", r"stages.\1.\2.gamma"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.(weight|bias)$", r"stages.\1.\2.dwconv.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.norm\.(weight|bias)$", r"stages.\1.\2.norm.\3"),
    (r"stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc([12])\.(weight|bias)$",
     r"stages.\1.\2.pwconv\3.\4"),
    (r"head\.norm\.(weight|bias)$", r"norm.\1"),
]


@dataclass(frozen=True)
class ConvNeXtConfig:
    """What the weights say about a ConvNeXt: blocks and channels per stage."""

    depths: tuple[int, ...]
    dims: tuple[int, ...]
    layer_norm_eps: float = LAYER_NORM_EPS

    @property
    def arch(self) -> str:
        return arch_name(self.depths, self.dims)

    def parameter_bytes(self) -> int:
        """float32 bytes of the model (what :class:`ConvNeXt` allocates)."""
        blocks = sum(n * (49 * c + c + 2 * c + 8 * c * c + 5 * c + c)
                     for n, c in zip(self.depths, self.dims))  # dwconv, norm, MLP, gamma
        stem = self.dims[0] * (3 * 16 + 1) + 2 * self.dims[0]
        downs = sum(2 * a + b * (4 * a + 1) for a, b in zip(self.dims, self.dims[1:]))
        return 4 * (blocks + stem + downs + 2 * self.dims[-1])  # + norm (norms.3 is norm)


def is_convnext(state: Mapping[str, Any]) -> bool:
    """True for a ConvNeXt state dict in any of the three layouts."""
    return any(_OFFICIAL.match(k) or _HF.match(k) or k == _TIMM_STEM for k in state)


def to_official(state: Mapping[str, torch.Tensor], fmt: str, path: Path, where: str
                ) -> tuple[dict[str, torch.Tensor], str, float]:
    """(state dict in the official layout, format name, LayerNorm eps)."""
    if any(_HF.match(k) for k in state):
        config = hf_config_path(path)
        if config is None:
            raise CheckpointError(f"{where}: a transformers DINOv3 ConvNeXt state dict without "
                                  f"config.json beside it (in {path.parent}); pass the "
                                  "save_pretrained folder")
        eps = read_hf_eps(config)
        return _with_norms(_mapped(state, _HF_MAP, "transformers", where), where), \
            "transformers", eps
    if _TIMM_STEM in state:
        if any(k.startswith("head.fc.") for k in state):
            raise CheckpointError(f"{where}: has a classifier (head.fc); a DINOv3 ConvNeXt "
                                  "backbone has none (timm: num_classes=0)")
        return _with_norms(_mapped(state, _TIMM_MAP, "timm", where), where), "timm", \
            LAYER_NORM_EPS
    return _with_norms(dict(state), where), fmt, LAYER_NORM_EPS


def _mapped(state: Mapping[str, torch.Tensor], table: list[tuple[str, str]], layout: str,
            where: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        new = next((re.sub(p, r, key) for p, r in table if re.match(p, key)), None)
        if new is None:
            raise CheckpointError(f"{where}: unexpected key {shown(key, 80)} in a {layout} "
                                  "DINOv3 ConvNeXt checkpoint")
        out[new] = value
    return out


def _with_norms(state: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """``norms.3.*`` (the official alias of ``norm.*``) filled in, or checked to be equal."""
    for part in ("weight", "bias"):
        norm, alias = state.get(f"norm.{part}"), state.get(f"norms.3.{part}")
        if alias is None and norm is not None:
            state[f"norms.3.{part}"] = norm
        elif norm is not None and not (isinstance(alias, torch.Tensor) and
                                       alias.shape == norm.shape and torch.equal(alias, norm)):
            raise CheckpointError(f"{where}: norms.3.{part} differs from norm.{part}; the "
                                  "official ConvNeXt holds one tensor under both names")
    return state


def read_hf_eps(path: Path) -> float:
    """The LayerNorm eps of a transformers ``DINOv3ConvNextConfig``, its model type and
    activation checked (the widths and depths come from the weights)."""
    where, raw = str(path), read_config_json(path)
    kind = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
    if kind != HF_MODEL_TYPE:
        raise CheckpointError(f"{where}: model_type {kind!r}; expected {HF_MODEL_TYPE!r} "
                              "(a transformers DINOv3 ConvNeXt)")
    if raw.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(f"{where}: hidden_act {raw['hidden_act']!r}; only gelu, as "
                              "every released DINOv3 ConvNeXt, is supported")
    eps = raw.get("layer_norm_eps", LAYER_NORM_EPS)
    if not isinstance(eps, float) or not 0 < eps < 1:
        raise CheckpointError(f"{where}: layer_norm_eps {eps!r}: expected a small float")
    return eps


def infer_config(state: Mapping[str, torch.Tensor], where: str) -> ConvNeXtConfig:
    """Widths from the stem and downsampling convs, depths from the block indices; every shape
    checked before it is used (the shapes are untrusted input)."""
    dims = []
    for i in range(NUM_STAGES):
        key = f"downsample_layers.{i}.{0 if i == 0 else 1}.weight"
        shape = _conv_shape(state, key, where)
        expected = (3, 4) if i == 0 else (dims[-1], 2)
        if (shape[1], shape[2]) != expected or shape[2] != shape[3]:
            raise CheckpointError(f"{where}: {key} has shape {shape}, expected "
                                  f"({shape[0]}, {expected[0]}, {expected[1]}, {expected[1]})"
                                  + (" (RGB input)" if i == 0 else ""))
        dims.append(shape[0])
    depths = []
    for i in range(NUM_STAGES):
        blocks = [int(m.group(1)) for k in state if (m := re.match(rf"stages\.{i}\.(\d+)\.", k))]
        depths.append(1 + max(blocks) if blocks else 0)
    bad = next(((n, v) for n, vs, hi in (("dims", dims, MAX_DIM), ("depths", depths, MAX_BLOCKS))
                for v in vs if not 0 <= v <= hi), None)
    if bad is not None:
        raise CheckpointError(f"{where}: {bad[0]} value {bad[1]} is out of range")
    return ConvNeXtConfig(tuple(depths), tuple(dims))


def _conv_shape(state: Mapping[str, Any], key: str, where: str) -> tuple[int, ...]:
    value = state.get(key)
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape is None or len(shape) != 4 or min(shape) < 1:
        raise CheckpointError(f"{where}: {key} has shape {shape}, expected a conv weight "
                              "(out, in, k, k)")
    return shape
