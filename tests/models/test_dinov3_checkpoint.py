"""DINOv3 ViT checkpoints: official files (LVD-1689M, SAT-493M, training), transformers folders,
timm's layout and the hub names (cache only: the weights are gated) all load strictly into the
same model, with the architecture inferred from the keys."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dino_core.errors import CheckpointError
from dino_models.archs import resolve_arch
from dino_models.checkpoint import load_backbone

VECTORS = Path(__file__).parent / "vectors"
sys.path.insert(0, str(VECTORS))
from make_timm_dinov3_vectors import CONFIGS as TIMM_CONFIGS  # noqa: E402
from weights import (  # noqa: E402
    deterministic_images,
    deterministic_state,
    name_seed,
    recorded_key_shapes,
)


def _dinov3(name: str, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return resolve_arch(name).build(**{"depth": 2, **overrides}).eval()


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


def _same_function(model, net, size=(48, 80)) -> None:
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_tokens(x), net.forward_tokens(x), atol=0, rtol=0)


@pytest.mark.parametrize("name,file,extra,layout", [
    ("dinov3_s16", "dinov3_vits16_pretrain_lvd1689m-08c60483.pth", {}, "mlp"),
    ("dinov3_s16plus", "dinov3_vits16plus_pretrain_lvd1689m-4057cbaa.pth", {}, "swiglu"),
    ("dinov3_l16", "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth",
     {"depth": 1, "untie_global_and_local_cls_norm": True}, "local_cls_norm"),
    ("dinov3_7b16", "dinov3_vit7b16_pretrain_lvd1689m-a955f4ea.pth",
     {"depth": 1, "embed_dim": 512, "num_heads": 4}, "7b"),
])
def test_official_files_infer_the_architecture(tmp_path, name, file, extra, layout):
    net = _dinov3(name, **extra)
    state = net.state_dict()
    state["rope_embed.periods"] = state["rope_embed.periods"].bfloat16()  # as released files
    torch.save(state, tmp_path / file)
    model, info = load_backbone(tmp_path / file)
    assert (info.family, info.num_registers, info.patch_size, info.format) == \
        ("dinov3", 4, 16, "official-pretrained")
    assert info.num_heads == net.num_heads and info.depth == len(net.blocks)
    if layout != "7b":                 # the narrow 7B layout is not a released width
        assert info.short_name == name
    assert (model.local_cls_norm is not None) == (layout in ("local_cls_norm", "7b"))
    assert (model.blocks[0].attn.qkv.bias is None) == (layout == "7b")   # 7B: no qkv bias
    assert torch.equal(model.rope_embed.periods, state["rope_embed.periods"].float())
    net.rope_embed.periods.copy_(state["rope_embed.periods"])
    _same_function(model, net)


def test_training_checkpoint_and_untied_norms(tmp_path):
    net = _dinov3("dinov3_b16", depth=1, untie_cls_and_patch_norms=True)
    heads = {"dino_head.mlp.0.weight": torch.zeros(4, 768), "ibot_head.mlp.0.weight": torch.zeros(4)}
    teacher = {**{f"backbone.{k}": v for k, v in net.state_dict().items()}, **heads}
    torch.save({"teacher": teacher}, tmp_path / "teacher_checkpoint.pth")
    model, info = load_backbone(tmp_path / "teacher_checkpoint.pth")
    assert (info.format, info.short_name, info.checkpoint_key) == \
        ("official-training", "dinov3_b16", "teacher")
    assert model.cls_norm is not None
    _same_function(model, net)


def test_strict_keys_one_line(tmp_path):
    state = _dinov3("dinov3_s16", depth=1).state_dict()
    del state["blocks.0.attn.qkv.bias_mask"]
    state["blocks.0.attn.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "bad.pth")
    assert "unexpected blocks.0.attn.extra" in _one_line(e)
    state = _dinov3("dinov3_s16", depth=1).state_dict()
    del state["rope_embed.periods"]
    torch.save(state, tmp_path / "noperiods.pth")
    with pytest.raises(CheckpointError, match="without rope_embed.periods") as e:
        load_backbone(tmp_path / "noperiods.pth")
    _one_line(e)


def test_hub_names_resolve_to_the_cache_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("DINOv3 weights are never downloaded"))
    with pytest.raises(CheckpointError) as e:
        load_backbone("dinov3_vitl16_sat493m")
    text = _one_line(e)
    cached = tmp_path / "hub" / "checkpoints" / "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    assert str(cached) in text and "DINOv3 License" in text and "dinov3-downloads" in text
    cached.parent.mkdir(parents=True)
    net = _dinov3("dinov3_l16", depth=1, untie_global_and_local_cls_norm=True)
    torch.save(net.state_dict(), cached)
    model, info = load_backbone("dinov3_vitl16_sat493m")
    assert info.short_name == "dinov3_l16" and info.path == cached
    _same_function(model, net)


@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="transformers (the test extra) writes the "
                               "reference checkpoints")


@pytest.mark.parametrize("extra", [
    {},
    {"use_gated_mlp": True, "hidden_act": "silu", "intermediate_size": 160},
    {"key_bias": True, "num_register_tokens": 0},
], ids=["DINOv3ViTModel", "gated", "key_bias-no-registers"])
def test_transformers_folder_matches_transformers_within_1e4(tmp_path, transformers, extra):
    torch.manual_seed(0)
    config = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 128, "num_register_tokens": 4, "layerscale_value": 0.5,
              "attn_implementation": "eager", **extra}
    hf = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**config)).eval()
    with torch.no_grad():   # the biases start at 0: give every one a value that shows
        for p in hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf.save_pretrained(tmp_path / "hf")
    model, info = load_backbone(tmp_path / "hf")
    r = 1 + config["num_register_tokens"]
    assert (info.format, info.family, info.num_registers, info.num_heads) == \
        ("transformers", "dinov3", r - 1, 2)
    x = torch.randn(2, 3, 64, 112)
    with torch.no_grad():
        ref = hf(pixel_values=x, output_attentions=True)
        tokens = model.forward_tokens(x)
        out = model.forward_single_pass(x)
    assert (tokens - ref.last_hidden_state).abs().max() <= 1e-4
    assert (out.cls - ref.pooler_output).abs().max() <= 1e-4
    last = ref.attentions[-1][:, :, 0]
    assert (out.attn - last[:, :, r:]).abs().max() <= 1e-4
    assert out.attn_registers.shape == (2, 2, r - 1)
    assert ref.last_hidden_state.std() > 0.1   # not a vacuous comparison


@pytest.mark.parametrize("name", list(TIMM_CONFIGS))
def test_timm_layout_matches_timm(tmp_path, name):
    # timm's tokens on deterministic weights (vectors/make_timm_dinov3_vectors.py): the same
    # weights in timm's layout, loaded here, give the same tokens.
    ref = np.load(VECTORS / "timm_dinov3_vectors.npz")
    shapes = {k: tuple(int(d) for d in v.strip("()").split(",") if d.strip())
              for k, v in recorded_key_shapes(ref, name).items()}
    state = deterministic_state(shapes, name_seed(name))
    save_file({k: torch.from_numpy(v) for k, v in state.items()}, tmp_path / "timm.safetensors")
    model, info = load_backbone(tmp_path / "timm.safetensors")
    assert (info.format, info.family) == ("timm", "dinov3")
    h, w = TIMM_CONFIGS[name][2]
    x = torch.from_numpy(deterministic_images(2, h, w, name_seed(name)))
    with torch.no_grad():
        tokens = model.forward_tokens(x).numpy()
    assert np.abs(tokens - ref[f"{name}/tokens"]).max() <= 1e-5
