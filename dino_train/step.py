"""One optimisation step: :func:`train_step` (schedules, forward and loss, backward, clipping,
last-layer freeze, optimiser step, teacher EMA), and the divergence check on its loss."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dino_core.errors import UserError

from .builders import Trainer
from .loss import koleo_loss
from .optim import cancel_last_layer_grads, clip_gradients, ema_update
from .schedules import Schedules


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

    ``crops``: 2 global (B, 3, G, G) then the local (B, 3, L, L) crops. With
    ``--koleo-loss-weight`` w > 0, plus w times the KoLeo term of the student's [CLS] features,
    per global crop (DINOv2). With ``--ibot-loss-weight`` w > 0, the student's global crops are
    partly masked (for its DINO term too, as in iBOT) and w times the masked-patch term is
    added.
    """
    koleo_weight, ibot = t.cfg.koleo_loss_weight, t.ibot
    batch = crops[0].shape[0]
    t.last_terms = {}
    with t.ctx.autocast():
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
    if t.ibot is not None and t.ctx.dist.enabled:
        # Outside the DDP-wrapped student: its gradient is averaged over processes here.
        token = t.ibot.mask_token
        if token.grad is None:
            token.grad = torch.zeros_like(token)
        torch.distributed.all_reduce(token.grad)
        token.grad.div_(t.ctx.dist.world_size)
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
    seed = np.random.SeedSequence([t.cfg.seed, t.state.step, t.ctx.dist.rank]).generate_state(1)
    generator = torch.Generator().manual_seed(int(seed[0]))
    return t.augment(images.to(t.ctx.device, non_blocking=True), sizes, generator)


def closes_a_record(t: Trainer) -> bool:
    """Whether the step about to run is the last of a ``log.jsonl`` record's interval (every
    ``--log-every`` steps, the end of an epoch, ``--max-steps``): the teacher's diagnostics are
    measured on those steps (see :mod:`dino_train.diagnostics` for why not on every step)."""
    done = t.state.step + 1
    return (done % t.cfg.log_every == 0
            or t.state.step_in_epoch + 1 == t.schedules.iters_per_epoch
            or (t.cfg.max_steps is not None and done >= t.cfg.max_steps))


def train_step(t: Trainer, crops: list[torch.Tensor], diagnose: bool = False) -> float:
    """One optimisation step at ``t.state``; returns the loss (before the update). With
    ``diagnose``, ``t.loss.last_diagnostics`` gets the teacher's diagnostics of this step
    (else None)."""
    it, epoch = t.state.step, t.state.epoch
    t.loss.diagnose = diagnose
    set_schedules(t.optimizer, t.schedules, it)
    crops = [c.to(t.ctx.device, non_blocking=True) for c in crops]
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
    fp = "; use --precision fp32 or bf16 instead of fp16" if t.ctx.precision == "fp16" else ""
    return (f"loss is {value} at step {t.state.step} (epoch {t.state.epoch}); training stopped "
            f"and {kept}. Try a lower --lr, a smaller --clip-grad (0.3-1.0), a longer "
            f"--freeze-last-layer, or --norm-last-layer true{fp}")
