"""The training speed-ups compute the official function: each is checked against the plain way.

* the last block run for the [CLS] token only (``VisionTransformer.forward``),
* batched-product attention (CPU bf16) against the fused kernel,
* the weight-normalised last layer without materialising its weight,
* skipping the frozen last layer's gradient instead of computing and discarding it,
* the CPU process settings (malloc thresholds, OpenMP wait policy, worker priority).
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dino_models import DINOHead
from dino_models.archs import resolve_arch
from dino_train import distributed as D
from dino_train.builders import build_trainer
from dino_train.config import TrainConfig
from dino_train.context import TrainContext
from dino_train.cpu_tuning import keep_freed_memory, prefer_passive_omp_wait, will_train_on_cpu
from dino_train.data import build_loader
from dino_train.step import train_step
from tests.conftest import tiny_vit

from .conftest import write_images


def _full_forward(model, x):
    """The official forward: every block on every token, then the [CLS] token."""
    x = model.prepare_tokens(x)
    for blk in model.blocks:
        x = blk(x)
    return model.norm(x)[:, 0]


def test_cls_only_last_block_equals_full_forward_and_gradients():
    torch.manual_seed(0)
    # stochastic depth on (0.15 and 0.3 in the last two blocks): the same draws either way
    model = resolve_arch("vit_t16").build(depth=3, drop_path_rate=0.3).train()
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)
    x = torch.randn(4, 3, 48, 64)
    grads = []
    for fn in (_full_forward, type(model).forward):
        model.zero_grad()
        torch.manual_seed(1)
        out = fn(model, x)
        (out * torch.arange(out.shape[1])).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (ref, ref_g), (ours, ours_g) = grads
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    for name, g in ref_g.items():  # fp32 rounding, relative to the gradient's scale
        scale = g.abs().max().item()
        torch.testing.assert_close(ours_g[name], g, rtol=0, atol=1e-6 * scale, msg=name)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 2e-5), (torch.bfloat16, 3e-2)])
def test_batched_product_attention_matches_fused_kernel(dtype, tol):
    model = tiny_vit(depth=2).train()
    x = torch.randn(3, 3, 32, 48)
    results = []
    for fused in (True, False):
        model.set_fused_attention(fused)
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(x)
        out.float().square().sum().backward()
        results.append((out.float().detach(), model.blocks[0].attn.qkv.weight.grad.clone()))
    assert all(not blk.attn.fused_attn for blk in model.blocks)
    (out_f, g_f), (out_m, g_m) = results
    torch.testing.assert_close(out_m, out_f, rtol=tol, atol=tol)
    assert F.cosine_similarity(g_m.flatten(), g_f.flatten(), dim=0) > 1 - tol


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_weight_norm_layer_equals_normalised_weight(norm_last_layer):
    torch.manual_seed(0)
    head = DINOHead(16, 300, norm_last_layer=norm_last_layer)
    layer = head.last_layer
    with torch.no_grad():
        layer.weight_g.mul_(torch.rand_like(layer.weight_g) + 0.5)
    x = torch.randn(5, 256)
    w = layer.weight_g * layer.weight_v / layer.weight_v.norm(dim=1, keepdim=True)
    ref = x @ w.t()
    (gv_ref,) = torch.autograd.grad((ref * torch.arange(300.0)).sum(), layer.weight_v)
    out = layer(x)
    (gv,) = torch.autograd.grad((out * torch.arange(300.0)).sum(), layer.weight_v)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # the weight-norm gradient subtracts nearly equal terms: compare at the gradient's scale
    torch.testing.assert_close(gv, gv_ref, rtol=0, atol=1e-6 * gv_ref.abs().max().item())


def _trainer(tmp_path, name: str, epochs_frozen: int):
    images = write_images(tmp_path / "images", 8)
    cfg = TrainConfig(arch="vit_tiny", depth=2, out_dim=64, batch_size_per_gpu=4,
                      local_crops_number=2, global_crop_size=32, local_crop_size=16,
                      data_path=str(images), output_dir=str(tmp_path / name), num_workers=0,
                      drop_path_rate=0.1, epochs=4, warmup_epochs=0, lr=0.5, progress=False,
                      freeze_last_layer=epochs_frozen, norm_last_layer=False)
    return build_trainer(cfg, TrainContext(torch.device("cpu"), "fp32", D.DistInfo()))


@pytest.mark.parametrize("epoch", [0, 1])
def test_skipping_frozen_last_layer_gradient_gives_official_update(tmp_path, epoch):
    """Epoch 0: frozen (gradient skipped vs computed and cancelled); epoch 1: trained."""
    runs = {}
    for name, skip in (("skip", True), ("cancel", False)):
        t = _trainer(tmp_path, name, epochs_frozen=1)
        assert t.nets.last_layer_freeze is not None
        if not skip:
            t.nets.last_layer_freeze = None  # the official path: compute, then cancel
        t.state.epoch = epoch
        t.sampler.set_epoch(epoch)
        before = copy.deepcopy(t.nets.student_module.head.last_layer.state_dict())
        torch.manual_seed(0)
        for crops, _ in t.loader:
            train_step(t, crops)
            t.state.step += 1
        runs[name] = (before, t.nets.student_module.state_dict(), t.nets.teacher.state_dict())
    (before, s_skip, t_skip), (_, s_cancel, t_cancel) = runs["skip"], runs["cancel"]
    for key in s_cancel:
        torch.testing.assert_close(s_skip[key], s_cancel[key], rtol=1e-5, atol=1e-6, msg=key)
        torch.testing.assert_close(t_skip[key], t_cancel[key], rtol=1e-5, atol=1e-6, msg=key)
    moved = not torch.equal(s_skip["head.last_layer.weight_v"], before["weight_v"])
    assert moved == (epoch >= 1)


def test_keep_freed_memory_applies_on_linux():
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc malloc settings: Linux only")
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent


def test_passive_omp_wait_respects_user_and_import_order(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    assert prefer_passive_omp_wait() is False and os.environ["OMP_WAIT_POLICY"] == "active"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert "torch" in sys.modules  # too late in this process: left unset
    assert prefer_passive_omp_wait() is False and "OMP_WAIT_POLICY" not in os.environ
    code = ("import os, sys; from dino_train.cpu_tuning import prefer_passive_omp_wait; "
            "print(prefer_passive_omp_wait(), os.environ.get('OMP_WAIT_POLICY'), "
            "'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["True", "PASSIVE", "False"]
    assert will_train_on_cpu("cpu") and not will_train_on_cpu("cuda")


class _Niceness(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return os.nice(0)


def test_cpu_data_workers_run_at_lower_priority():
    base = os.nice(0)
    sampler = torch.utils.data.SequentialSampler(range(2))
    loader = build_loader(_Niceness(), sampler, 1, num_workers=1, pin_memory=False,
                          worker_niceness=5)
    seen = [int(v) for (v,) in loader]
    assert seen == [min(base + 5, 19)] * 2
    plain = build_loader(_Niceness(), sampler, 1, num_workers=1, pin_memory=False)
    assert [int(v) for (v,) in plain] == [base] * 2
