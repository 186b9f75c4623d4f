"""Optimiser pieces of the DINO recipe: parameter groups, LARS, clipping, last-layer freeze, EMA.

Numerics follow facebookresearch/dino ``utils.py``; the per-parameter Python loops there are
replaced by ``torch._foreach_*`` calls, which run the same arithmetic over all tensors in a few
kernels (the optimiser step and the EMA are otherwise a large share of a small model's step).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from .config import OPTIMIZERS  # the option's choices, declared once with it


def params_groups(model: nn.Module) -> list[dict]:
    """Two groups: regularised weights, then biases and 1-D (norm) parameters with no decay."""
    regularized, not_regularized = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or param.ndim == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}]


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise trust ratio ``eta * ||p|| / ||update||`` (not for 1-D
    parameters, which also get no weight decay), as the official ``utils.LARS``."""

    def __init__(self, params, lr: float = 0, weight_decay: float = 0, momentum: float = 0.9,
                 eta: float = 0.001) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if p.ndim != 1:
                    update = update.add(p, alpha=group["weight_decay"])
                    p_norm, u_norm = torch.norm(p), torch.norm(update)
                    one = torch.ones_like(p_norm)
                    trust = torch.where(p_norm > 0, torch.where(
                        u_norm > 0, group["eta"] * p_norm / u_norm, one), one)
                    update = update.mul(trust)
                state = self.state[p]
                if "mu" not in state:
                    state["mu"] = torch.zeros_like(p)
                state["mu"].mul_(group["momentum"]).add_(update)
                p.add_(state["mu"], alpha=-group["lr"])


def build_optimizer(name: str, groups: list[dict], fused: bool) -> torch.optim.Optimizer:
    """``adamw`` (fused kernel when ``fused``), ``sgd`` (momentum 0.9) or ``lars``; the lr and
    the first group's weight decay are set by the schedules at every step."""
    if name == "adamw":
        return torch.optim.AdamW(groups, fused=fused or None, foreach=None if fused else True)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=0, momentum=0.9, foreach=True)
    if name == "lars":
        return LARS(groups)
    raise ValueError(f"unknown optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def clip_gradients(params: Iterable[nn.Parameter], clip: float) -> None:
    """Scale each gradient whose own L2 norm exceeds ``clip`` to norm ``clip`` (per parameter,
    coefficient ``clip / (norm + 1e-6)``, as the official ``utils.clip_gradients``)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack(torch._foreach_norm(grads))
    # coefficient 1 where the official code leaves the gradient alone (clip_coef >= 1); no .item()
    # per parameter, which would force a device sync for every tensor.
    coefs = (clip / (norms + 1e-6)).clamp_(max=1.0).to(grads[0].dtype)
    torch._foreach_mul_(grads, list(coefs.unbind(0)))


def cancel_last_layer_grads(model: nn.Module, epoch: int, freeze_last_layer: int) -> None:
    """Drop the gradients of the head's last layer during the first ``freeze_last_layer`` epochs."""
    if epoch >= freeze_last_layer:
        return
    for name, p in model.named_parameters():
        if "last_layer" in name:
            p.grad = None


class LastLayerFreeze:
    """Skips the frozen last layer's gradient instead of computing and discarding it.

    The official loop computes the head's last-layer gradient during the first
    ``freeze_last_layer`` epochs and then drops it (``cancel_gradients_last_layer``). Turning
    ``requires_grad`` off for those epochs gives the same update without the work: with
    out_dim 65536 its weight gradient is a 65536 x 256 product and its weight-norm backward
    several passes over the 64 MB weight. Parameters that were never trainable (``weight_g``
    with ``norm_last_layer``) are left alone. Not used under DDP, whose reducer expects the
    same parameters to get gradients at every step; there the official cancel is used.
    """

    def __init__(self, model: nn.Module, freeze_last_layer: int) -> None:
        self.params = [p for name, p in model.named_parameters()
                       if "last_layer" in name and p.requires_grad]
        self.freeze_last_layer = freeze_last_layer

    def set_epoch(self, epoch: int) -> None:
        trainable = epoch >= self.freeze_last_layer
        for p in self.params:
            p.requires_grad_(trainable)


@torch.no_grad()
def ema_update(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, over all tensors in 2 kernels."""
    torch._foreach_mul_(teacher, momentum)
    torch._foreach_add_(teacher, student, alpha=1.0 - momentum)
