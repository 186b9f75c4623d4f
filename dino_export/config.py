"""The export settings that cross module boundaries: :class:`ExportConfig`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from dino_core.constants import OUTPUT_NAMES as OUTPUT_CHOICES
from dino_core.errors import OptionError
from dino_core.metadata import BatchSpec

from .targets import target_for

MIN_OPSET = 17
MAX_OPSET = 23     # the newest opset the exporter and ONNX Runtime 1.31 were tested with
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how.

    ``img_size`` is (H, W) in pixels, both multiples of the patch size. ``batch`` fixes the
    batch dimension; ``dynamic_batch`` = (min, opt, max) makes it symbolic instead (``opt`` is
    used for TensorRT's optimisation profile). ``outputs`` is any of cls/attn/patch/attn_registers,
    in that order in the graph; None (the default) is the model's default, see
    :func:`resolve_outputs`. ``preprocess`` bakes uint8 BGR (B, H, W, 3) -> normalised float
    (B, 3, H, W) into the graph.
    """

    img_size: tuple[int, int] = (224, 224)
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None
    outputs: tuple[str, ...] | None = None
    opset: int = DEFAULT_OPSET
    precision: str = "fp32"
    preprocess: bool = False
    simplify: bool = True
    calib_data: Path | None = None
    calib_count: int = 64
    checkpoint_key: str = "teacher"
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "img_size", tuple(int(s) for s in self.img_size))
        if self.outputs is not None:
            # Graph order is always cls, attn, patch, whatever order the user named them in.
            known = tuple(o for o in OUTPUT_CHOICES if o in self.outputs)
            object.__setattr__(self, "outputs",
                               known + tuple(o for o in self.outputs if o not in known))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`OptionError` (one line) for a value no export could honour."""
        if len(self.img_size) != 2 or min(self.img_size) <= 0:
            raise OptionError(f"--img-size needs two positive sides H W, got {self.img_size}")
        unknown = [o for o in self.outputs or () if o not in OUTPUT_CHOICES]
        if unknown or self.outputs == ():
            raise OptionError(f"unknown output {unknown[0] if unknown else '(none)'!r}; "
                              f"choose from {', '.join(OUTPUT_CHOICES)}")
        target = target_for("onnx", self.precision)
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise OptionError(f"--opset {self.opset}: expected {MIN_OPSET}..{MAX_OPSET} "
                              f"(LayerNormalization needs >= {MIN_OPSET})")
        if self.batch < 1:
            raise OptionError(f"--batch must be >= 1, got {self.batch}")
        if self.dynamic_batch is not None:
            lo, opt, hi = self.dynamic_batch
            if not 1 <= lo <= opt <= hi:
                raise OptionError(f"--dynamic-batch needs 1 <= MIN <= OPT <= MAX, "
                                  f"got {lo} {opt} {hi}")
        BatchSpec.of(self.batch, self.dynamic_batch)  # also checks the upper bound, MAX_BATCH
        if "--calib-data" in target.requires and self.calib_data is None:
            raise OptionError(f"{target.name} needs calibration images: pass --calib-data DIR "
                              "(a folder of JPEG/PNG images like the ones you will run on)")
        if self.calib_count < 1:
            raise OptionError(f"--calib-count must be >= 1, got {self.calib_count}")

    @property
    def batch_spec(self) -> BatchSpec:
        """The metadata's batch: fixed ``batch`` or dynamic ``(min, opt, max)``."""
        return BatchSpec.of(self.batch, self.dynamic_batch)

    @property
    def example_batch(self) -> int:
        """Batch of the tracing example: the fixed batch, or 2 for a dynamic one."""
        return self.batch if self.dynamic_batch is None else max(2, self.dynamic_batch[0])

    def with_(self, **changes) -> "ExportConfig":
        return replace(self, **changes)


# What an export writes when no --outputs is given: the [CLS] embedding and the attention a ViT
# is exported for; a backbone without attention (a ConvNeXt) gives its patch tokens instead.
DEFAULT_OUTPUTS = ("cls", "attn")
NO_ATTENTION_OUTPUTS = ("cls", "patch")
ATTENTION_OUTPUTS = ("attn", "attn_registers")


def resolve_outputs(config: ExportConfig, model, arch: str = "") -> ExportConfig:
    """``config`` with its outputs for ``model`` (a :class:`dino_models.backbone.Backbone`):
    the default ones when none were given; :class:`OptionError` (one line) for an attention
    output of a backbone without attention, or for register attention without registers."""
    name = arch or type(model).__name__
    if config.outputs is None:
        return config.with_(outputs=DEFAULT_OUTPUTS if model.has_attention
                            else NO_ATTENTION_OUTPUTS)
    asked = [o for o in config.outputs if o in ATTENTION_OUTPUTS]
    if asked and not model.has_attention:
        raise OptionError(f"--outputs {asked[0]}: {name} has no attention (a ConvNeXt); its "
                          f"outputs are {', '.join(NO_ATTENTION_OUTPUTS)}")
    if "attn_registers" in config.outputs and not model.num_registers:
        raise OptionError(f"--outputs attn_registers needs a model with register tokens "
                          f"(DINOv2 ..._reg, DINOv3); {name} has none")
    return config


def check_img_size(img_size: tuple[int, int], patch_size: int) -> None:
    """Raise :class:`OptionError` naming the nearest valid sizes when a side is not a multiple."""
    bad = [s for s in img_size if s % patch_size]
    if not bad:
        return
    h, w = img_size
    raise OptionError(f"--img-size {h} {w}: sides must be multiples of the patch size "
                    f"{patch_size}; nearest valid: H {_nearest(h, patch_size)}, "
                    f"W {_nearest(w, patch_size)}")


def _nearest(side: int, patch_size: int) -> str:
    """``"224"`` for a valid side, ``"224 or 232"`` for one in between."""
    if side % patch_size == 0:
        return str(side)
    lo = side // patch_size * patch_size
    return f"{lo} or {lo + patch_size}" if lo else str(patch_size)
