"""Other libraries' DINOv2 key layouts -> the official one (``dinov2/models/vision_transformer.py``).

Two layouts are read, each mapped key by key with every tensor accounted for (a key the map
does not know is an error, never dropped):

  * Hugging Face ``transformers`` ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (a
    ``save_pretrained`` folder: ``config.json`` + ``model.safetensors``; the ``*ForImageClassification``
    variants' backbone, its classifier left out). Separate query/key/value projections are
    concatenated into ``qkv``; ``layer_scale*.lambda1`` -> ``ls*.gamma``;
    ``mlp.weights_in/out`` (SwiGLU) -> ``mlp.w12/w3``. The architecture comes from
    ``config.json``, which is checked like any untrusted input.
  * timm's DINOv2 weights (``vit_*_patch14_dinov2``, ``..._reg4_dinov2``): official names
    except SwiGLU's ``fc1``/``fc2`` (= ``w12``/``w3``), no ``mask_token``, and for register
    models ``reg_token`` with the class position folded into ``cls_token`` and dropped from
    ``pos_embed`` (timm's ``_convert_dinov2``); the inverse puts a zero class position back,
    which gives the same tokens.
No ``transformers`` or ``timm`` import: the mapping is plain dictionary work.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dino_core.errors import CheckpointError

HF_PREFIXES = ("dinov2_with_registers.", "dinov2.")
HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers")
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class HFConfig:
    """The fields of a ``transformers`` DINOv2 ``config.json`` that fix the architecture."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    patch_size: int
    image_size: int
    layer_norm_eps: float
    num_register_tokens: int
    use_swiglu_ffn: bool

    @classmethod
    def read(cls, path: Path) -> HFConfig:
        """Parse and check ``config.json``; :class:`CheckpointError` naming the bad field."""
        return cls.parse(read_config_json(path), str(path))

    @classmethod
    def parse(cls, raw: dict[str, Any], where: str) -> HFConfig:
        """Check the values of a parsed ``config.json`` (:func:`read_config_json`)."""
        if raw.get("model_type") not in HF_MODEL_TYPES:
            kind = raw.get("model_type")
            raise CheckpointError(f"{where}: model_type {kind!r}; expected one of "
                                  f"{', '.join(HF_MODEL_TYPES)} (a transformers DINOv2 model)")
        if raw.get("hidden_act", "gelu") != "gelu":
            raise CheckpointError(f"{where}: hidden_act {raw['hidden_act']!r}; only gelu, as "
                                  "every released DINOv2, is supported")
        ints = {name: _int(raw, name, default, where) for name, default in (
            ("hidden_size", 768), ("num_hidden_layers", 12), ("num_attention_heads", 12),
            ("patch_size", 14), ("image_size", 518), ("num_register_tokens", 0))}
        eps = raw.get("layer_norm_eps", 1e-6)
        if not isinstance(eps, float) or not 0 < eps < 1:
            raise CheckpointError(f"{where}: layer_norm_eps {eps!r}: expected a small float")
        if raw["model_type"] == "dinov2":
            ints["num_register_tokens"] = 0
        return cls(**ints, layer_norm_eps=eps,
                   use_swiglu_ffn=bool(raw.get("use_swiglu_ffn", False)))


def read_config_json(path: Path) -> dict[str, Any]:
    """A transformers ``config.json`` as a dict; :class:`CheckpointError` for a huge file, bad
    JSON or anything but an object."""
    where = str(path)
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{where}: larger than {MAX_CONFIG_BYTES} bytes; not a config")
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise CheckpointError(f"{where}: not valid JSON") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: holds a JSON {type(raw).__name__}, not a config object")
    return raw


def _int(raw: Mapping[str, Any], name: str, default: int, where: str) -> int:
    value = raw.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 16384:
        raise CheckpointError(f"{where}: {name} {value!r}: expected an integer in 0..16384")
    return value


def is_hf_layout(state: Mapping[str, Any]) -> bool:
    return any(_strip_hf(k).startswith(("embeddings.", "encoder.layer.")) for k in state)


def is_timm_dinov2_layout(state: Mapping[str, Any]) -> bool:
    """timm's DINOv2: LayerScale present (DINO has none) and no ``mask_token``."""
    return "blocks.0.ls1.gamma" in state and "mask_token" not in state


def _strip_hf(key: str) -> str:
    for prefix in HF_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


_HF_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2", "mlp.weights_in": "mlp.w12",
    "mlp.weights_out": "mlp.w3",
}
_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias",
}
_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+?)(\.weight|\.bias)?$")


def from_hf(state: Mapping[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """A ``Dinov2Model``/``Dinov2WithRegistersModel`` state dict in the official layout.

    The classifier of a ``*ForImageClassification`` checkpoint is left out; any other key the
    map does not know is a :class:`CheckpointError`. A missing ``mask_token`` (configs with
    ``use_mask_token=False``) becomes zeros: it only matters for masked training inputs.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for raw_key, value in state.items():
        key = _strip_hf(raw_key)
        if key.startswith("classifier."):
            continue
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif m := _QKV.match(key):
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = value
        elif (m := _LAYER.match(key)) and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}{m.group(3) or ''}"] = value
        else:
            raise CheckpointError(f"{where}: unexpected key {raw_key!r} in a transformers "
                                  "DINOv2 checkpoint")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{where}: layer {layer} has {sorted(parts)} {kind}s; "
                                  "expected query, key and value")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0)
    if "mask_token" not in out and "cls_token" in out:
        out["mask_token"] = torch.zeros(1, out["cls_token"].shape[-1])
    return out


def from_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's DINOv2 state dict in the official layout (see the module docstring)."""
    out = {k: v for k, v in state.items() if k != "reg_token"}
    for key, value in state.items():
        m = re.match(r"(blocks\.\d+\.mlp\.)fc([12])\.(weight|bias)$", key)
        fc2 = state.get(f"{m.group(1)}fc2.weight") if m else None
        packed = fc2 is not None and state[f"{m.group(1)}fc1.weight"].shape[0] == 2 * fc2.shape[1]
        if m and packed:  # SwiGLUPacked: fc1 = w12 (gate and value), fc2 = w3
            del out[key]
            out[f"{m.group(1)}{'w12' if m.group(2) == '1' else 'w3'}.{m.group(3)}"] = value
    if "reg_token" in state:
        out["register_tokens"] = state["reg_token"]
        pos = state["pos_embed"]
        out["pos_embed"] = torch.cat((torch.zeros_like(pos[:, :1]), pos), dim=1)
    out["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    return out


def hf_config_path(weights: Path) -> Path | None:
    """``config.json`` beside a transformers weights file, when there is one."""
    path = weights.parent / "config.json"
    return path if path.is_file() else None
