"""The export settings that cross module boundaries: :class:`ExportConfig`."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from dino_train.errors import UserError

OUTPUT_CHOICES = ("cls", "attn", "patch")
PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET = 17
DEFAULT_OPSET = 18


@dataclass(frozen=True)
class ExportConfig:
    """What to export and how.

    ``img_size`` is (H, W) in pixels, both multiples of the patch size. ``batch`` fixes the
    batch dimension; ``dynamic_batch`` = (min, opt, max) makes it symbolic instead (``opt`` is
    used for TensorRT's optimisation profile). ``outputs`` is any of cls/attn/patch, in that
    order in the graph. ``preprocess`` bakes uint8 BGR (B, H, W, 3) -> normalised float
    (B, 3, H, W) into the graph.
    """

    img_size: tuple[int, int] = (224, 224)
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None
    outputs: tuple[str, ...] = ("cls", "attn")
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
        # Graph order is always cls, attn, patch, whatever order the user named them in.
        known = tuple(o for o in OUTPUT_CHOICES if o in self.outputs)
        object.__setattr__(self, "outputs", known + tuple(o for o in self.outputs if o not in known))
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` (one line) for a value no export could honour."""
        if len(self.img_size) != 2 or min(self.img_size) <= 0:
            raise UserError(f"--img-size needs two positive sides H W, got {self.img_size}")
        unknown = [o for o in self.outputs if o not in OUTPUT_CHOICES]
        if unknown or not self.outputs:
            raise UserError(f"unknown output {unknown[0] if unknown else '(none)'!r}; "
                            f"choose from {', '.join(OUTPUT_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; "
                            f"choose from {', '.join(PRECISIONS)}")
        if self.opset < MIN_OPSET:
            raise UserError(f"--opset {self.opset} is too old: LayerNormalization needs "
                            f">= {MIN_OPSET}")
        if self.batch < 1:
            raise UserError(f"--batch must be >= 1, got {self.batch}")
        if self.dynamic_batch is not None:
            lo, opt, hi = self.dynamic_batch
            if not 1 <= lo <= opt <= hi:
                raise UserError(f"--dynamic-batch needs 1 <= MIN <= OPT <= MAX, "
                                f"got {lo} {opt} {hi}")
        if self.precision == "int8" and self.calib_data is None:
            raise UserError("int8 needs calibration images: pass --calib-data DIR "
                            "(a folder of JPEG/PNG images like the ones you will run on)")

    @property
    def batch_spec(self) -> str:
        """Metadata form: ``"N"`` or ``"dynamic:min,opt,max"``."""
        if self.dynamic_batch is None:
            return str(self.batch)
        return "dynamic:" + ",".join(str(b) for b in self.dynamic_batch)

    @property
    def example_batch(self) -> int:
        """Batch of the tracing example: the fixed batch, or 2 for a dynamic one."""
        return self.batch if self.dynamic_batch is None else max(2, self.dynamic_batch[0])

    def with_(self, **changes) -> "ExportConfig":
        return replace(self, **changes)


def check_img_size(img_size: tuple[int, int], patch_size: int) -> None:
    """Raise :class:`UserError` naming the nearest valid sizes when a side is not a multiple."""
    bad = [s for s in img_size if s % patch_size]
    if not bad:
        return
    h, w = img_size
    raise UserError(f"--img-size {h} {w}: sides must be multiples of the patch size "
                    f"{patch_size}; nearest valid: H {_nearest(h, patch_size)}, "
                    f"W {_nearest(w, patch_size)}")


def _nearest(side: int, patch_size: int) -> str:
    """``"224"`` for a valid side, ``"224 or 232"`` for one in between."""
    if side % patch_size == 0:
        return str(side)
    lo = side // patch_size * patch_size
    return f"{lo} or {lo + patch_size}" if lo else str(patch_size)
