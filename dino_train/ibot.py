"""iBOT's masked-patch term (Zhou et al. 2022; also DINOv2's third loss), off by default.

The student sees its two global crops with some patches replaced by a learnt mask token; at
each hidden patch it is trained, with the same cross-entropy as DINO's, to match the teacher's
centred and sharpened head output for that patch of the whole crop. The head is DINO's (shared,
as DINOv2's default), the teacher temperature follows DINO's schedule, and the patch outputs
have their own running centre. Masks: with probability ``probability`` an image is masked, with
a ratio drawn uniformly from ``ratio_range`` of its patches, chosen at random (not iBOT's
block-wise masks: at 32 px a global crop has only 8 x 8 patches).

The mask token and the centre live here, not in the student or the teacher, so that their
state dicts keep the official keys; the checkpoint stores this module's state as ``ibot``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loss import CENTERINGS, teacher_targets, update_center_
from .schedules import teacher_temp_schedule


class IBOTPatchLoss(nn.Module):
    """Masked-patch self-distillation: ``mask_token`` (embed_dim,) and ``center`` (1, out_dim)."""

    def __init__(self, embed_dim: int, out_dim: int, warmup_teacher_temp: float,
                 teacher_temp: float, warmup_teacher_temp_epochs: int, nepochs: int,
                 student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center", probability: float = 0.5,
                 ratio_range: tuple[float, float] = (0.1, 0.5)) -> None:
        super().__init__()
        if centering not in CENTERINGS:
            raise ValueError(f"centering={centering!r}: choose one of {', '.join(CENTERINGS)}")
        if not 0 < probability <= 1:
            raise ValueError(f"probability={probability}: must be in (0, 1]")
        if not 0 < ratio_range[0] <= ratio_range[1] < 1:
            raise ValueError(f"ratio_range={ratio_range}: need 0 < min <= max < 1")
        self.mask_token = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering = centering
        self.probability = probability
        self.ratio_range = ratio_range
        self.teacher_temp_schedule = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)

    def sample_masks(self, n_images: int, n_patches: int) -> torch.Tensor:
        """(n_images, n_patches) bool, drawn from torch's global generator (saved on resume).

        round(probability * n_images) images, at least 2, are masked; each hides
        round(ratio * n_patches) patches, at least 1, ratio uniform in ``ratio_range``. So at
        least two patches are always masked (the head's batch norm needs two rows).
        """
        n_masked = min(n_images, max(2, round(self.probability * n_images)))
        lo, hi = self.ratio_range
        ratios = torch.empty(n_masked).uniform_(lo, hi)
        counts = torch.zeros(n_images, dtype=torch.long)
        counts[torch.randperm(n_images)[:n_masked]] = (ratios * n_patches).round().long().clamp(1, n_patches)
        ranks = torch.rand(n_images, n_patches).argsort(dim=1).argsort(dim=1)
        return ranks < counts.unsqueeze(1)

    def forward(self, student_patch: torch.Tensor, teacher_patch: torch.Tensor,
                masks: torch.Tensor, epoch: int) -> torch.Tensor:
        """Head outputs at the masked patches, (M, K) each in ``masks[masks]`` order -> loss.

        Per image, the mean cross-entropy over its masked patches; then the mean over all
        ``len(masks)`` images (those with no masked patch count as 0), as iBOT and DINOv2.
        Updates the centre with the teacher's masked-patch outputs.
        """
        per_image = masks.sum(dim=1, keepdim=True).clamp(min=1)
        weights = (1.0 / per_image).expand_as(masks)[masks]
        log_p = F.log_softmax(student_patch.float() / self.student_temp, dim=-1)
        temp = float(self.teacher_temp_schedule[epoch])
        q = teacher_targets(teacher_patch, self.center, temp, self.centering)
        if self.centering == "center":
            update_center_(self.center, teacher_patch, self.center_momentum)
        return -((q * log_p).sum(dim=-1) * weights).sum() / len(masks)

