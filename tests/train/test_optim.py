"""Fused optimiser pieces against the official per-parameter definitions."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from dino_models import DINOHead
from dino_train.multicrop import MultiCropWrapper, resolution_groups
from dino_train.optim import (
    LARS,
    build_optimizer,
    cancel_last_layer_grads,
    clip_gradients,
    ema_update,
    params_groups,
)
from tests.conftest import tiny_vit


def _model() -> MultiCropWrapper:
    return MultiCropWrapper(tiny_vit(depth=1), DINOHead(192, 32, norm_last_layer=False))


def test_clip_gradients_matches_official_per_parameter_rule():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(5)) for _ in range(4)]
    scales = [0.01, 1.0, 10.0, 100.0]
    for p, s in zip(params, scales):
        p.grad = torch.randn(5) * s
    expected = []
    for p in params:  # the official utils.clip_gradients loop, clip = 3
        g = p.grad.clone()
        coef = 3.0 / (g.norm(2) + 1e-6)
        expected.append(g * coef if coef < 1 else g)
    clip_gradients(params, 3.0)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-6, atol=0)
    assert params[-1].grad.norm().item() == pytest.approx(3.0, rel=1e-5)


def test_ema_update_equals_per_parameter_loop():
    torch.manual_seed(0)
    student, teacher = _model(), _model()
    ref = copy.deepcopy(teacher)
    m = 0.996
    with torch.no_grad():
        for q, k in zip(student.parameters(), ref.parameters()):
            k.data.mul_(m).add_((1 - m) * q.detach().data)
    ema_update(list(teacher.parameters()), list(student.parameters()), m)
    for a, b in zip(teacher.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_no_weight_decay_on_biases_and_norms():
    model = _model()
    decayed, plain = params_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert plain["weight_decay"] == 0.0
    assert all(names[id(p)].endswith(".bias") or p.ndim == 1 for p in plain["params"])
    assert all(p.ndim > 1 and not names[id(p)].endswith(".bias") for p in decayed["params"])
    assert "backbone.pos_embed" in {names[id(p)] for p in decayed["params"]}  # official: 3-D


def test_frozen_last_layer_has_no_gradient_in_the_first_epoch():
    model = _model()
    model([torch.randn(2, 3, 32, 32)]).sum().backward()
    cancel_last_layer_grads(model, epoch=0, freeze_last_layer=1)
    assert model.head.last_layer.weight_v.grad is None
    assert model.head.mlp[0].weight.grad is not None
    model([torch.randn(2, 3, 32, 32)]).sum().backward()
    cancel_last_layer_grads(model, epoch=1, freeze_last_layer=1)
    assert model.head.last_layer.weight_v.grad is not None


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_optimizers_step(name):
    model = _model()
    opt = build_optimizer(name, params_groups(model), fused=True)
    before = [p.detach().clone() for p in model.parameters()]
    for g in opt.param_groups:
        g["lr"] = 0.1
    model([torch.randn(2, 3, 32, 32)]).pow(2).mean().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert isinstance(opt, LARS) == (name == "lars")


def test_multicrop_groups_consecutive_resolutions_and_matches_separate_passes():
    torch.manual_seed(0)
    model = _model().eval()
    crops = [torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16)]
    assert [len(g) for g in resolution_groups(crops)] == [2, 1]
    out = model(crops)
    separate = torch.cat([model.head(model.backbone(c)) for c in crops])
    assert out.shape == (6, 32)
    torch.testing.assert_close(out, separate, rtol=1e-4, atol=1e-5)


def test_head_runs_in_fp32_under_bf16_autocast():
    model = _model()
    model.head_fp32 = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model([torch.randn(2, 3, 32, 32)])
    assert out.dtype == torch.float32
