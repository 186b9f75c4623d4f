"""Deterministic, framework-independent weights and inputs for the parity vectors.

Both the generator (run once against the official code) and the tests build their tensors here,
from ``numpy.random.RandomState`` (whose streams numpy keeps stable across releases), so the
official model and ours see bit-identical weights and images without committing the weights.
"""
from __future__ import annotations

import numpy as np


def _std_for(name: str) -> float:
    if name.endswith("attn.qkv.weight"):
        return 0.08   # larger than the 0.02 init so the attention is peaked, not uniform
    if _around_one(name):
        return 0.1    # around 1.0, see below
    return 0.02


def _around_one(name: str) -> bool:
    """LayerNorm weights and LayerScale gammas (DINOv2) are drawn around 1.0, so that every
    block changes the tokens (a gamma of 0.02 would make the residual branches vanish)."""
    return ("norm" in name and name.endswith("weight")) or name.endswith(".gamma")


def deterministic_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """One float32 array per key, in sorted key order, from one RandomState(seed) stream."""
    rng = np.random.RandomState(seed)
    out = {}
    for name in sorted(shapes):
        a = rng.standard_normal(shapes[name]).astype(np.float32) * _std_for(name)
        if _around_one(name):
            a += 1.0
        out[name] = a
    return out


def deterministic_images(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Smooth image-like normalised inputs (B, 3, H, W): low-frequency noise plus detail."""
    rng = np.random.RandomState(seed)
    coarse = rng.standard_normal((batch, 3, height // 16 + 1, width // 16 + 1))
    big = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)[:, :, :height, :width]
    return (big + 0.3 * rng.standard_normal((batch, 3, height, width))).astype(np.float32)


def load_deterministic(model, name: str) -> dict[str, tuple[int, ...]]:
    """Fill a torch ``model`` strictly with :func:`deterministic_state` seeded by ``name``
    (the configuration's name); returns its key -> shape map. DINOv3's buffers are set as a
    released checkpoint holds them (:func:`dinov3_buffers`), not drawn."""
    import torch
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    buffers = dinov3_buffers(shapes)
    state = deterministic_state({k: v for k, v in shapes.items() if k not in buffers},
                                name_seed(name))
    state.update(buffers)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return shapes


def bfloat16_rounded(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to the nearest bfloat16 (ties to even), kept as float32."""
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
    return bits.astype(np.uint32).view(np.float32)


def dinov3_buffers(shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The DINOv3 buffers among ``shapes``, with the values of a released file: the key-bias
    masks 1 over the query and value thirds, 0 over the keys; the RoPE periods (base 100)
    rounded to bfloat16, as the official checkpoints store them."""
    out = {}
    for name, shape in shapes.items():
        if name.endswith("qkv.bias_mask"):
            mask = np.ones(shape, np.float32)
            mask[shape[0] // 3: 2 * shape[0] // 3] = 0.0
            out[name] = mask
        elif name.endswith("rope_embed.periods"):
            quarter = shape[0]
            exponents = 2 * np.arange(quarter, dtype=np.float32) / np.float32(2 * quarter)
            out[name] = bfloat16_rounded(np.float32(100.0) ** exponents)
    return out


def name_seed(name: str) -> int:
    return sum(map(ord, name))


def key_arrays(name: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The stored record of a state dict's keys and shapes."""
    return {f"{name}/keys": np.array(sorted(shapes)),
            f"{name}/key_shapes": np.array([str(shapes[k]) for k in sorted(shapes)])}


def recorded_key_shapes(ref, name: str) -> dict[str, str]:
    """key -> "(shape)" as stored by :func:`key_arrays`."""
    return dict(zip(ref[f"{name}/keys"].tolist(), ref[f"{name}/key_shapes"].tolist()))


def state_key_shapes(model) -> dict[str, str]:
    """key -> "(shape)" of a torch model's state dict, comparable with the record."""
    return {k: str(tuple(v.shape)) for k, v in model.state_dict().items()}
