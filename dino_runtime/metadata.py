"""The contract between exported files and the runtime: metadata keys and tensor names.

``dino_export`` writes a :class:`ModelMetadata` into every ONNX file's ``metadata_props`` (one
string entry per field, JSON-encoded values, keys prefixed ``dino.``) and as a JSON file beside
every TensorRT engine. The runtime reads it back and needs nothing else. No torch here.

Graph tensors:
    input  ``images``      float32 (B, 3, H, W), RGB, normalised with ``mean``/``std``
           ``images_bgr``  uint8 (B, H, W, 3), BGR, when exported with ``--preprocess``
    output ``cls``         (B, D)           [CLS] token after the final norm
           ``attn``        (B, heads, H/p, W/p) last block's [CLS] attention over patches
           ``patch``       (B, H/p * W/p, D) normalised patch tokens
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields

PREFIX = "dino."
INPUT_FLOAT = "images"
INPUT_BGR = "images_bgr"
OUTPUT_NAMES = ("cls", "attn", "patch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelMetadata:
    """What a runtime must know about an exported DINO model."""

    arch: str                      # family name, e.g. "vit_small"
    patch_size: int
    embed_dim: int
    num_heads: int
    depth: int
    img_size: tuple[int, int]      # (H, W) the graph was exported for
    input_name: str = INPUT_FLOAT
    input_format: str = "float_nchw_rgb_normalized"   # or "uint8_nhwc_bgr"
    outputs: dict[str, list] = field(default_factory=dict)  # name -> shape, "B" for batch
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    precision: str = "fp32"
    batch: str = "1"               # "N" fixed, or "dynamic:min,opt,max"
    checkpoint_sha256: str = ""
    toolkit_version: str = ""
    tensorrt_version: str = ""     # engines only: the TensorRT that built it (must match at load)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (H/p, W/p)."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX ``metadata_props``."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "ModelMetadata":
        """Inverse of :meth:`to_props`; raises ``ValueError`` naming a missing key."""
        known = {f.name for f in fields(cls)}
        values = {}
        for key, raw in props.items():
            if key.startswith(PREFIX) and key[len(PREFIX):] in known:
                values[key[len(PREFIX):]] = json.loads(raw)
        required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        missing = [k for k in required if k not in values]
        if missing:
            raise ValueError("not a dino-export model: metadata lacks "
                             + ", ".join(PREFIX + k for k in missing))
        return cls._from_plain(values)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        return cls._from_plain(json.loads(text))

    @classmethod
    def _from_plain(cls, values: dict) -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        for key in ("img_size", "mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

