"""The DINO training loop: official recipe, fused updates, resumable, distributed.

Read top to bottom: :class:`TrainConfig` (every official hyperparameter, official defaults, plus
the toolkit's options), the builders (networks, loss, optimiser, data), :func:`train_step` (one
optimisation step), and :func:`train` (epochs, logging, checkpoints).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from dino_core.errors import OptionError, UserError
from dino_core.fileio import atomic_write_text
from dino_core.precision import resolve_precision
from dino_models import DINOHead
from dino_models.archs import Arch, resolve_arch
from dino_models.checkpoint import TOOLKIT_KEY, strip_prefix
from dino_models.safe_load import load_pickle_checkpoint

from . import distributed as D
from .batched_augment import BatchedMultiCrop, SourceImage, collate_sources
from .cpu_tuning import keep_freed_memory
from .data import (
    CropConfig,
    EpochSampler,
    MultiCropAugmentation,
    MultiCropDataset,
    build_loader,
    scan_folder,
    steps_per_epoch,
)
from .data import _warn as data_warn
from .ibot import IBOTPatchLoss
from .logging_utils import IntervalMeter, JsonlLog, plot_training
from .loss import CENTERINGS, DINOLoss, koleo_loss
from .multicrop import MultiCropWrapper
from .optim import (
    OPTIMIZERS,
    LastLayerFreeze,
    build_optimizer,
    cancel_last_layer_grads,
    clip_gradients,
    ema_update,
    params_groups,
)
from .schedules import Schedules, build_schedules
from .train_checkpoint import FORMAT_VERSION, atomic_save, rng_state, set_rng_state, with_prefix

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_WORKER_NICENESS = 19   # data workers yield the cores to the training threads on CPU
DEVICES = ("auto", "cpu", "cuda")
AUGMENTATIONS = ("pil", "batched")


@dataclass
class TrainConfig:
    """A run's configuration; field names are the official ``main_dino.py`` argument names."""

    # -- official hyperparameters, official defaults ------------------------------------------
    arch: str = "vit_small"
    patch_size: int | None = None          # None: 16, or the one a short name implies (vit_s8)
    out_dim: int = 65536
    head_hidden_dim: int = 2048      # the official DINOHead's fixed sizes (DINOv2 exposes them)
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0  # the official schedule's fixed end (DINOv2 exposes it)
    use_bn_in_head: bool = False
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    clip_grad: float = 3.0
    batch_size_per_gpu: int = 64
    epochs: int = 100
    freeze_last_layer: int = 1
    lr: float = 0.0005
    warmup_epochs: int = 10
    min_lr: float = 1e-6
    optimizer: str = "adamw"
    drop_path_rate: float = 0.1
    global_crops_scale: tuple[float, float] = (0.4, 1.0)
    local_crops_number: int = 8
    local_crops_scale: tuple[float, float] = (0.05, 0.4)
    data_path: str = ""
    output_dir: str = "."
    saveckp_freq: int = 20
    seed: int = 0
    num_workers: int = 10
    dist_url: str = "env://"
    # -- toolkit options ----------------------------------------------------------------------
    device: str = "auto"
    precision: str = "auto"        # auto: fp16 on CUDA (the official use_fp16), bf16/fp32 on CPU
    compile: bool = False
    max_steps: int | None = None   # stop after this many optimisation steps in total
    max_minutes: float | None = None  # stop after this wall-clock time (this invocation)
    resume: bool = True
    ckpt_every_steps: int = 0      # also write checkpoint.pth every N steps (0: per epoch only)
    log_every: int = 10
    global_crop_size: int = 224
    local_crop_size: int = 96
    depth: int | None = None       # None: the architecture's depth
    video_stride: int = 15
    color_jitter: float = 1.0      # colour-jitter strength (1: official)
    centering: str = "center"      # teacher: official running centre, or DINOv2's sinkhorn_knopp
    koleo_loss_weight: float = 0.0  # DINOv2's KoLeo term on the student [CLS] (0: official)
    ibot_loss_weight: float = 0.0   # iBOT's masked-patch term (0: official DINO)
    ibot_mask_probability: float = 0.5          # share of global crops that are masked
    ibot_mask_ratio: tuple[float, float] = (0.1, 0.5)  # share of a masked crop's patches
    random_crops: bool = True      # False: deterministic views (parity and DDP tests)
    augmentation: str = "pil"      # pil: per image in the workers; batched: per batch, on device
    knn_train_data: str | None = None
    knn_val_data: str | None = None
    knn_every_steps: int = 0
    knn_max_per_class: int | None = None
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`UserError` for values the run cannot use."""
        checks = [
            (self.optimizer in OPTIMIZERS, f"--optimizer {self.optimizer!r}: choose one of "
                                           f"{', '.join(OPTIMIZERS)}"),
            (self.precision in PRECISIONS, f"--precision {self.precision!r}: choose one of "
                                           f"{', '.join(PRECISIONS)}"),
            (self.device in DEVICES, f"--device {self.device!r}: choose one of {', '.join(DEVICES)}"),
            (self.augmentation in AUGMENTATIONS, f"--augmentation {self.augmentation!r}: choose "
                                                 f"one of {', '.join(AUGMENTATIONS)}"),
            (self.batch_size_per_gpu >= 1, "--batch-size-per-gpu must be at least 1"),
            (self.epochs >= 1, "--epochs must be at least 1"),
            (0 <= self.warmup_epochs <= self.epochs, "--warmup-epochs must be in [0, epochs]"),
            (0 <= self.warmup_teacher_temp_epochs <= self.epochs,
             "--warmup-teacher-temp-epochs must be in [0, epochs]"),
            (self.out_dim >= 1, "--out-dim must be at least 1"),
            (0 <= self.momentum_teacher <= 1 and 0 <= self.momentum_teacher_end <= 1,
             "--momentum-teacher and --momentum-teacher-end must be in [0, 1]"),
            (self.head_hidden_dim >= 1 and self.head_bottleneck_dim >= 1,
             "--head-hidden-dim and --head-bottleneck-dim must be at least 1"),
            (self.centering in CENTERINGS, f"--centering {self.centering!r}: choose one of "
                                           f"{', '.join(CENTERINGS)}"),
            (self.koleo_loss_weight >= 0, "--koleo-loss-weight must be >= 0"),
            (self.ibot_loss_weight >= 0, "--ibot-loss-weight must be >= 0"),
            (0 < self.ibot_mask_probability <= 1, "--ibot-mask-probability must be in (0, 1]"),
            (len(self.ibot_mask_ratio) == 2
             and 0 < self.ibot_mask_ratio[0] <= self.ibot_mask_ratio[1] < 1,
             "--ibot-mask-ratio takes MIN MAX with 0 < MIN <= MAX < 1"),
            (self.local_crops_number >= 0, "--local-crops-number must be >= 0"),
            (self.max_steps is None or self.max_steps >= 0, "--max-steps must be >= 0"),
            (self.log_every >= 1, "--log-every must be at least 1"),
            (bool(self.data_path), "--data-path is required"),
            (len(self.global_crops_scale) == 2 and len(self.local_crops_scale) == 2,
             "crop scales take two numbers (min max)"),
            ((self.knn_train_data is None) == (self.knn_val_data is None),
             "k-NN monitoring needs both --knn-train-data and --knn-val-data"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message)
        self.resolved_arch()

    def resolved_arch(self) -> Arch:
        try:
            arch = resolve_arch(self.arch.replace("deit", "vit"), self.patch_size)
        except ValueError as e:
            raise OptionError(str(e)) from None
        if arch.family.kind != "dino":  # DINOv2 backbones are loaded, exported and run, not trained
            raise OptionError(f"--arch {self.arch}: dino-train trains DINO ViTs (vit_*); DINOv2 "
                              "backbones load from their checkpoints in dino-export and dino-run")
        return arch

    def resolved_depth(self) -> int:
        """``--depth``, or the arch's own number of blocks when none is given."""
        return self.depth or self.resolved_arch().family.depth

    def crops(self) -> CropConfig:
        return CropConfig(tuple(self.global_crops_scale), tuple(self.local_crops_scale),
                          self.local_crops_number, self.global_crop_size, self.local_crop_size,
                          self.random_crops, self.color_jitter)

    def official_args(self) -> argparse.Namespace:
        """The ``args`` entry of the checkpoint, with the official names and plain values."""
        arch = self.resolved_arch()
        values = {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in dataclasses.asdict(self).items()}
        values.update(arch=arch.family.name, patch_size=arch.patch_size,
                      use_fp16=self.precision == "fp16", local_rank=0)
        return argparse.Namespace(**values)


# -- runtime context ----------------------------------------------------------------------------
@dataclass
class Runtime:
    device: torch.device
    precision: str            # resolved: fp32 | bf16 | fp16
    dist: D.DistInfo

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    def autocast(self):
        dtype = self.autocast_dtype
        if dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_train_precision(name: str, device: torch.device) -> str:
    """``auto``: fp16 on CUDA (the official default), bf16 on CPUs with native bf16, else fp32
    (:func:`dino_core.precision.resolve_precision`)."""
    cuda = device.type == "cuda"
    return resolve_precision(name, device.type, ("fp32", "bf16", "fp16"), gpu_auto="fp16",
                             gpu_bf16=not cuda or torch.cuda.is_bf16_supported(),
                             what="dino-train")


# -- builders -----------------------------------------------------------------------------------
@dataclass
class Networks:
    student: nn.Module             # DDP-wrapped when distributed
    student_module: MultiCropWrapper
    teacher: MultiCropWrapper
    student_params: list[torch.Tensor] = field(default_factory=list)
    teacher_params: list[torch.Tensor] = field(default_factory=list)
    last_layer_freeze: LastLayerFreeze | None = None  # None under DDP: gradients cancelled


def build_networks(cfg: TrainConfig, rt: Runtime) -> Networks:
    """Student (with stochastic depth) and teacher (a copy of it, no gradients)."""
    arch = cfg.resolved_arch()
    extra = {"depth": cfg.depth} if cfg.depth else {}
    img_size = [cfg.global_crop_size]
    sizes = {"hidden_dim": cfg.head_hidden_dim, "bottleneck_dim": cfg.head_bottleneck_dim}
    student = MultiCropWrapper(
        arch.build(drop_path_rate=cfg.drop_path_rate, img_size=img_size, **extra),
        DINOHead(arch.family.embed_dim, cfg.out_dim, use_bn=cfg.use_bn_in_head,
                 norm_last_layer=cfg.norm_last_layer, **sizes))
    teacher = MultiCropWrapper(arch.build(img_size=img_size, **extra),
                               DINOHead(arch.family.embed_dim, cfg.out_dim, cfg.use_bn_in_head,
                                        **sizes))
    student.head_fp32 = teacher.head_fp32 = rt.precision == "bf16"
    if rt.device.type == "cpu" and rt.precision == "bf16":
        # Batched products instead of the flash kernel, which is slower on CPU in bf16
        # (see models.vision_transformer.Attention).
        student.backbone.set_fused_attention(False)
        teacher.backbone.set_fused_attention(False)
    student, teacher = student.to(rt.device), teacher.to(rt.device)
    if rt.dist.enabled and cfg.use_bn_in_head:
        if rt.device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        elif rt.dist.is_main:
            # torch's SyncBatchNorm runs on GPUs only (DDP refuses it on CPU modules).
            print("warning: --use-bn-in-head under torchrun on CPU: the head's batch norm uses "
                  "each process's own batch statistics (SyncBatchNorm needs CUDA)",
                  file=sys.stderr, flush=True)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    if cfg.compile:
        # Compile the backbones in place (keys keep their names, so checkpoints stay official);
        # one graph per crop resolution.
        student.backbone.compile()
        teacher.backbone.compile()
    wrapped: nn.Module = student
    if rt.dist.enabled:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    freeze = None if rt.dist.enabled else LastLayerFreeze(student, cfg.freeze_last_layer)
    return Networks(wrapped, student, teacher, list(student.parameters()),
                    list(teacher.parameters()), freeze)


def build_loss(cfg: TrainConfig, rt: Runtime) -> DINOLoss:
    return DINOLoss(cfg.out_dim, cfg.local_crops_number + 2, cfg.warmup_teacher_temp,
                    cfg.teacher_temp, cfg.warmup_teacher_temp_epochs, cfg.epochs,
                    centering=cfg.centering).to(rt.device)


def build_ibot(cfg: TrainConfig, rt: Runtime) -> IBOTPatchLoss | None:
    if cfg.ibot_loss_weight == 0:
        return None
    return IBOTPatchLoss(cfg.resolved_arch().family.embed_dim, cfg.out_dim,
                         cfg.warmup_teacher_temp, cfg.teacher_temp,
                         cfg.warmup_teacher_temp_epochs, cfg.epochs, centering=cfg.centering,
                         probability=cfg.ibot_mask_probability,
                         ratio_range=tuple(cfg.ibot_mask_ratio)).to(rt.device)


def fused_optimizer_available(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda")


@dataclass
class TrainState:
    """Where the run is; saved in the ``dino_edge`` record."""

    epoch: int = 0            # current epoch (epochs completed, when step_in_epoch == 0)
    step: int = 0             # optimisation steps done in total
    step_in_epoch: int = 0
    skipped_files: int = 0    # unreadable files met while loading (each time one is met)
    last_checkpoint_step: int | None = None


@dataclass
class Trainer:
    """Everything a step needs; built once by :func:`build_trainer`."""

    cfg: TrainConfig
    rt: Runtime
    nets: Networks
    loss: DINOLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    schedules: Schedules
    loader: torch.utils.data.DataLoader
    sampler: EpochSampler
    skipped_at_scan: int
    ibot: IBOTPatchLoss | None = None  # with --ibot-loss-weight: the mask token and its loss
    augment: BatchedMultiCrop | None = None  # with --augmentation batched: makes the views
    state: TrainState = field(default_factory=TrainState)
    last_terms: dict[str, float] = field(default_factory=dict)  # the last step's extra terms

    @property
    def out(self) -> Path:
        return Path(self.cfg.output_dir)


def build_trainer(cfg: TrainConfig, rt: Runtime) -> Trainer:
    torch.manual_seed(cfg.seed)  # same initial weights on every process
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    scan = scan_folder(cfg.data_path, cfg.video_stride)
    batched = cfg.augmentation == "batched"
    # batched: the workers only decode; the views are made on the device (make_views)
    transform = (SourceImage(2 * cfg.global_crop_size) if batched
                 else MultiCropAugmentation(cfg.crops()))
    dataset = MultiCropDataset(scan.samples, transform, cfg.seed)
    ipe = steps_per_epoch(len(dataset), cfg.batch_size_per_gpu, rt.dist.world_size)
    if ipe == 0:
        raise UserError(f"{cfg.data_path}: {len(dataset)} images is fewer than one batch of "
                        f"{cfg.batch_size_per_gpu} per process x {rt.dist.world_size}; lower "
                        "--batch-size-per-gpu")
    sampler = EpochSampler(dataset, rt.dist.world_size, rt.dist.rank, cfg.seed,
                           cfg.batch_size_per_gpu)
    loader = build_loader(dataset, sampler, cfg.batch_size_per_gpu, cfg.num_workers,
                          pin_memory=rt.device.type == "cuda",
                          worker_niceness=CPU_WORKER_NICENESS if rt.device.type == "cpu" else 0,
                          collate_fn=collate_sources if batched else None)
    nets = build_networks(cfg, rt)
    ibot = build_ibot(cfg, rt)
    groups = params_groups(nets.student)
    if ibot is not None:
        groups[1]["params"].append(ibot.mask_token)  # 1-D: no weight decay, as in iBOT
    optimizer = build_optimizer(cfg.optimizer, groups, fused=fused_optimizer_available(rt.device))
    scaler = torch.amp.GradScaler(rt.device.type) if rt.precision == "fp16" else None
    schedules = build_schedules(cfg.lr, cfg.min_lr, cfg.warmup_epochs, cfg.weight_decay,
                                cfg.weight_decay_end, cfg.momentum_teacher, cfg.epochs, ipe,
                                cfg.batch_size_per_gpu * rt.dist.world_size,
                                momentum_teacher_end=cfg.momentum_teacher_end)
    torch.manual_seed(cfg.seed + rt.dist.rank)  # stochastic depth differs between processes
    return Trainer(cfg, rt, nets, build_loss(cfg, rt), optimizer, scaler, schedules, loader,
                   sampler, len(scan.skipped), ibot,
                   BatchedMultiCrop(cfg.crops()) if batched else None)


# -- one step -----------------------------------------------------------------------------------
class Diverged(UserError):
    """The loss became NaN or infinite."""


def set_schedules(optimizer: torch.optim.Optimizer, schedules: Schedules, it: int) -> None:
    """lr on every group, weight decay on the first (regularised) group only."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = float(schedules.lr[it])
        if i == 0:
            group["weight_decay"] = float(schedules.weight_decay[it])


def forward_loss(t: Trainer, crops: list[torch.Tensor], epoch: int) -> torch.Tensor:
    """Teacher on the 2 global crops, student on all crops, DINO loss (fp32 scalar).

    With ``--koleo-loss-weight`` w > 0, plus w times the KoLeo term of the student's [CLS]
    features, per global crop (DINOv2). With ``--ibot-loss-weight`` w > 0, the student's global
    crops are partly masked (for its DINO term too, as in iBOT) and w times the masked-patch
    term is added.
    """
    koleo_weight, ibot = t.cfg.koleo_loss_weight, t.ibot
    batch = crops[0].shape[0]
    t.last_terms = {}
    with t.rt.autocast():
        if ibot is not None:
            patch = t.cfg.resolved_arch().patch_size
            n_patches = (crops[0].shape[-2] // patch) * (crops[0].shape[-1] // patch)
            masks = ibot.sample_masks(2 * batch, n_patches).to(crops[0].device)
            with torch.no_grad():
                teacher_out, _, teacher_patch = t.nets.teacher(crops[:2], masks=masks)
            student_out, features, student_patch = t.nets.student(
                crops, masks=masks, mask_token=ibot.mask_token)
        else:
            with torch.no_grad():
                teacher_out = t.nets.teacher(crops[:2])
            student_out, features = t.nets.student(crops, return_features=True)
    loss = t.loss(student_out, teacher_out, epoch)
    if koleo_weight > 0:
        koleo = sum(koleo_loss(f) for f in features[:2 * batch].chunk(2))
        t.last_terms["koleo"] = float(koleo.detach())
        loss = loss + koleo_weight * koleo
    if ibot is not None:
        patch_loss = ibot(student_patch, teacher_patch, masks, epoch)
        t.last_terms["ibot"] = float(patch_loss.detach())
        loss = loss + t.cfg.ibot_loss_weight * patch_loss
    return loss


def backward_and_step(t: Trainer, loss: torch.Tensor, epoch: int) -> None:
    """Backward, per-parameter clipping, last-layer freeze, optimiser step (scaled in fp16)."""
    t.optimizer.zero_grad(set_to_none=True)
    student = t.nets.student_module
    if t.scaler is None:
        loss.backward()
    else:
        t.scaler.scale(loss).backward()
        if t.cfg.clip_grad:
            t.scaler.unscale_(t.optimizer)
    if t.ibot is not None and t.rt.dist.enabled:
        # Outside the DDP-wrapped student: its gradient is averaged over processes here.
        token = t.ibot.mask_token
        if token.grad is None:
            token.grad = torch.zeros_like(token)
        torch.distributed.all_reduce(token.grad)
        token.grad.div_(t.rt.dist.world_size)
    if t.cfg.clip_grad:
        clip_gradients(t.nets.student_params, t.cfg.clip_grad)
        if t.ibot is not None:
            clip_gradients([t.ibot.mask_token], t.cfg.clip_grad)
    cancel_last_layer_grads(student, epoch, t.cfg.freeze_last_layer)
    if t.scaler is None:
        t.optimizer.step()
    else:
        t.scaler.step(t.optimizer)
        t.scaler.update()


def make_views(t: Trainer, batch: Any) -> list[torch.Tensor]:
    """A loader batch -> the crops: as they are (PIL views, made by the workers), or made here,
    on the device, from the decoded images (``--augmentation batched``), with draws seeded by
    (seed, step, rank) so that a resumed run makes the same views."""
    if t.augment is None:
        return batch
    images, sizes = batch
    seed = np.random.SeedSequence([t.cfg.seed, t.state.step, t.rt.dist.rank]).generate_state(1)
    generator = torch.Generator().manual_seed(int(seed[0]))
    return t.augment(images.to(t.rt.device, non_blocking=True), sizes, generator)


def train_step(t: Trainer, crops: list[torch.Tensor]) -> float:
    """One optimisation step at ``t.state``; returns the loss (before the update)."""
    it, epoch = t.state.step, t.state.epoch
    set_schedules(t.optimizer, t.schedules, it)
    crops = [c.to(t.rt.device, non_blocking=True) for c in crops]
    if t.nets.last_layer_freeze is not None:
        t.nets.last_layer_freeze.set_epoch(epoch)
    loss = forward_loss(t, crops, epoch)
    value = loss.item()  # a device sync, as in the official loop: needed for the NaN check
    if not math.isfinite(value):
        raise Diverged(divergence_message(t, value))
    backward_and_step(t, loss, epoch)
    ema_update(t.nets.teacher_params, t.nets.student_params, float(t.schedules.momentum[it]))
    return value


def divergence_message(t: Trainer, value: float) -> str:
    kept = (f"the last good checkpoint is {t.out / 'checkpoint.pth'} (step "
            f"{t.state.last_checkpoint_step})" if t.state.last_checkpoint_step is not None
            else "no checkpoint was written yet")
    fp = "; use --precision fp32 or bf16 instead of fp16" if t.rt.precision == "fp16" else ""
    return (f"loss is {value} at step {t.state.step} (epoch {t.state.epoch}); training stopped "
            f"and {kept}. Try a lower --lr, a smaller --clip-grad (0.3-1.0), a longer "
            f"--freeze-last-layer, or --norm-last-layer true{fp}")


# -- checkpoints --------------------------------------------------------------------------------
def checkpoint_dict(t: Trainer, rng_states: list[dict]) -> dict[str, Any]:
    arch = t.cfg.resolved_arch()
    ckpt = {
        "student": with_prefix(t.nets.student_module.state_dict(), "module."),
        "teacher": t.nets.teacher.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "epoch": t.state.epoch,
        "args": t.cfg.official_args(),
        "dino_loss": t.loss.state_dict(),
        TOOLKIT_KEY: {
            "format_version": FORMAT_VERSION,
            "arch": arch.family.name, "short_name": arch.short_name,
            "patch_size": arch.patch_size, "num_heads": arch.family.num_heads,
            "embed_dim": arch.family.embed_dim,
            "depth": t.cfg.resolved_depth(),
            "step": t.state.step, "epoch": t.state.epoch, "step_in_epoch": t.state.step_in_epoch,
            "skipped_files": t.state.skipped_files,
            "world_size": t.rt.dist.world_size, "precision": t.rt.precision,
            "rng": rng_states,
            "config": json.loads(json.dumps(dataclasses.asdict(t.cfg))),
        },
    }
    if t.scaler is not None:
        ckpt["fp16_scaler"] = t.scaler.state_dict()
    if t.ibot is not None:
        ckpt["ibot"] = t.ibot.state_dict()
    return ckpt


def save_checkpoint(t: Trainer, epoch_end: bool) -> None:
    """``checkpoint.pth`` (and ``checkpointNNNN.pth`` every ``saveckp_freq`` epochs), atomically.

    Every process contributes its RNG state; only the main process writes.
    """
    states = D.gather_objects(rng_state(), t.rt.dist)
    if t.rt.dist.is_main:
        ckpt = checkpoint_dict(t, states)
        atomic_save(ckpt, t.out / "checkpoint.pth")
        finished = t.state.epoch - 1
        if epoch_end and t.cfg.saveckp_freq and finished % t.cfg.saveckp_freq == 0:
            atomic_save(ckpt, t.out / f"checkpoint{finished:04}.pth")
    t.state.last_checkpoint_step = t.state.step
    D.barrier(t.rt.dist)


# Options that shape the networks: a checkpoint written with other values cannot be resumed.
NETWORK_OPTIONS = ("out_dim", "use_bn_in_head", "norm_last_layer", "head_hidden_dim",
                   "head_bottleneck_dim")


def network_option_mismatch(ckpt: dict[str, Any], cfg: TrainConfig) -> str | None:
    """'--opt X (this run: Y)' for the first network option that differs, from a toolkit
    checkpoint's recorded configuration; None if all agree or the checkpoint has no record."""
    written = (ckpt.get(TOOLKIT_KEY) or {}).get("config")
    if not written:
        return None
    if written.get("arch") != cfg.arch or written.get("patch_size") != cfg.patch_size:
        short = (ckpt[TOOLKIT_KEY].get("short_name"), cfg.resolved_arch().short_name)
        if short[0] != short[1]:
            return f"--arch {short[0]} (this run: {short[1]})"
    depth = (ckpt[TOOLKIT_KEY].get("depth"), cfg.resolved_depth())
    if depth[0] is not None and depth[0] != depth[1]:
        return f"--depth {depth[0]} (this run: {depth[1]})"
    for name in NETWORK_OPTIONS:
        if name in written and written[name] != getattr(cfg, name):
            return f"--{name.replace('_', '-')} {written[name]} (this run: {getattr(cfg, name)})"
    return None


def first_reason(e: Exception) -> str:
    """The first informative line of a load error (torch puts its summary line first)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(e).__name__


def resume(t: Trainer) -> bool:
    """Restore everything from ``output_dir/checkpoint.pth`` if it exists; True if it did."""
    path = t.out / "checkpoint.pth"
    if not (t.cfg.resume and path.exists()):
        return False
    ckpt = load_pickle_checkpoint(path)
    if ("ibot" in ckpt) != (t.ibot is not None):
        raise UserError(f"{path} was written {'with' if 'ibot' in ckpt else 'without'} "
                        "--ibot-loss-weight, this run is not; resume with the same options, or "
                        "use another --output-dir or --no-resume")
    mismatch = network_option_mismatch(ckpt, t.cfg)
    if mismatch:
        raise UserError(f"{path} was written with {mismatch}; resume with the same options, or "
                        "use another --output-dir or --no-resume")
    try:
        t.nets.student_module.load_state_dict(strip_prefix(ckpt["student"], "module."))
        t.nets.teacher.load_state_dict(strip_prefix(ckpt["teacher"], "module."))
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.loss.load_state_dict(ckpt["dino_loss"])
        if t.ibot is not None:
            t.ibot.load_state_dict(ckpt["ibot"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path}: cannot resume from it ({first_reason(e)}); use another "
                        "--output-dir or --no-resume") from None
    if t.scaler is not None and "fp16_scaler" in ckpt:
        t.scaler.load_state_dict(ckpt["fp16_scaler"])
    record = ckpt.get(TOOLKIT_KEY)
    if record is None:  # an official checkpoint: restart at the beginning of its epoch
        t.state = TrainState(epoch=int(ckpt["epoch"]), step=int(ckpt["epoch"]) * t.schedules.iters_per_epoch)
    else:
        t.state = TrainState(epoch=record["epoch"], step=record["step"],
                             step_in_epoch=record["step_in_epoch"],
                             skipped_files=record.get("skipped_files", 0))
        rngs = record.get("rng", [])
        if t.rt.dist.rank < len(rngs) and record.get("world_size") == t.rt.dist.world_size:
            set_rng_state(rngs[t.rt.dist.rank])
    t.state.last_checkpoint_step = t.state.step
    return True


# -- the loop -----------------------------------------------------------------------------------
@dataclass
class RunSummary:
    steps: int
    epoch: int
    last_loss: float | None
    stopped_by: str   # "epochs" | "max_steps" | "max_minutes"


class _Progress:
    """tqdm bar on the main process; a no-op elsewhere."""

    def __init__(self, t: Trainer, total: int) -> None:
        self.bar = None
        if t.cfg.progress and t.rt.dist.is_main:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=t.state.step, unit="step", dynamic_ncols=True)

    def update(self, loss: float, lr: float, images_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{images_per_s:.1f}",
                                 refresh=False)
            self.bar.update(1)

    def warn(self, message: str) -> None:
        """A ``warning:`` line on stderr, on a line of its own when the bar is shown."""
        if self.bar is not None:
            self.bar.write(f"warning: {message}", file=sys.stderr)
        else:
            data_warn(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def log_record(t: Trainer, meter: IntervalMeter) -> dict[str, Any]:
    it = max(t.state.step - 1, 0)
    stats = meter.summary()
    for key in ("loss", "koleo", "ibot"):
        if key in stats:
            stats[key] = float(D.all_reduce_mean(torch.tensor(stats[key]), t.rt.dist))
    return {"step": t.state.step, "epoch": t.state.epoch, **stats,
            "images_per_s": stats["images_per_s"] * t.rt.dist.world_size,
            "lr": float(t.schedules.lr[it]), "wd": float(t.schedules.weight_decay[it]),
            "momentum": float(t.schedules.momentum[it]),
            "teacher_temp": float(t.loss.teacher_temp_schedule[t.state.epoch]),
            "skipped_files": t.skipped_at_scan + t.state.skipped_files, "time": time.time()}


def monitor_knn(t: Trainer, log: JsonlLog) -> None:
    """k-NN top-1/top-5 (k=20) of the teacher backbone on the monitoring folders."""
    if t.rt.dist.is_main:
        from .knn import knn_evaluate, labelled_folder
        train = labelled_folder(t.cfg.knn_train_data, max_per_class=t.cfg.knn_max_per_class)
        val = labelled_folder(t.cfg.knn_val_data, train.classes, t.cfg.knn_max_per_class)
        k = min(20, len(train.paths))
        (res,) = knn_evaluate(t.nets.teacher.backbone, train, val, ks=(k,),
                              image_size=t.cfg.global_crop_size, device=str(t.rt.device),
                              num_workers=min(2, t.cfg.num_workers),
                              dtype=t.rt.autocast_dtype)
        log.write({"step": t.state.step, "epoch": t.state.epoch, "knn_k": k,
                   "knn_top1": res.top1, "knn_top5": res.top5, "time": time.time()})
    D.barrier(t.rt.dist)


def write_config(t: Trainer) -> None:
    if not t.rt.dist.is_main:
        return
    resolved = {**dataclasses.asdict(t.cfg), "resolved": {
        "arch": t.cfg.resolved_arch().short_name, "device": str(t.rt.device),
        "precision": t.rt.precision, "world_size": t.rt.dist.world_size,
        "total_batch": t.cfg.batch_size_per_gpu * t.rt.dist.world_size,
        "scaled_lr": t.cfg.lr * t.cfg.batch_size_per_gpu * t.rt.dist.world_size / 256.0,
        "iters_per_epoch": t.schedules.iters_per_epoch, "ncrops": t.cfg.crops().ncrops,
        "skipped_at_scan": t.skipped_at_scan}}
    atomic_write_text(json.dumps(resolved, indent=2) + "\n", t.out / "config.json")


def should_stop(t: Trainer, started: float) -> str | None:
    if t.cfg.max_steps is not None and t.state.step >= t.cfg.max_steps:
        return "max_steps"
    if t.cfg.max_minutes is not None:
        late = time.perf_counter() - started > 60 * t.cfg.max_minutes
        if D.any_process(late, t.rt.dist):
            return "max_minutes"
    return None


def budget_warning(cfg: TrainConfig, schedules: Schedules, step: int, seconds_per_step: float,
                   seconds_left: float) -> str | None:
    """With ``--max-minutes``: a warning when, at ``seconds_per_step``, the time left ends the
    run before its schedule does (the lr, weight decay and teacher momentum span ``--epochs``;
    a cut schedule leaves the lr high and the teacher behind the student)."""
    total = schedules.total_iters
    if (cfg.max_minutes is None or step >= total or seconds_per_step <= 0
            or (cfg.max_steps is not None and cfg.max_steps < total)):
        return None
    reachable = step + max(0, int(seconds_left / seconds_per_step))
    if reachable >= total:
        return None
    lr_share = 100 * schedules.lr[reachable] / max(schedules.lr.max(), 1e-30)
    fit = reachable // schedules.iters_per_epoch
    advice = (f"pass --epochs {fit} (and the epoch options that depend on it) to finish it"
              if fit >= max(1, cfg.warmup_epochs, cfg.warmup_teacher_temp_epochs)
              else "lower --epochs or raise --max-minutes to finish it")
    return (f"at the speed so far the {total}-step schedule needs about "
            f"{(total - step) * seconds_per_step / 60:.0f} more minutes, but --max-minutes "
            f"{cfg.max_minutes:g} stops it near step {reachable}, with the lr at {lr_share:.0f}% "
            f"of its peak; {advice} (README: Short runs)")


class BudgetCheck:
    """Times ``span`` steps of this invocation, after the first ``skip`` (they include warming
    up), and then warns once if the schedule will not fit (:func:`budget_warning`)."""

    skip, span = 10, 40

    def __init__(self, t: Trainer, started: float, progress: _Progress) -> None:
        self.begin = t.state.step + self.skip
        self.end = self.begin + self.span
        self.started, self.progress, self.mark = started, progress, None

    def after_step(self, t: Trainer) -> None:
        if t.cfg.max_minutes is None or t.state.step > self.end or not t.rt.dist.is_main:
            return
        now = time.perf_counter()
        if t.state.step == self.begin:
            self.mark = now
        elif t.state.step == self.end and self.mark is not None:
            message = budget_warning(t.cfg, t.schedules, t.state.step,
                                     (now - self.mark) / (self.end - self.begin),
                                     60 * t.cfg.max_minutes - (now - self.started))
            if message:
                self.progress.warn(message)


def run_epoch(t: Trainer, log: JsonlLog, progress: _Progress, started: float,
              budget: BudgetCheck | None = None) -> str | None:
    """Train the rest of the current epoch; returns why it stopped early, if it did."""
    t.sampler.set_epoch(t.state.epoch)
    t.sampler.start_batch = t.state.step_in_epoch
    meter, last = IntervalMeter(), time.perf_counter()
    for batch, skipped in t.loader:
        crops = make_views(t, batch)
        data_time = time.perf_counter() - last  # waiting for the loader, and making the views
        t.state.skipped_files += int(skipped.sum())
        loss = train_step(t, crops)
        t.state.step += 1
        t.state.step_in_epoch += 1
        if budget is not None:
            budget.after_step(t)
        meter.update(loss, len(skipped), data_time, t.last_terms)
        progress.update(loss, float(t.schedules.lr[t.state.step - 1]),
                        meter.images * t.rt.dist.world_size / max(time.perf_counter() - meter.started, 1e-9))
        if t.state.step % t.cfg.log_every == 0:
            record = log_record(t, meter)
            if t.rt.dist.is_main:
                log.write(record)
            meter = IntervalMeter()
        if t.cfg.knn_every_steps and t.state.step % t.cfg.knn_every_steps == 0 and t.cfg.knn_train_data:
            monitor_knn(t, log)
        if t.cfg.ckpt_every_steps and t.state.step % t.cfg.ckpt_every_steps == 0:
            save_checkpoint(t, epoch_end=False)
        stop = should_stop(t, started)
        if stop:
            if meter.steps and t.rt.dist.is_main:
                log.write(log_record(t, meter))
            return stop
        last = time.perf_counter()
    if meter.steps:
        record = log_record(t, meter)
        if t.rt.dist.is_main:
            log.write(record)
    return None


def train(cfg: TrainConfig) -> RunSummary:
    """Run (or resume) a DINO training as configured; returns how far it got."""
    cfg.validate()
    device = resolve_device(cfg.device)
    if device.type == "cpu":
        keep_freed_memory()
    rt = Runtime(device, resolve_train_precision(cfg.precision, device),
                 D.init_distributed(device.type, cfg.dist_url))
    try:
        trainer = build_trainer(cfg, rt)  # bad data fails here, before any folder is made
        make_output_dir(trainer.out)
        return _train(trainer)
    finally:
        D.shutdown(rt.dist)


def make_output_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"--output-dir {path}: exists and is not a directory") from None
    except PermissionError:
        raise UserError(f"--output-dir {path}: permission denied") from None


def _train(t: Trainer) -> RunSummary:
    resume(t)
    write_config(t)
    log = JsonlLog(t.out / "log.jsonl")
    total = t.schedules.total_iters if t.cfg.max_steps is None else \
        min(t.cfg.max_steps, t.schedules.total_iters)
    progress, started, stop, last_loss = _Progress(t, total), time.perf_counter(), None, None
    stop = should_stop(t, started)
    budget = BudgetCheck(t, started, progress)
    try:
        while stop is None and t.state.epoch < t.cfg.epochs:
            stop = run_epoch(t, log, progress, started, budget)
            if stop is None:
                t.state.epoch += 1
                t.state.step_in_epoch = 0
                save_checkpoint(t, epoch_end=True)
            elif t.state.last_checkpoint_step != t.state.step:
                save_checkpoint(t, epoch_end=False)
            if t.rt.dist.is_main:
                plot_training(log, t.out / "training.png")
    finally:
        progress.close()
    records = [r for r in log.records() if "loss" in r]
    if records:
        last_loss = records[-1]["loss"]
    if t.state.last_checkpoint_step != t.state.step:  # e.g. --max-steps 0: the initial weights
        save_checkpoint(t, epoch_end=False)
    return RunSummary(t.state.step, t.state.epoch, last_loss, stop or "epochs")
