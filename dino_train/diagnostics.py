"""What the teacher's output says about collapse, from tensors a DINO step already has.

DINO's two collapse modes (Caron et al. 2021, section 5.3) show in the teacher's distribution
over its K prototypes: centering alone drives every image's teacher output towards the uniform
distribution (its entropy towards ln K, the KL between teacher and student towards 0), sharpening
alone towards one prototype for every image (each image's entropy towards 0, and the batch's
mean distribution onto that one prototype). :func:`teacher_diagnostics` measures both from the
teacher targets and the loss of the step, with no second forward pass:

* ``teacher_entropy``: H(P_t), the mean over the teacher crops of -sum_k q_k ln q_k (nats);
* ``teacher_entropy_frac``: that entropy over ln K (1: uniform, 0: one prototype per image);
* ``kl``: KL(P_t || P_s) averaged over the loss's (teacher crop, other student crop) pairs.
  The DINO loss is their mean cross-entropy, and each teacher crop is in the same number of
  pairs, so this is the loss minus the mean teacher entropy: exact, and free;
* ``batch_entropy``: the entropy of the batch-mean teacher distribution;
* ``prototypes_used``: exp of it, the effective number of prototypes in use (K: all used
  evenly; 1: one prototype takes all the mass);
* ``top_prototype_share``: the largest mass one prototype gets in the batch mean;
* ``center_norm``: the L2 norm of the running centre the targets were made with (0 without
  centering).

Each process measures its own batch; the ``log.jsonl`` record averages the values over
processes.
"""
from __future__ import annotations

import math

import torch

# The order of the values in the tensor :func:`teacher_diagnostics` returns.
DIAGNOSTICS = ("teacher_entropy", "teacher_entropy_frac", "kl", "batch_entropy",
               "prototypes_used", "top_prototype_share", "center_norm")


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each distribution along the last dimension: (..., K) -> (...);
    0 ln 0 counts as 0."""
    return -torch.special.xlogy(p, p).sum(dim=-1)


@torch.no_grad()
def teacher_diagnostics(targets: torch.Tensor, loss: torch.Tensor,
                        center: torch.Tensor) -> torch.Tensor:
    """The :data:`DIAGNOSTICS` of one step, as one fp32 tensor (7,) on the targets' device.

    ``targets``: the teacher's probabilities (N, K), N = 2 * B global crops; ``loss``: the DINO
    loss made from them (the mean cross-entropy over the crop pairs, a scalar); ``center``: the
    centre (1, K) the targets were made with. No host sync: the values stay on the device until
    a log record reads them.
    """
    targets = targets.float()
    per_image = entropy(targets).mean()
    batch_mean = targets.mean(dim=0)
    batch_entropy = entropy(batch_mean)
    log_k = math.log(targets.shape[-1]) if targets.shape[-1] > 1 else 1.0  # K = 1: H = 0
    return torch.stack([per_image, per_image / log_k,
                        loss.detach().float() - per_image, batch_entropy, batch_entropy.exp(),
                        batch_mean.max(), center.float().norm()])
