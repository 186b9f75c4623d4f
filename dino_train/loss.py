"""DINOLoss: cross-entropy between the centred, sharpened teacher and the student, over crops.

Same signature, buffer (``center``) and numerics as ``DINOLoss`` in facebookresearch/dino
``main_dino.py``; the pairwise loop is replaced by one reduction (see ``forward``).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .schedules import teacher_temp_schedule


class DINOLoss(nn.Module):
    """Self-distillation loss with a centred teacher and a warmed-up teacher temperature."""

    def __init__(self, out_dim: int, ncrops: int, warmup_teacher_temp: float,
                 teacher_temp: float, warmup_teacher_temp_epochs: int, nepochs: int,
                 student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        if ncrops < 2:
            raise ValueError(f"ncrops={ncrops}: DINO needs the 2 global crops at least")
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                epoch: int) -> torch.Tensor:
        """Student (ncrops * B, K) and teacher (2 * B, K) outputs, crops stacked crop-major.

        Returns the mean over the 2 * (ncrops - 1) (teacher crop, other student crop) pairs of
        the batch-mean cross-entropy, and updates the centre with the teacher batch.
        """
        n_global = 2
        batch = teacher_output.shape[0] // n_global
        # fp32 whatever the autocast dtype: the official softmax/log_softmax run in fp32 too.
        log_p = F.log_softmax(student_output.float() / self.student_temp, dim=-1)
        log_p = log_p.view(self.ncrops, batch, -1)
        temp = float(self.teacher_temp_schedule[epoch])
        q = F.softmax((teacher_output.float().detach() - self.center) / temp, dim=-1)
        q = q.view(n_global, batch, -1)
        # sum over v != iq of <q_iq, log p_v> = <q_iq, sum_v log p_v - log p_iq>: one pass over
        # the (B, K) logits instead of 2 * (ncrops - 1), and log_softmax once per crop.
        others = log_p.sum(dim=0, keepdim=True) - log_p[:n_global]
        n_terms = n_global * (self.ncrops - 1)
        loss = -(q * others).sum() / (batch * n_terms)
        self.update_center(teacher_output)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the teacher's batch mean (2 * B, K), averaged over all processes."""
        batch_center = teacher_output.float().sum(dim=0, keepdim=True)
        world = 1
        if dist.is_available() and dist.is_initialized():
            world = dist.get_world_size()
            if world > 1:
                dist.all_reduce(batch_center)
        batch_center = batch_center / (len(teacher_output) * world)
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
