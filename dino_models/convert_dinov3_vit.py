"""Other libraries' DINOv3 ViT key layouts -> the official one (``dinov3/models/vision_transformer.py``).

Two layouts are read, each mapped key by key with every tensor accounted for (a key the map does
not know is an error, never dropped):

  * Hugging Face ``transformers`` ``DINOv3ViTModel`` / ``DINOv3ViTBackbone`` (a
    ``save_pretrained`` folder: ``config.json`` + ``model.safetensors``). Separate query, key and
    value projections are concatenated into ``qkv``, their biases too, with a ``bias_mask`` that
    keeps the key bias at zero where the config has none (``key_bias: false``, every release)
    and keeps it where it has one; ``layer_scale*.lambda1`` -> ``ls*.gamma``; ``up_proj``/
    ``down_proj`` -> ``fc1``/``fc2``, or (``use_gated_mlp``) ``gate_proj``/``up_proj``/
    ``down_proj`` -> ``w1``/``w2``/``w3``; ``register_tokens`` -> ``storage_tokens``. The RoPE
    periods, which transformers computes rather than stores, are computed from ``rope_theta``
    as transformers does (float32). The architecture comes from ``config.json``, checked like
    any untrusted input.
  * timm's DINOv3 weights (``vit_*_patch16_dinov3``, ``..._qkvb``; timm's ``eva.py``):
    ``reg_token`` -> ``storage_tokens``, ``gamma_1/2`` -> ``ls1/2.gamma``, ``q_bias``/``v_bias``
    -> ``qkv.bias`` with a zero key third and its mask, ``fc1_g``/``fc1_x``/``fc2`` -> ``w1``/
    ``w2``/``w3``. timm drops the mask token and the periods (base 100, computed in float32 as
    timm does); the mask token comes back as zeros (it only matters for masked training inputs).
No ``transformers`` or ``timm`` import: the mapping is plain dictionary work.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from dino_core.errors import CheckpointError

HF_MODEL_TYPE = "dinov3_vit"
HF_PREFIXES = ("dinov3_vit.", "backbone.")
TIMM_ROPE_BASE = 100.0   # timm's rope_temperature for every DINOv3 model


@dataclass(frozen=True)
class HFDinov3Config:
    """The fields of a ``transformers`` ``DINOv3ViTConfig`` that fix the architecture."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int
    layer_norm_eps: float
    rope_theta: float
    num_register_tokens: int
    use_gated_mlp: bool
    key_bias: bool

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str) -> HFDinov3Config:
        """Check ``config.json``'s values; :class:`CheckpointError` naming the bad field."""
        gated = raw.get("use_gated_mlp", False)
        act = raw.get("hidden_act", "gelu")
        if not isinstance(gated, bool) or act != ("silu" if gated else "gelu"):
            raise CheckpointError(f"{where}: hidden_act {act!r} with use_gated_mlp {gated!r}; "
                                  "every DINOv3 release has gelu (MLP) or silu (SwiGLU)")
        ints = {name: _int(raw, name, default, where) for name, default in (
            ("hidden_size", 384), ("num_hidden_layers", 12), ("num_attention_heads", 6),
            ("intermediate_size", 1536), ("patch_size", 16), ("image_size", 224),
            ("num_register_tokens", 0))}
        floats = {name: _float(raw, name, default, where) for name, default in (
            ("layer_norm_eps", 1e-5), ("rope_theta", 100.0))}
        if not floats["layer_norm_eps"] < 1:
            raise CheckpointError(f"{where}: layer_norm_eps {floats['layer_norm_eps']!r}: "
                                  "expected a small float")
        key_bias = raw.get("key_bias", False)
        if not isinstance(key_bias, bool):
            raise CheckpointError(f"{where}: key_bias {key_bias!r}: expected true or false")
        return cls(**ints, **floats, use_gated_mlp=gated, key_bias=key_bias)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // max(self.num_attention_heads, 1)


def _int(raw: Mapping[str, Any], name: str, default: int, where: str) -> int:
    value = raw.get(name, default)
    if isinstance(value, list) and len(value) == 2 and value[0] == value[1]:
        value = value[0]                       # image_size / patch_size may be [H, W]
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65536:
        raise CheckpointError(f"{where}: {name} {value!r}: expected an integer in 0..65536")
    return value


def _float(raw: Mapping[str, Any], name: str, default: float, where: str) -> float:
    value = raw.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < 1e9:
        raise CheckpointError(f"{where}: {name} {value!r}: expected a positive number")
    return float(value)


def rope_periods(head_dim: int, base: float) -> torch.Tensor:
    """The periods transformers and timm compute (float32): 1 / (1 / base ** (4 i / head_dim))."""
    inv_freq = 1 / base ** torch.arange(0, 1, 4 / head_dim, dtype=torch.float32)
    return 1 / inv_freq


def is_hf_dinov3_state(state: Mapping[str, Any]) -> bool:
    return any(_strip_hf(k).startswith(("layer.0.attention.", "model.layer.0.attention."))
               for k in state)


def _strip_hf(key: str) -> str:
    for prefix in HF_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key[len("model."):] if key.startswith("model.layer.") else key


_HF_TOP = {
    "embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
    "embeddings.register_tokens": "storage_tokens",
    "embeddings.patch_embeddings.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight", "norm.bias": "norm.bias",
}
_HF_BLOCK = {
    "norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.down_proj": None,  # fc2 or w3: depends on use_gated_mlp
    "mlp.up_proj": None,    # fc1 or w2
    "mlp.gate_proj": "mlp.w1",
}
_HF_QKV = re.compile(r"layer\.(\d+)\.attention\.(q|k|v)_proj\.(weight|bias)$")
_HF_LAYER = re.compile(r"layer\.(\d+)\.(.+?)(\.weight|\.bias)?$")


def from_hf(state: Mapping[str, torch.Tensor], config: HFDinov3Config, where: str
            ) -> dict[str, torch.Tensor]:
    """A ``DINOv3ViTModel`` state dict in the official layout (see the module docstring)."""
    ffn = ({"mlp.up_proj": "mlp.w2", "mlp.down_proj": "mlp.w3"} if config.use_gated_mlp
           else {"mlp.up_proj": "mlp.fc1", "mlp.down_proj": "mlp.fc2"})
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, dict[str, torch.Tensor]]] = {}
    for raw_key, value in state.items():
        key = _strip_hf(raw_key)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif m := _HF_QKV.match(key):
            qkv.setdefault(m.group(1), {}).setdefault(m.group(3), {})[m.group(2)] = value
        elif (m := _HF_LAYER.match(key)) and m.group(2) in _HF_BLOCK:
            name = ffn.get(m.group(2)) or _HF_BLOCK[m.group(2)]
            if name == "mlp.w1" and not config.use_gated_mlp:
                raise CheckpointError(f"{where}: {raw_key!r} in a model whose config.json has "
                                      "use_gated_mlp false")
            out[f"blocks.{m.group(1)}.{name}{m.group(3) or ''}"] = value
        else:
            raise CheckpointError(f"{where}: unexpected key {raw_key!r} in a transformers "
                                  "DINOv3 ViT checkpoint")
    for layer, parts in qkv.items():
        out.update(_packed_qkv(f"blocks.{layer}.attn.qkv", parts, where))
    if "mask_token" in out:
        out["mask_token"] = out["mask_token"].reshape(1, -1)
    if "storage_tokens" in out and out["storage_tokens"].shape[1] == 0:
        del out["storage_tokens"]                  # num_register_tokens 0: an empty tensor
    out["rope_embed.periods"] = rope_periods(config.head_dim, config.rope_theta)
    return out


def _packed_qkv(prefix: str, parts: dict[str, dict[str, torch.Tensor]], where: str
                ) -> dict[str, torch.Tensor]:
    """q/k/v weights (and whichever biases exist) -> ``qkv.weight``, ``qkv.bias`` and its
    ``bias_mask``: 0 over a key bias that does not exist, so that none is invented."""
    weights = parts.get("weight", {})
    if set(weights) != {"q", "k", "v"}:
        raise CheckpointError(f"{where}: {prefix} has {sorted(weights)} projections; expected "
                              "q, k and v")
    out = {f"{prefix}.weight": torch.cat([weights[n] for n in "qkv"], dim=0)}
    biases = parts.get("bias", {})
    if biases:
        dim = weights["q"].shape[0]
        zeros = torch.zeros(dim, dtype=weights["q"].dtype)
        out[f"{prefix}.bias"] = torch.cat([biases.get(n, zeros) for n in "qkv"])
        out[f"{prefix}.bias_mask"] = torch.cat(
            [torch.ones(dim), torch.full((dim,), float("k" in biases)), torch.ones(dim)])
    return out


def is_timm_dinov3_layout(state: Mapping[str, Any]) -> bool:
    """timm's EVA layout of DINOv3: LayerScale as ``gamma_1`` and no learned position table."""
    return "blocks.0.gamma_1" in state and "pos_embed" not in state


_TIMM_RENAMES = (
    (re.compile(r"^reg_token$"), "storage_tokens"),
    (re.compile(r"^(blocks\.\d+\.)gamma_([12])$"), r"\1ls\2.gamma"),
    (re.compile(r"^(blocks\.\d+\.mlp\.)fc1_g\."), r"\1w1."),
    (re.compile(r"^(blocks\.\d+\.mlp\.)fc1_x\."), r"\1w2."),
)


def from_timm(state: Mapping[str, torch.Tensor], num_heads: int, where: str
              ) -> dict[str, torch.Tensor]:
    """timm's DINOv3 state dict in the official layout (see the module docstring);
    ``num_heads`` fixes the head width of the RoPE periods."""
    swiglu = any(".mlp.fc1_g." in k for k in state)
    out: dict[str, torch.Tensor] = {}
    biases: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if m := re.match(r"(blocks\.\d+\.attn\.)([qv])_bias$", key):
            biases.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        for pattern, repl in _TIMM_RENAMES:
            key = pattern.sub(repl, key)
        if swiglu:
            key = re.sub(r"^(blocks\.\d+\.mlp\.)fc2\.", r"\1w3.", key)
        out[key] = value
    for prefix, parts in biases.items():
        if set(parts) != {"q", "v"}:
            raise CheckpointError(f"{where}: {prefix} has {sorted(parts)} biases; expected q "
                                  "and v")
        zeros = torch.zeros_like(parts["q"])
        out[f"{prefix}qkv.bias"] = torch.cat([parts["q"], zeros, parts["v"]])
        dim = zeros.shape[0]
        out[f"{prefix}qkv.bias_mask"] = torch.cat([torch.ones(dim), torch.zeros(dim),
                                                   torch.ones(dim)])
    dim = state["cls_token"].shape[-1]
    out["mask_token"] = torch.zeros(1, dim)
    out["rope_embed.periods"] = rope_periods(dim // num_heads, TIMM_ROPE_BASE)
    return out
