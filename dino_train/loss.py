"""DINOLoss: cross-entropy between the centred, sharpened teacher and the student, over crops.

Same signature, buffer (``center``) and numerics as ``DINOLoss`` in facebookresearch/dino
``main_dino.py``; the pairwise loop is replaced by one reduction (see ``forward``).

Two options from DINOv2 (Oquab et al. 2023, section 4), off by default: Sinkhorn-Knopp
normalisation of the teacher instead of the running centre (``centering="sinkhorn_knopp"``), and
the KoLeo spreading term on the student's [CLS] features (:func:`koleo_loss`). And one to see
DINO's balance (Caron et al. 2021, section 5.3): ``centering="none"``, sharpening alone, which
collapses to one prototype.

Each forward also measures the teacher's distribution (:mod:`dino_train.diagnostics`) from the
targets and the loss it has made anyway: ``last_diagnostics``, a small tensor on the device.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from .config import CENTERINGS  # the option's choices, declared once with it
from .diagnostics import teacher_diagnostics
from .schedules import teacher_temp_schedule


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def _all_reduce(x: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        dist.all_reduce(x)
    return x


@torch.no_grad()
def sinkhorn_knopp(teacher_output: torch.Tensor, temp: float, n_iterations: int = 3) -> torch.Tensor:
    """Teacher targets (N, K) in which every prototype gets about the same mass over the batch.

    exp(logits / temp) is alternately normalised so that every prototype receives 1/K of the
    total mass and every sample 1/N (N summed over processes); 3 iterations, as DINOv2, leave the
    prototype sums close to equal and each row of the result summing to 1. This replaces
    centring: the targets can neither be uniform per sample nor all pick the same prototype.
    """
    logits = teacher_output.float() / temp
    # A common shift cancels in the normalisations; it keeps exp() finite at low temperatures.
    # It must be the same on every process: the max over all of them.
    shift = logits.max().reshape(1)
    if _world_size() > 1:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp(logits - shift).t()  # (K, N)
    n_prototypes = q.shape[0]
    # Samples over all processes; summed rather than multiplied because iBOT's masked patches
    # differ in number between processes.
    n_samples = q.shape[1] if _world_size() == 1 else \
        int(_all_reduce(torch.tensor([q.shape[1]], device=q.device)).item())
    q /= _all_reduce(q.sum().reshape(1))
    for _ in range(n_iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    return (q * n_samples).t()


def teacher_targets(teacher_output: torch.Tensor, center: torch.Tensor, temp: float,
                    centering: str) -> torch.Tensor:
    """Teacher probabilities (N, K): softmax((t - center) / temp), Sinkhorn-Knopp's, or with
    ``centering="none"`` softmax(t / temp)."""
    teacher_output = teacher_output.float().detach()
    if centering == "sinkhorn_knopp":
        return sinkhorn_knopp(teacher_output, temp)
    if centering == "none":
        return F.softmax(teacher_output / temp, dim=-1)
    return F.softmax((teacher_output - center) / temp, dim=-1)


@torch.no_grad()
def update_center_(center: torch.Tensor, teacher_output: torch.Tensor, momentum: float) -> None:
    """EMA (in place) of the mean row of ``teacher_output`` (N, K) over all processes.

    Rows and their count are both summed over processes, so their numbers may differ (iBOT's
    masked patches); with equal numbers this is the official all-reduced batch mean.
    """
    stats = torch.cat([teacher_output.float().sum(dim=0),
                       teacher_output.new_tensor([len(teacher_output)], dtype=torch.float32)])
    stats = _all_reduce(stats)
    batch_center = (stats[:-1] / stats[-1].clamp(min=1)).unsqueeze(0)
    center.mul_(momentum).add_(batch_center * (1 - momentum))


def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Kozachenko-Leonenko entropy estimate (DINOv2): -mean log distance to the nearest neighbour.

    ``features`` (B, D) are L2-normalised first; minimising the result spreads them over the
    sphere. Within this process's batch only, as DINOv2.
    """
    x = F.normalize(features.float(), dim=-1, eps=eps)
    with torch.no_grad():
        sim = x @ x.t()
        sim.fill_diagonal_(-2.0)
        nearest = sim.argmax(dim=1)
    distance = (x - x[nearest]).norm(dim=-1)
    return -torch.log(distance + eps).mean()


class DINOLoss(nn.Module):
    """Self-distillation loss with a centred teacher and a warmed-up teacher temperature."""

    def __init__(self, out_dim: int, ncrops: int, warmup_teacher_temp: float,
                 teacher_temp: float, warmup_teacher_temp_epochs: int, nepochs: int,
                 student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: str = "center") -> None:
        super().__init__()
        if ncrops < 2:
            raise ValueError(f"ncrops={ncrops}: DINO needs the 2 global crops at least")
        if centering not in CENTERINGS:
            raise ValueError(f"centering={centering!r}: choose one of {', '.join(CENTERINGS)}")
        self.centering = centering
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = teacher_temp_schedule(
            warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, nepochs)
        self.diagnose = True  # measure the teacher in forward (the loop: on logged steps only)
        self.last_diagnostics: torch.Tensor | None = None  # (7,): diagnostics.DIAGNOSTICS

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                epoch: int) -> torch.Tensor:
        """Student (ncrops * B, K) and teacher (2 * B, K) outputs, crops stacked crop-major.

        Returns the mean over the 2 * (ncrops - 1) (teacher crop, other student crop) pairs of
        the batch-mean cross-entropy, and updates the centre with the teacher batch. With
        ``diagnose``, ``last_diagnostics`` gets the teacher's diagnostics of this batch.
        """
        n_global = 2
        batch = teacher_output.shape[0] // n_global
        # fp32 whatever the autocast dtype: the official softmax/log_softmax run in fp32 too.
        log_p = F.log_softmax(student_output.float() / self.student_temp, dim=-1)
        log_p = log_p.view(self.ncrops, batch, -1)
        temp = float(self.teacher_temp_schedule[epoch])
        q = teacher_targets(teacher_output, self.center, temp, self.centering)
        q = q.view(n_global, batch, -1)
        # sum over v != iq of <q_iq, log p_v> = <q_iq, sum_v log p_v - log p_iq>: one pass over
        # the (B, K) logits instead of 2 * (ncrops - 1), and log_softmax once per crop.
        others = log_p.sum(dim=0, keepdim=True) - log_p[:n_global]
        n_terms = n_global * (self.ncrops - 1)
        loss = -(q * others).sum() / (batch * n_terms)
        # before the centre moves: the one these targets were made with
        self.last_diagnostics = teacher_diagnostics(q.view(n_global * batch, -1), loss,
                                                    self.center) if self.diagnose else None
        if self.centering == "center":
            self.update_center(teacher_output)
        return loss

    def update_center(self, teacher_output: torch.Tensor) -> None:
        """EMA of the teacher's batch mean (2 * B, K), averaged over all processes."""
        update_center_(self.center, teacher_output, self.center_momentum)
