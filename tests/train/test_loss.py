"""DINOLoss against reference vectors of the official ``main_dino.DINOLoss`` (see vectors/README.md)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dino_train.loss import DINOLoss, koleo_loss, sinkhorn_knopp

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


# -- DINOv2 options ------------------------------------------------------------------------------
def _sinkhorn_reference(logits: torch.Tensor, temp: float, iterations: int) -> torch.Tensor:
    """The definition in float64 and without the shift: alternate row and column scaling."""
    q = torch.exp(logits.double() / temp)
    for _ in range(iterations):
        q = q / q.sum(dim=0, keepdim=True) / q.shape[1]   # every prototype: 1/K of the mass
        q = q / q.sum(dim=1, keepdim=True)                 # every sample: a distribution
    return q


def test_sinkhorn_knopp_targets_match_the_definition_and_balance_the_prototypes():
    torch.manual_seed(2)
    logits = torch.randn(64, 32) * 0.5
    q = sinkhorn_knopp(logits, 0.07, n_iterations=3)
    torch.testing.assert_close(q.double(), _sinkhorn_reference(logits, 0.07, 3), rtol=1e-5,
                               atol=1e-8)
    torch.testing.assert_close(q.sum(dim=1), torch.ones(64))
    # converged, the prototypes carry equal mass (N / K each) although the logits favour some
    q = sinkhorn_knopp(logits + torch.linspace(0, 0.3, 32), 0.07, n_iterations=200)
    torch.testing.assert_close(q.sum(dim=0), torch.full((32,), 64 / 32), rtol=1e-3, atol=0)


def test_sinkhorn_knopp_is_finite_where_the_plain_exponential_overflows():
    logits = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    assert not torch.isfinite(torch.exp(logits / 0.04)).all()  # e^100 overflows fp32
    q = sinkhorn_knopp(logits, 0.04)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, torch.eye(2), rtol=0, atol=1e-6)


def test_sinkhorn_knopp_loss_leaves_the_center_alone():
    torch.manual_seed(3)
    s, t = torch.randn(12, 16), torch.randn(6, 16)
    loss = DINOLoss(16, 4, 0.04, 0.04, 0, 1, centering="sinkhorn_knopp")
    value = loss(s, t, 0)
    assert torch.isfinite(value) and value > 0
    assert torch.count_nonzero(loss.center) == 0
    with pytest.raises(ValueError, match="centering"):
        DINOLoss(16, 4, 0.04, 0.04, 0, 1, centering="mean")


def test_koleo_is_minus_the_mean_log_nearest_neighbour_distance():
    x = torch.eye(4) * 3.0  # normalised: 4 orthonormal points, every nearest distance sqrt(2)
    torch.testing.assert_close(koleo_loss(x), torch.tensor(-0.5 * np.log(2.0), dtype=torch.float32), rtol=1e-6,
                               atol=0)
    # the nearest neighbour, not the mean distance: one close pair dominates
    close = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0]])
    assert koleo_loss(close) > 2.0
    # two identical features (the same frame twice): large but finite, and a finite gradient
    same = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    value = koleo_loss(same)
    (grad,) = torch.autograd.grad(value, same)
    assert torch.isfinite(value) and value > 5 and torch.isfinite(grad).all()


def test_koleo_gradient_spreads_the_features():
    torch.manual_seed(4)
    x = torch.nn.functional.normalize(torch.randn(32, 8), dim=1).requires_grad_()

    def min_distance(points):
        d = torch.cdist(points, points) + torch.eye(len(points)) * 9
        return d.min().item()

    before = min_distance(x.detach())
    (grad,) = torch.autograd.grad(koleo_loss(x), x)
    moved = torch.nn.functional.normalize(x.detach() - 0.05 * grad, dim=1)
    assert min_distance(moved) > before
