"""Everything a run is made of, built once from its configuration: :func:`build_trainer`.

The networks (student with stochastic depth, teacher as its copy), the DINO loss and iBOT's
patch term, the optimiser and its schedules, and the data (scan, dataset, sampler, loader); all
held by :class:`Trainer` together with where the run is (:class:`TrainState`).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from dino_core.errors import UserError
from dino_models import DINOHead

from .batched_augment import BatchedMultiCrop, SourceImage, collate_sources
from .config import STUDENT_TEMP, TrainConfig
from .context import TrainContext
from .data import (
    EpochSampler,
    MultiCropAugmentation,
    MultiCropDataset,
    build_loader,
    scan_folder,
    steps_per_epoch,
)
from .ibot import IBOTPatchLoss
from .loss import DINOLoss
from .multicrop import MultiCropWrapper
from .optim import LastLayerFreeze, build_optimizer, params_groups
from .schedules import Schedules, build_schedules

log = logging.getLogger(__name__)

CPU_WORKER_NICENESS = 19   # data workers yield the cores to the training threads on CPU


@dataclass
class Networks:
    student: nn.Module             # DDP-wrapped when distributed
    student_module: MultiCropWrapper
    teacher: MultiCropWrapper
    student_params: list[torch.Tensor] = field(default_factory=list)
    teacher_params: list[torch.Tensor] = field(default_factory=list)
    last_layer_freeze: LastLayerFreeze | None = None  # None under DDP: gradients cancelled


def build_networks(cfg: TrainConfig, ctx: TrainContext) -> Networks:
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
    student.head_fp32 = teacher.head_fp32 = ctx.precision == "bf16"
    if ctx.device.type == "cpu" and ctx.precision == "bf16":
        # Batched products instead of the flash kernel, which is slower on CPU in bf16
        # (see models.vision_transformer.Attention).
        student.backbone.set_fused_attention(False)
        teacher.backbone.set_fused_attention(False)
    student, teacher = student.to(ctx.device), teacher.to(ctx.device)
    if ctx.dist.enabled and cfg.use_bn_in_head:
        if ctx.device.type == "cuda":
            student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
            teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
        elif ctx.dist.is_main:
            # torch's SyncBatchNorm runs on GPUs only (DDP refuses it on CPU modules).
            log.warning("--use-bn-in-head under torchrun on CPU: the head's batch norm uses "
                        "each process's own batch statistics (SyncBatchNorm needs CUDA)")
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    if cfg.compile:
        # Compile the backbones in place (keys keep their names, so checkpoints stay official);
        # one graph per crop resolution.
        student.backbone.compile()
        teacher.backbone.compile()
    wrapped: nn.Module = student
    if ctx.dist.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(student, device_ids=ids)
    freeze = None if ctx.dist.enabled else LastLayerFreeze(student, cfg.freeze_last_layer)
    return Networks(wrapped, student, teacher, list(student.parameters()),
                    list(teacher.parameters()), freeze)


def build_loss(cfg: TrainConfig, ctx: TrainContext) -> DINOLoss:
    return DINOLoss(cfg.out_dim, cfg.local_crops_number + 2, *cfg.teacher_temps(),
                    cfg.warmup_teacher_temp_epochs, cfg.epochs, student_temp=STUDENT_TEMP,
                    center_momentum=cfg.center_momentum, centering=cfg.centering).to(ctx.device)


def build_ibot(cfg: TrainConfig, ctx: TrainContext) -> IBOTPatchLoss | None:
    if cfg.ibot_loss_weight == 0:
        return None
    return IBOTPatchLoss(cfg.resolved_arch().family.embed_dim, cfg.out_dim,
                         *cfg.teacher_temps(), cfg.warmup_teacher_temp_epochs, cfg.epochs,
                         student_temp=STUDENT_TEMP, center_momentum=cfg.center_momentum,
                         centering=cfg.centering,
                         probability=cfg.ibot_mask_probability,
                         ratio_range=tuple(cfg.ibot_mask_ratio)).to(ctx.device)


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
    ctx: TrainContext
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


def build_trainer(cfg: TrainConfig, ctx: TrainContext) -> Trainer:
    torch.manual_seed(cfg.seed)  # same initial weights on every process
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    scan = scan_folder(cfg.data_path, cfg.video_stride)
    batched = cfg.augmentation == "batched"
    # batched: the workers only decode; the views are made on the device (make_views)
    transform = (SourceImage(2 * cfg.global_crop_size) if batched
                 else MultiCropAugmentation(cfg.crops()))
    dataset = MultiCropDataset(scan.samples, transform, cfg.seed)
    ipe = steps_per_epoch(len(dataset), cfg.batch_size_per_gpu, ctx.dist.world_size)
    if ipe == 0:
        raise UserError(f"{cfg.data_path}: {len(dataset)} images is fewer than one batch of "
                        f"{cfg.batch_size_per_gpu} per process x {ctx.dist.world_size}; lower "
                        "--batch-size-per-gpu")
    sampler = EpochSampler(dataset, ctx.dist.world_size, ctx.dist.rank, cfg.seed,
                           cfg.batch_size_per_gpu)
    loader = build_loader(dataset, sampler, cfg.batch_size_per_gpu, cfg.num_workers,
                          pin_memory=ctx.device.type == "cuda",
                          worker_niceness=CPU_WORKER_NICENESS if ctx.device.type == "cpu" else 0,
                          collate_fn=collate_sources if batched else None)
    nets = build_networks(cfg, ctx)
    ibot = build_ibot(cfg, ctx)
    groups = params_groups(nets.student)
    if ibot is not None:
        groups[1]["params"].append(ibot.mask_token)  # 1-D: no weight decay, as in iBOT
    optimizer = build_optimizer(cfg.optimizer, groups, fused=fused_optimizer_available(ctx.device))
    scaler = torch.amp.GradScaler(ctx.device.type) if ctx.precision == "fp16" else None
    schedules = build_schedules(cfg.lr, cfg.min_lr, cfg.warmup_epochs, cfg.weight_decay,
                                cfg.weight_decay_end, cfg.momentum_teacher, cfg.epochs, ipe,
                                cfg.batch_size_per_gpu * ctx.dist.world_size,
                                momentum_teacher_end=cfg.momentum_teacher_end)
    torch.manual_seed(cfg.seed + ctx.dist.rank)  # stochastic depth differs between processes
    return Trainer(cfg, ctx, nets, build_loss(cfg, ctx), optimizer, scaler, schedules, loader,
                   sampler, len(scan.skipped), ibot,
                   BatchedMultiCrop(cfg.crops()) if batched else None)
