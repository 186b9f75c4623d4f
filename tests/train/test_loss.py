"""DINOLoss against reference vectors of the official ``main_dino.DINOLoss`` (see vectors/README.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dino_train.loss import DINOLoss

sys.path.insert(0, str(Path(__file__).parent / "vectors"))
from inputs import LOSS_CASES, center_stride, loss_inputs  # noqa: E402

VECTORS = np.load(Path(__file__).parent / "vectors" / "loss_vectors.npz")


@pytest.mark.parametrize("name", sorted(LOSS_CASES))
def test_loss_and_center_match_official(name):
    out_dim, nlocal, _, wt, t, wte, epochs, used = LOSS_CASES[name]
    loss = DINOLoss(out_dim, nlocal + 2, wt, t, wte, epochs)
    np.testing.assert_allclose(loss.teacher_temp_schedule,
                               VECTORS[f"{name}/teacher_temp_schedule"], rtol=0, atol=0)
    for step, (epoch, (s, te)) in enumerate(zip(used, loss_inputs(name))):
        value = loss(torch.from_numpy(s), torch.from_numpy(te), epoch)
        # one reduction instead of the official pairwise loop: fp32 summation order differs
        np.testing.assert_allclose(value.item(), VECTORS[f"{name}/loss_{step}"], rtol=2e-6)
        center = loss.center.numpy()[:, ::center_stride(out_dim)]
        np.testing.assert_allclose(center, VECTORS[f"{name}/center_{step}"], rtol=1e-6, atol=1e-7)


def test_gradient_matches_pairwise_definition():
    """The gradient of the one-pass form equals that of the official pairwise loop."""
    torch.manual_seed(0)
    ncrops, batch, k, temp = 4, 3, 16, 0.04
    student = torch.randn(ncrops * batch, k, requires_grad=True)
    teacher = torch.randn(2 * batch, k)
    ours = DINOLoss(k, ncrops, temp, temp, 0, 1)(student, teacher, 0)
    (g_ours,) = torch.autograd.grad(ours, student)
    s = (student / 0.1).chunk(ncrops)
    q = torch.softmax(teacher / temp, dim=-1).chunk(2)
    pairs = [(-qi * torch.log_softmax(s[v], -1)).sum(-1).mean()
             for i, qi in enumerate(q) for v in range(ncrops) if v != i]
    ref = sum(pairs) / len(pairs)
    (g_ref,) = torch.autograd.grad(ref, student)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=1e-7)


def test_low_precision_outputs_are_computed_in_fp32():
    torch.manual_seed(1)
    s, t = torch.randn(8, 32) * 3, torch.randn(4, 32) * 3
    ref = DINOLoss(32, 4, 0.04, 0.04, 0, 1)(s, t, 0)
    low = DINOLoss(32, 4, 0.04, 0.04, 0, 1)(s.bfloat16(), t.bfloat16(), 0)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, ref, rtol=2e-2, atol=0)


def test_needs_the_two_global_crops():
    with pytest.raises(ValueError, match="ncrops"):
        DINOLoss(8, 1, 0.04, 0.04, 0, 1)
