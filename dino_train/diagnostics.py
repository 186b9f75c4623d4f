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

The training loop measures them on the last step of each ``log.jsonl`` record's interval
(``DINOLoss.diagnose``), not on every step: on a small backbone with K = 65,536 one measurement
costs about a tenth of a step, so measuring every step would cost that much; once per record
(``--log-every 10``) it is about 1% at worst (benchmarks/bench_diagnostics.py). Each process
measures its own batch; the record averages the values over processes.
"""
from __future__ import annotations

import math

import torch

# The order of the values in the tensor :func:`teacher_diagnostics` returns.
DIAGNOSTICS = ("teacher_entropy", "teacher_entropy_frac", "kl", "batch_entropy",
               "prototypes_used", "top_prototype_share", "center_norm")


TINY = 1e-30  # p ln p at p = 1e-30 is -7e-29: clamping there changes no sum


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each distribution along the last dimension: (K,) -> () or
    (N, K) -> (N,); 0 ln 0 counts as 0 (ln is taken of max(p, 1e-30))."""
    log_p = p.clamp_min(TINY).log()
    # the sum over K as a matrix product: on CPU about twice as fast as xlogy(p, p).sum(-1)
    return -(p.unsqueeze(-2) @ log_p.unsqueeze(-1)).squeeze(-1).squeeze(-1)


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
    # the mean over N as a matrix product: a reduction over the first dimension is several
    # times slower on CPU
    batch_mean = (targets.new_ones(1, len(targets)) @ targets)[0] / len(targets)
    batch_entropy = entropy(batch_mean)
    log_k = math.log(targets.shape[-1]) if targets.shape[-1] > 1 else 1.0  # K = 1: H = 0
    return torch.stack([per_image, per_image / log_k,
                        loss.detach().float() - per_image, batch_entropy, batch_entropy.exp(),
                        batch_mean.max(), center.float().norm()])
