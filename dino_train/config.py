"""A run's configuration: every option once, with its default, help, choices and valid range.

:class:`TrainConfig` is the single declaration: ``dino-train`` builds its options from these
fields (:mod:`dino_train.cli`), ``config.json`` and the checkpoint's ``args`` are written from
them, and :meth:`TrainConfig.validate` checks every value against its declared range, so the
command line and Python callers get the same one-line :class:`OptionError`.

This module imports neither torch nor click: the command line is built from it in a base install
(where ``dino-train`` only says which extra to install), and ``OMP_WAIT_POLICY`` must be set
before torch is first imported (:mod:`dino_train.cpu_tuning`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dino_core.errors import OptionError

if TYPE_CHECKING:
    from dino_models.archs import Arch

    from .data import CropConfig

OPTIMIZERS = ("adamw", "sgd", "lars")
CENTERINGS = ("center", "sinkhorn_knopp", "none")
TRAIN_PRECISIONS = ("fp32", "bf16", "fp16")
PRECISIONS = ("auto",) + TRAIN_PRECISIONS
DEVICES = ("auto", "cpu", "cuda")
AUGMENTATIONS = ("pil", "batched")
STUDENT_TEMP = 0.1   # the student's temperature (official, fixed)


@dataclass(frozen=True)
class Range:
    """Valid numbers: ``low``/``high`` bounds (None: unbounded), each inclusive unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {_show(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_show(self.low)}, {_show(self.high)}"
                f"{')' if self.high_open else ']'}")


AT_LEAST_0, AT_LEAST_1, POSITIVE = Range(0), Range(1), Range(0, low_open=True)
UNIT, SCALE = Range(0, 1), Range(0, 1, low_open=True)


@dataclass(frozen=True)
class Option:
    """How a field appears on the command line (kept in the field's metadata)."""

    help: str
    official: bool = False             # a main_dino.py argument: --under_score alias; bools take
                                       # a value (--norm_last_layer false), as officially
    choices: tuple[str, ...] = ()
    range: Range | None = None         # for a pair: each number, and MIN <= MAX
    flag: str = ""                     # a toolkit bool: "--x/--no-x", or one flag that sets
                                       # the opposite of the default ("--deterministic-crops")
    default_text: str = ""             # --help's text for a None default


def option(default: Any, help: str, **how: Any) -> Any:
    """A :class:`TrainConfig` field with its :class:`Option`."""
    return field(default=default, metadata={"option": Option(help, **how)})


def option_of(f: dataclasses.Field) -> Option:
    return f.metadata["option"]


def flag_name(name: str) -> str:
    """The option's command-line spelling used in messages: ``--batch-size-per-gpu``."""
    return f"--{name.replace('_', '-')}"


@dataclass
class TrainConfig:
    """A run's configuration; field names are the official ``main_dino.py`` argument names."""

    # -- official hyperparameters, official defaults ------------------------------------------
    arch: str = option("vit_small", "vit_tiny|vit_small|vit_base|vit_large, or a short name "
                       "like vit_s8", official=True)
    patch_size: int | None = option(None, "patch size in pixels", official=True, range=AT_LEAST_1,
                                    default_text="16, or the short name's")
    out_dim: int = option(65536, "output dimension of the DINO head", official=True,
                          range=AT_LEAST_1)
    norm_last_layer: bool = option(True, "weight-normalise the head's last layer", official=True)
    momentum_teacher: float = option(0.996, "base EMA momentum of the teacher (cosine to "
                                     "--momentum-teacher-end)", official=True, range=UNIT)
    use_bn_in_head: bool = option(False, "batch norm in the projection head", official=True)
    warmup_teacher_temp: float = option(0.04, "initial teacher temperature", official=True,
                                        range=POSITIVE)
    teacher_temp: float = option(0.04, "teacher temperature after warm-up", official=True,
                                 range=POSITIVE)
    warmup_teacher_temp_epochs: int = option(0, "epochs of teacher temperature warm-up",
                                             official=True, range=AT_LEAST_0)
    weight_decay: float = option(0.04, "initial weight decay", official=True, range=AT_LEAST_0)
    weight_decay_end: float = option(0.4, "final weight decay (cosine schedule)", official=True,
                                     range=AT_LEAST_0)
    clip_grad: float = option(3.0, "per-parameter gradient norm clip; 0 disables",
                              official=True, range=AT_LEAST_0)
    batch_size_per_gpu: int = option(64, "images per process and step", official=True,
                                     range=AT_LEAST_1)
    epochs: int = option(100, "epochs of training", official=True, range=AT_LEAST_1)
    freeze_last_layer: int = option(1, "epochs during which the head's last layer is frozen",
                                    official=True, range=AT_LEAST_0)
    lr: float = option(0.0005, "peak learning rate for a total batch of 256 (scaled linearly)",
                       official=True, range=AT_LEAST_0)
    warmup_epochs: int = option(10, "epochs of linear lr warm-up", official=True,
                                range=AT_LEAST_0)
    min_lr: float = option(1e-6, "final learning rate", official=True, range=AT_LEAST_0)
    optimizer: str = option("adamw", "optimizer", official=True, choices=OPTIMIZERS)
    # 1 would drop every residual branch of the student at every step
    drop_path_rate: float = option(0.1, "stochastic depth rate of the student", official=True,
                                   range=Range(0, 1, high_open=True))
    global_crops_scale: tuple[float, float] = option(
        (0.4, 1.0), "scale range of the global crops", official=True, range=SCALE)
    local_crops_number: int = option(8, "number of local crops", official=True,
                                     range=AT_LEAST_0)
    local_crops_scale: tuple[float, float] = option(
        (0.05, 0.4), "scale range of the local crops", official=True, range=SCALE)
    data_path: str = option("", "folder of images and/or videos (ImageFolder layout or flat); "
                            "required", official=True)
    output_dir: str = option(".", "where checkpoints and logs go", official=True)
    saveckp_freq: int = option(20, "also keep checkpointNNNN.pth every this many epochs; 0: "
                               "never", official=True, range=AT_LEAST_0)
    # NumPy's global seed takes 32 bits
    seed: int = option(0, "random seed", official=True, range=Range(0, 2**32 - 1))
    num_workers: int = option(10, "data loading processes per training process", official=True,
                              range=AT_LEAST_0)
    dist_url: str = option("env://", "torch.distributed init method", official=True)
    # -- toolkit options ----------------------------------------------------------------------
    device: str = option("auto", "training device", choices=DEVICES)
    precision: str = option("auto", "auto: fp16 with a grad scaler on CUDA (official), bf16 on "
                            "CPUs with native bf16, else fp32", choices=PRECISIONS)
    compile: bool = option(False, "torch.compile the backbones", flag="--compile/--no-compile")
    max_steps: int | None = option(None, "stop after this many steps in total",
                                   range=AT_LEAST_0)
    max_minutes: float | None = option(None, "stop after this much wall-clock time (this "
                                       "invocation)", range=POSITIVE)
    resume: bool = option(True, "continue from OUTPUT_DIR/checkpoint.pth when it exists",
                          flag="--resume/--no-resume")
    ckpt_every_steps: int = option(0, "also write checkpoint.pth every N steps (long CPU "
                                   "epochs); 0: per epoch only", range=AT_LEAST_0)
    log_every: int = option(10, "steps per log.jsonl record", range=AT_LEAST_1)
    global_crop_size: int = option(224, "global crop side in pixels, a multiple of the patch "
                                   "size", range=AT_LEAST_1)
    local_crop_size: int = option(96, "local crop side in pixels, a multiple of the patch size",
                                  range=AT_LEAST_1)
    depth: int | None = option(None, "number of blocks", range=AT_LEAST_1,
                               default_text="the arch's")
    video_stride: int = option(15, "use every Nth frame of the videos in the data folder",
                               range=AT_LEAST_1)
    color_jitter: float = option(1.0, "colour-jitter strength: 1 is the official (0.4, 0.4, "
                                 "0.2, 0.1); 2 is close to SimCLR's CIFAR strength (no k-NN gain "
                                 "measured on CIFAR-10 in 30 CPU minutes: BENCHMARKS.md)",
                                 range=Range(0, 5))
    centering: str = option("center", "teacher normalisation: the official running centre, "
                            "DINOv2's Sinkhorn-Knopp, or none (sharpening alone, which collapses "
                            "to one prototype: docs/understanding-dino.md)", choices=CENTERINGS)
    center_momentum: float = option(0.9, "momentum of the teacher's running centre (official: "
                                    "0.9, fixed)", range=Range(0, 1, high_open=True))
    sharpening: bool = option(True, "sharpen the teacher (--teacher-temp below the student's "
                              f"{STUDENT_TEMP}); --no-sharpening puts the teacher at the "
                              "student's temperature (centering alone, which collapses to a "
                              "uniform output: docs/understanding-dino.md)",
                              flag="--sharpening/--no-sharpening")
    head_hidden_dim: int = option(2048, "width of the head's hidden layers (official: 2048, "
                                  "fixed)", range=AT_LEAST_1)
    head_bottleneck_dim: int = option(256, "width of the head's L2-normalised bottleneck "
                                      "(official: 256, fixed)", range=AT_LEAST_1)
    momentum_teacher_end: float = option(1.0, "final EMA momentum of the teacher (official: 1, "
                                         "fixed; DINOv2's final_momentum_teacher). Below 1 the "
                                         "teacher keeps following the student to the end of a "
                                         "short schedule", range=UNIT)
    koleo_loss_weight: float = option(0.0, "weight of DINOv2's KoLeo term on the student [CLS] "
                                      "features (DINOv2: 0.1)", range=AT_LEAST_0)
    ibot_loss_weight: float = option(0.0, "weight of iBOT's masked-patch term (iBOT and DINOv2: "
                                     "1.0); 0: plain DINO", range=AT_LEAST_0)
    ibot_mask_probability: float = option(0.5, "share of the global crops that get masked "
                                          "patches", range=SCALE)
    ibot_mask_ratio: tuple[float, float] = option(
        (0.1, 0.5), "MIN MAX share of a masked crop's patches that are hidden",
        range=Range(0, 1, low_open=True, high_open=True))
    augmentation: str = option("pil", "pil: the official per-image PIL views, made by the "
                               "loader workers; batched: the same transforms on whole batches, "
                               "made on the training device (workers only decode; bilinear "
                               "resampling: see dino_train/batched_augment.py)",
                               choices=AUGMENTATIONS)
    random_crops: bool = option(True, "resize instead of random crops and colour changes "
                                "(parity tests)", flag="--deterministic-crops")
    knn_train_data: str | None = option(None, "labelled folder (<class>/<images>) for periodic "
                                        "k-NN monitoring")
    knn_val_data: str | None = option(None, "labelled folder for k-NN monitoring")
    knn_every_steps: int = option(0, "steps between k-NN monitoring runs; 0: never",
                                  range=AT_LEAST_0)
    knn_max_per_class: int | None = option(None, "k-NN monitoring: the first N images of each "
                                           "class", range=AT_LEAST_1)
    collapse_after: int = option(100, "collapse detection: steps before the first check (the "
                                 "start of a run may look collapsed)", range=AT_LEAST_0)
    collapse_window: int = option(50, "collapse detection: steps a collapse must last before it "
                                  "is reported", range=AT_LEAST_1)
    stop_on_collapse: bool = option(False, "when a collapse is detected, write the checkpoint and "
                                    "stop with exit status 1 (default: warn once and go on)",
                                    flag="--stop-on-collapse")
    progress: bool = option(True, "a progress bar on stderr", flag="--progress/--no-progress")

    def validate(self) -> None:
        """Raise :class:`OptionError` (one line naming the option and what it takes) for a value
        the run cannot use; every field is checked against its declared choices and range."""
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if not self.data_path:
            raise OptionError("--data-path is required: a folder of images and/or videos")
        for name in ("warmup_epochs", "warmup_teacher_temp_epochs"):
            if getattr(self, name) > self.epochs:
                raise OptionError(f"{flag_name(name)} {getattr(self, name)}: must be in [0, "
                                  f"--epochs {self.epochs}]")
        if not self.sharpening and (self.teacher_temp, self.warmup_teacher_temp) != \
                (_default("teacher_temp"), _default("warmup_teacher_temp")):
            raise OptionError(f"--no-sharpening puts the teacher at the student's temperature "
                              f"{STUDENT_TEMP}: drop --teacher-temp and --warmup-teacher-temp")
        if (self.knn_train_data is None) != (self.knn_val_data is None):
            raise OptionError("k-NN monitoring needs both --knn-train-data and --knn-val-data")
        self._check_crop_sizes()

    def _check_crop_sizes(self) -> None:
        """The ViT cuts a crop into whole patches (see dino_models.vision_transformer)."""
        arch = self.resolved_arch()
        for name in ("global_crop_size", "local_crop_size"):
            size = getattr(self, name)
            if size % arch.patch_size:
                raise OptionError(f"{flag_name(name)} {size}: must be a multiple of the patch "
                                  f"size {arch.patch_size} ({arch.short_name})")

    def resolved_arch(self) -> Arch:
        from dino_models.archs import resolve_arch  # torch: see the module docstring
        try:
            arch = resolve_arch(self.arch.replace("deit", "vit"), self.patch_size)
        except ValueError as e:
            raise OptionError(str(e)) from None
        if arch.family.kind != "dino":  # DINOv2/v3 backbones are loaded, exported and run
            kind = "DINOv3" if arch.family.kind == "dinov3" else "DINOv2"
            raise OptionError(f"--arch {self.arch}: dino-train trains DINO ViTs (vit_*); {kind} "
                              "backbones load from their checkpoints in dino-export and dino-run")
        return arch

    def resolved_depth(self) -> int:
        """``--depth``, or the arch's own number of blocks when none is given."""
        return self.depth or self.resolved_arch().family.depth

    def teacher_temps(self) -> tuple[float, float]:
        """(warm-up, final) teacher temperature: the options', or the student's with
        ``--no-sharpening``."""
        if not self.sharpening:
            return STUDENT_TEMP, STUDENT_TEMP
        return self.warmup_teacher_temp, self.teacher_temp

    def crops(self) -> CropConfig:
        from .data import CropConfig  # torch: see the module docstring
        return CropConfig(tuple(self.global_crops_scale), tuple(self.local_crops_scale),
                          self.local_crops_number, self.global_crop_size, self.local_crop_size,
                          self.random_crops, self.color_jitter)

    def official_args(self) -> argparse.Namespace:
        """The ``args`` entry of the checkpoint, with the official names and plain values."""
        arch = self.resolved_arch()
        values = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in dataclasses.asdict(self).items()}
        warmup_temp, temp = self.teacher_temps()  # what the run uses, for official readers
        values.update(arch=arch.family.name, patch_size=arch.patch_size,
                      warmup_teacher_temp=warmup_temp, teacher_temp=temp,
                      use_fp16=self.precision == "fp16", local_rank=0)
        return argparse.Namespace(**values)


def _default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)


def _check_field(f: dataclasses.Field, value: Any) -> None:
    how, name = option_of(f), flag_name(f.name)
    if how.choices and value not in how.choices:
        raise OptionError(f"{name} {value!r}: choose one of {', '.join(how.choices)}")
    if how.range is None or value is None:
        return
    numbers = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    for number in numbers:
        if number not in how.range:
            raise OptionError(f"{name} {_show(value)}: must be {how.range}")
    if len(numbers) > 1 and (len(numbers) != 2 or numbers[0] > numbers[1]):
        raise OptionError(f"{name} {_show(value)}: takes MIN MAX, each {how.range}, "
                          "with MIN <= MAX")


def _show(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(_show(v) for v in value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)
