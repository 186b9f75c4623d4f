"""dino_models.layers: the blocks both ViT families share, and the contract that a seeded
model starts from the same weights as the timm-based model it replaced."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dino_models.layers import (
    Attention,
    Block,
    LayerScale,
    SwiGLUFFN,
    matmul_attention,
    swiglu_hidden_features,
)

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
from make_init_fingerprint import fingerprint, seeded_models


def test_seeded_initialisation_is_bit_identical_to_the_timm_based_model():
    stored = json.loads((VECTORS / "init_fingerprint.json").read_text())["models"]
    ours = {name: fingerprint(model) for name, model in seeded_models().items()}
    assert set(ours) == set(stored)
    for name in stored:
        assert set(ours[name]) == set(stored[name]), name
        changed = [k for k in stored[name] if ours[name][k] != stored[name][k]]
        assert not changed, f"{name}: initial values differ for {changed[:5]}"


def test_fused_and_matmul_attention_agree():
    torch.manual_seed(0)
    attn = Attention(64, 4, qkv_bias=True).eval()
    x = torch.randn(2, 10, 64)
    fused = attn(x)
    attn.fused_attn = False
    torch.testing.assert_close(attn(x), fused, atol=1e-6, rtol=0)
    q, k, v = attn.split_qkv(x)
    ref = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(matmul_attention(q, k, v, attn.scale), ref, atol=1e-6, rtol=0)


def test_attention_probs_are_the_rows_of_the_fused_attention():
    torch.manual_seed(1)
    attn = Attention(32, 2).eval()
    q, k, v = attn.split_qkv(torch.randn(1, 7, 32))
    probs = attn.probs(q, k)
    torch.testing.assert_close(probs.sum(-1), torch.ones(1, 2, 7))
    torch.testing.assert_close(probs @ v, attn.attend(q, k, v), atol=1e-6, rtol=0)


@pytest.mark.parametrize("ffn,init_values", [("mlp", None), ("swiglu", 0.5)])
def test_block_single_token_and_cls_attention_paths_match_the_full_block(ffn, init_values):
    torch.manual_seed(2)
    block = Block(48, 3, 96, qkv_bias=True, ffn_layer=ffn, init_values=init_values).eval()
    x = torch.randn(2, 9, 48)
    full = block(x)
    with_attn, probs = block.forward_with_cls_attention(x)
    cls, cls_probs = block.forward_cls(x)
    torch.testing.assert_close(with_attn, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(cls, full[:, :1], atol=1e-6, rtol=0)
    q, k, _ = block.attn.split_qkv(block.norm1(x))
    torch.testing.assert_close(probs, block.attn.probs(q, k)[:, :, 0], atol=1e-7, rtol=0)
    torch.testing.assert_close(cls_probs, probs, atol=1e-7, rtol=0)


def test_layer_scale_and_official_parameter_names():
    block = Block(32, 2, 64, init_values=1e-5, ffn_layer="swiglu")
    keys = set(block.state_dict())
    assert {"ls1.gamma", "ls2.gamma", "mlp.w12.weight", "mlp.w3.weight", "attn.qkv.weight",
            "attn.proj.weight", "norm1.weight", "norm2.weight"} <= keys
    assert torch.equal(LayerScale(4, 0.5)(torch.ones(4)), torch.full((4,), 0.5))
    assert "ls1.gamma" not in Block(32, 2, 64).state_dict()


def test_swiglu_width_rule_and_math():
    assert swiglu_hidden_features(4 * 1536) == 4096   # ViT-g/14's w12 is (8192, 1536)
    assert swiglu_hidden_features(4 * 384) == 1024
    ffn = SwiGLUFFN(8, 6)
    x = torch.randn(3, 8)
    x1, x2 = (x @ ffn.w12.weight.T + ffn.w12.bias).chunk(2, -1)
    expected = (F.silu(x1) * x2) @ ffn.w3.weight.T + ffn.w3.bias
    torch.testing.assert_close(ffn(x), expected)


def test_models_export_and_training_import_and_run_without_timm():
    # timm is no longer a dependency: hide it and build, run and train-step a model.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'timm' or name.startswith('timm.'):\n"
        "            raise ImportError('timm is hidden')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch, dino_models, dino_models.checkpoint, dino_export, dino_train.train\n"
        "m = dino_models.vit_tiny(depth=1)\n"
        "m(torch.randn(1, 3, 32, 32)).sum().backward()\n"
        "assert 'timm' not in sys.modules\n"
        "print('ok')\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
