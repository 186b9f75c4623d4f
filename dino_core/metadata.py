"""The contract between exported files and the runtime: :class:`ModelMetadata`, parsed once.

``dino_export`` writes a :class:`ModelMetadata` into every ONNX file's ``metadata_props`` (one
string entry per field, JSON-encoded values, keys prefixed ``dino.``) and as a JSON file beside
every TensorRT engine. The runtime reads it back and needs nothing else. Every value is checked
by type and range when it is read (:meth:`ModelMetadata.validate`), because a model file is
untrusted input: a bad value is a one-line :class:`~dino_core.errors.ModelError`, never a
traceback or a silent NaN. No torch here.

Graph tensors:
    input  ``images``      float32 (B, 3, H, W), RGB, normalised with ``mean``/``std``
           ``images_bgr``  uint8 (B, H, W, 3), BGR, when exported with ``--preprocess``
    output ``cls``         (B, D)           [CLS] token after the final norm
           ``attn``        (B, heads, H/p, W/p) last block's [CLS] attention over patches
           ``patch``       (B, H/p * W/p, D) normalised patch tokens
           ``attn_registers`` (B, heads, R) the same [CLS] row over the R register tokens
                           (DINOv2 with registers, DINOv3's storage tokens; ``attn`` never
                           includes them)
Backbones without attention (``has_attention`` false: DINOv3's ConvNeXts) have ``cls`` (the
pooled last stage) and ``patch`` (its tokens, row-major) only; their ``patch_size`` is the
output stride (32), ``num_heads`` and ``num_registers`` are 0.
"""
from __future__ import annotations

import enum
import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from .constants import IMAGENET_MEAN, IMAGENET_STD, INPUT_BGR, INPUT_FLOAT, OUTPUT_NAMES
from .errors import ModelError, OptionError

PREFIX = "dino."
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
INT8_WEIGHT_BITS = (0, 7, 8)  # 0: not recorded (files written before weight_bits existed: 8)
FAMILIES = ("dino", "dinov2", "dinov3")
MAX_BATCH = 4096
MAX_SIDE = 8192          # pixels; larger inputs are refused before anything is allocated
MAX_JSON_BYTES = 1 << 20  # a sidecar or metadata value larger than this is not ours
# The range of every integer field of a model: what a metadata map may say, and what a
# checkpoint's weight shapes may describe (dino_models.checkpoint checks them before building).
INT_RANGES = {"patch_size": (1, 64), "embed_dim": (1, 16384), "num_heads": (1, 256),
              "depth": (1, 1000), "num_registers": (0, 64)}
# Normalisation: (pixel / 255 - mean) / std. A mean outside the pixel range or a std near 0
# (1/std scales the input) is not a normalisation but a way to feed the graph inf or NaN.
MEAN_RANGE = (0.0, 1.0)
STD_RANGE = (0.001, 10.0)


class InputFormat(str, enum.Enum):
    """Layout of the graph input."""

    FLOAT_NCHW = "float_nchw_rgb_normalized"   # float32 (B, 3, H, W), RGB, normalised
    UINT8_NHWC = "uint8_nhwc_bgr"              # uint8 (B, H, W, 3), BGR, raw camera pixels

    @property
    def input_name(self) -> str:
        return INPUT_BGR if self is InputFormat.UINT8_NHWC else INPUT_FLOAT


@dataclass(frozen=True)
class BatchSpec:
    """The batch dimension of a graph: ``fixed`` N, or dynamic ``(min, opt, max)``.

    Written as ``"N"`` or ``"dynamic:min,opt,max"`` (``opt`` is TensorRT's tuning point).
    """

    fixed: int | None = 1
    dynamic: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if (self.fixed is None) == (self.dynamic is None):
            raise OptionError("a batch is either fixed or dynamic")
        if self.fixed is not None and not 1 <= self.fixed <= MAX_BATCH:
            raise OptionError(f"batch {shown(self.fixed)}: expected 1..{MAX_BATCH}")
        if self.dynamic is not None:
            lo, opt, hi = self.dynamic
            if not 1 <= lo <= opt <= hi <= MAX_BATCH:
                raise OptionError(f"dynamic batch {shown(self.dynamic)}: expected "
                                  f"1 <= MIN <= OPT <= MAX <= {MAX_BATCH}")

    @classmethod
    def parse(cls, text: str) -> "BatchSpec":
        """``"8"`` or ``"dynamic:1,4,16"``; :class:`OptionError` for anything else."""
        if not isinstance(text, str):
            raise OptionError(f"batch {shown(text)}: expected a string like '1' or 'dynamic:1,4,8'")
        if text.startswith("dynamic:"):
            parts = text[len("dynamic:"):].split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
                raise OptionError(f"batch {shown(text)}: expected 'dynamic:MIN,OPT,MAX'")
            lo, opt, hi = (int(p) for p in parts)
            return cls(fixed=None, dynamic=(lo, opt, hi))
        if not text.strip().isdigit():
            raise OptionError(f"batch {shown(text)}: expected a number or 'dynamic:MIN,OPT,MAX'")
        return cls(fixed=int(text))

    @classmethod
    def of(cls, batch: int = 1, dynamic: tuple[int, int, int] | None = None) -> "BatchSpec":
        return cls(fixed=None, dynamic=tuple(dynamic)) if dynamic is not None else cls(batch)

    def __str__(self) -> str:
        if self.dynamic is None:
            return str(self.fixed)
        return "dynamic:" + ",".join(str(b) for b in self.dynamic)

    @property
    def is_dynamic(self) -> bool:
        return self.dynamic is not None

    @property
    def min(self) -> int:
        return self.fixed if self.dynamic is None else self.dynamic[0]

    @property
    def opt(self) -> int:
        return self.fixed if self.dynamic is None else self.dynamic[1]

    @property
    def max(self) -> int:
        """The largest batch one call may hold."""
        return self.fixed if self.dynamic is None else self.dynamic[2]

    def calls(self, requested: int) -> tuple[int, int | None]:
        """(frames per call, fixed batch to pad each call to, or None): a fixed graph takes
        exactly its batch; a dynamic one up to ``max``."""
        if self.fixed is not None:
            return self.fixed, self.fixed
        return min(requested, self.max), None


@dataclass(frozen=True)
class ModelMetadata:
    """What a runtime must know about an exported DINO model."""

    arch: str                      # family name, e.g. "vit_small"
    patch_size: int
    embed_dim: int
    num_heads: int
    depth: int
    img_size: tuple[int, int]      # (H, W) the graph was exported for
    input_name: str = INPUT_FLOAT
    input_format: InputFormat = InputFormat.FLOAT_NCHW
    outputs: dict[str, list] = field(default_factory=dict)  # name -> shape, "B" for batch
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    precision: str = "fp32"
    batch: BatchSpec = BatchSpec()
    family: str = "dino"           # dino | dinov2 | dinov3
    num_registers: int = 0         # DINOv2 registers, DINOv3 storage tokens (not in any output)
    has_attention: bool = True     # False: a ConvNeXt (no attn outputs, num_heads 0)
    checkpoint_sha256: str = ""
    toolkit_version: str = ""
    tensorrt_version: str = ""     # engines only: the TensorRT that built it (must match at load)
    weight_bits: int = 0           # int8: bits of the int8 weights, 7 (in -64..64: no int16
    #                                saturation on x86 CPUs without VNNI) or 8 (TensorRT graphs);
    #                                0: a float file, or an int8 file from before it was recorded

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", _pair(self.img_size))
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if not isinstance(self.batch, BatchSpec):
            object.__setattr__(self, "batch", BatchSpec.parse(self.batch))
        if not isinstance(self.input_format, InputFormat):
            object.__setattr__(self, "input_format", _input_format(self.input_format))

    # -- derived ------------------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (H/p, W/p)."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid
        return gh * gw

    def with_(self, **changes: Any) -> "ModelMetadata":
        return replace(self, **changes)

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> "ModelMetadata":
        """Raise :class:`ModelError` (one line) for a value out of type or range; returns self."""
        _check_str(self.arch, "arch", 64)
        if not isinstance(self.has_attention, bool):
            raise ModelError(f"metadata: has_attention {shown(self.has_attention)}: expected true "
                             "or false")
        for name, (low, high) in INT_RANGES.items():
            if not self.has_attention and name in ("num_heads", "num_registers"):
                low = high = 0          # nothing attends: no heads, no register tokens
            _check_int(getattr(self, name), name, low, high)
        if self.has_attention and self.embed_dim % self.num_heads:
            raise ModelError(f"metadata: embed_dim {self.embed_dim} is not a multiple of "
                             f"num_heads {self.num_heads}")
        h, w = self.img_size
        for side in (h, w):
            _check_int(side, "img_size", self.patch_size, MAX_SIDE)
            if side % self.patch_size:
                raise ModelError(f"metadata: img_size {h}x{w} is not a multiple of the patch "
                                 f"size {self.patch_size}")
        if self.input_name != self.input_format.input_name:
            raise ModelError(f"metadata: input_name {shown(self.input_name)} does not fit "
                             f"input_format {self.input_format.value!r}")
        for name, values, (low, high) in (("mean", self.mean, MEAN_RANGE),
                                          ("std", self.std, STD_RANGE)):
            if not all(math.isfinite(v) and low <= v <= high for v in values):
                raise ModelError(f"metadata: {name} {shown(list(values))}: expected values in "
                                 f"{low:g}..{high:g}")
        _check_choice(self.precision, "precision", PRECISIONS)
        self._check_weight_bits()
        _check_choice(self.family, "family", FAMILIES)
        for name in ("checkpoint_sha256", "toolkit_version", "tensorrt_version"):
            _check_str(getattr(self, name), name, 128, empty=True)
        self._check_outputs()
        return self

    def _check_weight_bits(self) -> None:
        bits = self.weight_bits
        allowed = INT8_WEIGHT_BITS if self.precision == "int8" else (0,)
        if not isinstance(bits, int) or isinstance(bits, bool) or bits not in allowed:
            what = ("0, 7 or 8 for an int8 file" if self.precision == "int8"
                    else f"0 for a {self.precision} file")
            raise ModelError(f"metadata: weight_bits {shown(bits)}: expected {what}")

    def expected_shapes(self) -> dict[str, list]:
        """The shape each output may have, from the other fields (no attention outputs for a
        backbone without attention)."""
        gh, gw = self.grid
        shapes = {"cls": ["B", self.embed_dim], "attn": ["B", self.num_heads, gh, gw],
                  "patch": ["B", gh * gw, self.embed_dim],
                  "attn_registers": ["B", self.num_heads, self.num_registers]}
        if not self.has_attention:
            del shapes["attn"], shapes["attn_registers"]
        return shapes

    def _check_outputs(self) -> None:
        if not isinstance(self.outputs, dict):
            raise ModelError(f"metadata: outputs must be a map of name to shape, got "
                             f"{type(self.outputs).__name__}")
        known = self.expected_shapes()
        for name in ("cls", "attn") if self.has_attention else ("cls",):
            if name not in self.outputs:
                raise ModelError(f"metadata: outputs lack {name!r} (have {shown(list(self.outputs))})")
        if "attn_registers" in self.outputs and not self.num_registers:
            raise ModelError("metadata: output attn_registers, but num_registers is 0")
        for name, shape in self.outputs.items():
            if name not in known:
                which = "" if self.has_attention else " (a backbone without attention)"
                raise ModelError(f"metadata: unknown output {shown(name)}{which}; expected "
                                 f"{', '.join(known)}")
            if not isinstance(shape, (list, tuple)) or list(shape) != known[name]:
                raise ModelError(f"metadata: output {name} has shape {shown(shape)}, the other fields "
                                 f"say {known[name]}")

    # -- serialisation ------------------------------------------------------------------------
    def to_plain(self) -> dict[str, Any]:
        """JSON-ready values: the batch as its string, the input format as its value."""
        values = asdict(self)
        values["batch"] = str(self.batch)
        values["input_format"] = self.input_format.value
        values["img_size"], values["mean"], values["std"] = (
            list(self.img_size), list(self.mean), list(self.std))
        return values

    def to_props(self) -> dict[str, str]:
        """Flat string map for ONNX ``metadata_props``."""
        return {PREFIX + k: json.dumps(v) for k, v in self.to_plain().items()}

    def to_json(self) -> str:
        return json.dumps(self.to_plain(), indent=2)

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "model") -> "ModelMetadata":
        """Inverse of :meth:`to_props`, validated; :class:`ModelError` naming what is wrong."""
        values = {}
        for key, raw in props.items():
            if key.startswith(PREFIX):
                values[key[len(PREFIX):]] = _loads(raw, f"{where}: metadata {key}")
        return cls.from_plain(values, where)

    @classmethod
    def from_json(cls, text: str, where: str = "metadata") -> "ModelMetadata":
        values = _loads(text, where)
        if not isinstance(values, dict):
            raise ModelError(f"{where}: expected a JSON object, got {type(values).__name__}")
        return cls.from_plain(values, where)

    @classmethod
    def from_json_file(cls, path: "str | os.PathLike") -> "ModelMetadata":
        """A JSON sidecar file, read with a size cap (an untrusted file can be any size)."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_JSON_BYTES + 1)
        except OSError as e:
            raise ModelError(f"{path}: cannot read ({e.strerror})") from None
        if len(data) > MAX_JSON_BYTES:
            raise ModelError(f"{path}: larger than {MAX_JSON_BYTES} bytes; not a dino-export "
                             "metadata file")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{path}: not UTF-8 JSON text; not a dino-export metadata "
                             "file") from None
        return cls.from_json(text, str(path))

    @classmethod
    def from_plain(cls, values: dict[str, Any], where: str = "model") -> "ModelMetadata":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        required = [f.name for f in fields(cls) if f.default is f.default_factory is MISSING]
        missing = [k for k in required if k not in values]
        if missing:
            raise ModelError(f"{where}: not a dino-export model: metadata lacks "
                             + ", ".join(PREFIX + k for k in missing)
                             + "; export it with dino-export")
        try:
            meta = cls(**values)
        except (OptionError, ModelError, TypeError, ValueError) as e:
            raise ModelError(f"{where}: bad metadata ({e})") from None
        try:
            return meta.validate()
        except ModelError as e:
            raise ModelError(f"{where}: {e}") from None


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: a message quotes an untrusted value, which
    can be a megabyte long."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr (over 4300 digits)
        text = f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _loads(text: Any, where: str) -> Any:
    if not isinstance(text, str) or len(text) > MAX_JSON_BYTES:
        raise ModelError(f"{where}: not a JSON value of at most {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ModelError(f"{where}: not valid JSON") from None


def _input_format(value: Any) -> InputFormat:
    choices = ", ".join(f.value for f in InputFormat)
    if not isinstance(value, str):
        raise ModelError(f"input_format {shown(value)}: expected one of {choices}")
    try:
        return InputFormat(value)
    except ValueError:
        raise ModelError(f"unknown input format {shown(value)}; expected one of {choices}") from None


def _pair(value: Any) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ModelError(f"img_size {shown(value)}: expected [H, W]")
    return tuple(value)


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ModelError(f"{name} {shown(value)}: expected three numbers (RGB)")
    return tuple(float(v) for v in value)


def _check_int(value: Any, name: str, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ModelError(f"metadata: {name} {shown(value)}: expected an integer in {low}..{high}")


def _check_str(value: Any, name: str, limit: int, empty: bool = False) -> None:
    if not isinstance(value, str) or len(value) > limit or (not empty and not value):
        raise ModelError(f"metadata: {name} {shown(value)}: expected a string of at most {limit} "
                         "characters")


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelError(f"metadata: {name} {shown(value)}: expected one of {', '.join(choices)}")


__all__ = ["BatchSpec", "InputFormat", "ModelMetadata", "OUTPUT_NAMES", "PRECISIONS"]
