"""DINOv3 ConvNeXt checkpoints: the official files, hub names (cache only, DINOv3 License),
transformers folders and timm's layout load strictly into the same model, architecture inferred;
every wrong file is one line. Models have blocks (1, 1, 2, 1) and, but where the size's name is
checked, widths (16, 32, 48, 64): the layouts and checks do not depend on the size."""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dino_core.errors import CheckpointError
from dino_models import checkpoint as ckpt
from dino_models.archs import resolve_arch
from dino_models.checkpoint import load_backbone
from dino_models.dinov3_convnext import SIZES
from dino_models.dinov3_convnext_checkpoint import infer_config

SHALLOW = (1, 1, 2, 1)
NARROW = (16, 32, 48, 64)
OFFICIAL_FILE = "dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth"


def _convnext(size: str = "tiny", seed: int = 0, narrow: bool = True):
    """A shallow ConvNeXt (narrow, or of ``size``'s widths) with LayerScale and norms drawn
    away from their init (so that every block and every norm changes the output)."""
    torch.manual_seed(seed)
    widths = {"dims": NARROW} if narrow else {}
    model = resolve_arch(f"dinov3_convnext_{size}").build(depths=SHALLOW, **widths).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.1 + (0.5 if name.endswith("gamma") else 0.0))
    return model


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


def _same_function(model, reference, size=(64, 96)) -> None:
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        a, b = model.forward_single_pass(x), reference.forward_single_pass(x)
    torch.testing.assert_close(a.cls, b.cls, atol=0, rtol=0)
    torch.testing.assert_close(a.patch, b.patch, atol=0, rtol=0)


# -- official layout -----------------------------------------------------------------------------
def test_official_file_loads_strictly_with_the_architecture_inferred(tmp_path):
    net = _convnext(narrow=False)
    state = net.state_dict()
    assert "norms.3.weight" in state  # the official module's alias of norm, in its files too
    torch.save(state, tmp_path / OFFICIAL_FILE)
    model, info = load_backbone(tmp_path / OFFICIAL_FILE)
    assert (info.family, info.arch, info.patch_size, info.embed_dim, info.depth, info.format) == \
        ("dinov3", "dinov3_convnext_tiny", 32, 768, 5, "official-pretrained")
    assert info.num_heads == 0 and info.num_registers == 0
    assert model.depths == SHALLOW and not model.training
    _same_function(model, net)


@pytest.mark.parametrize("size", list(SIZES))
def test_every_released_size_is_recognised_from_its_shapes(size):
    with torch.device("meta"):  # shapes only
        state = resolve_arch(f"dinov3_convnext_{size}").build().state_dict()
    cfg = infer_config(state, "x.pth")
    assert cfg.arch == f"dinov3_convnext_{size}" and (cfg.depths, cfg.dims) == SIZES[size]


def test_file_without_the_norms_alias_loads_and_a_different_alias_is_refused(tmp_path):
    net = _convnext()
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("norms.")}
    torch.save(state, tmp_path / "no_alias.pth")
    model, _ = load_backbone(tmp_path / "no_alias.pth")
    _same_function(model, net)
    state["norms.3.weight"] = state["norm.weight"] + 1
    torch.save(state, tmp_path / "bad_alias.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "bad_alias.pth")
    assert "norms.3.weight differs from norm.weight" in _one_line(e)


def _edited(tmp_path: Path, edit) -> Path:
    state = _convnext().state_dict()
    edit(state)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("edit,expect", [
    (lambda s: s.pop("stages.2.1.gamma"), "missing stages.2.1.gamma"),
    (lambda s: s.update({"head.weight": torch.zeros(10, 64)}), "unexpected head.weight"),
    (lambda s: s.update({"stages.0.0.grn.gamma": torch.zeros(16)}), "unexpected stages.0.0.grn"),
    (lambda s: s.update({"stages.1.0.pwconv1.weight": torch.zeros(8, 8)}),
     "stages.1.0.pwconv1.weight has shape (8, 8), expected (128, 32)"),
    (lambda s: s.update({"downsample_layers.0.0.weight": torch.zeros(16, 1, 4, 4)}),
     "RGB input"),
    (lambda s: s.update({"downsample_layers.2.1.weight": torch.zeros(48, 32)}),
     "expected a conv weight"),
    (lambda s: s.update({"stages.3.0.gamma": torch.zeros(64, dtype=torch.int64)}),
     "floating point"),
], ids=["missing", "unexpected", "convnext-v2-grn", "shape", "not-rgb", "not-a-conv", "int"])
def test_wrong_or_missing_keys_are_one_line(tmp_path, edit, expect):
    with pytest.raises(CheckpointError) as e:
        load_backbone(_edited(tmp_path, edit))
    assert expect in _one_line(e)


def test_shapes_describing_a_huge_model_are_refused_before_building(tmp_path):
    def huge(s):  # a stride-0 view: a 16384-wide last stage in a few bytes
        s["downsample_layers.3.1.weight"] = torch.zeros(1, 1, 1, 1).expand(16384, 48, 2, 2)
    with pytest.raises(CheckpointError) as e:
        load_backbone(_edited(tmp_path, huge))
    assert "refused to build a ConvNeXt" in _one_line(e)


# -- hub names -----------------------------------------------------------------------------------
def test_hub_name_is_read_from_the_cache_and_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("DINOv3 weights must not be downloaded"))
    cached = ckpt.hub_cache_path("dinov3_convnext_tiny")
    assert cached == tmp_path / "hub" / "checkpoints" / OFFICIAL_FILE
    with pytest.raises(CheckpointError) as e:
        load_backbone("dinov3_convnext_tiny")
    line = _one_line(e)
    assert "DINOv3 License" in line and str(cached) in line
    assert "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/" in line
    net = _convnext()
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    model, info = load_backbone("dinov3_convnext_tiny")
    assert info.arch == "dinov3_convnext_w64" and info.path == cached
    _same_function(model, net)


@pytest.mark.parametrize("size,tag", [("tiny", "21b726bb"), ("small", "296db49d"),
                                      ("base", "801f2ba9"), ("large", "61fa432d")])
def test_hub_names_use_the_official_file_names(size, tag):
    name = f"dinov3_convnext_{size}"
    assert ckpt.hub_url(name) == ("https://dl.fbaipublicfiles.com/dinov3/"
                                  f"{name}/{name}_pretrain_lvd1689m-{tag}.pth")


# -- transformers ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="transformers (the test extra) writes the "
                               "reference checkpoints")


def _hf_model(transformers, **extra):
    torch.manual_seed(0)
    config = transformers.DINOv3ConvNextConfig(
        depths=list(SHALLOW), hidden_sizes=[24, 48, 72, 96], layer_scale_init_value=0.5, **extra)
    model = transformers.DINOv3ConvNextModel(config).eval()
    with torch.no_grad():  # norms away from 1 and 0, so that a swapped one shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _save_pretrained(model, folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_transformers_folder_matches_transformers_outputs(tmp_path, transformers, size):
    hf = _hf_model(transformers, layer_norm_eps=1e-5)
    folder = _save_pretrained(hf, tmp_path / "hf")
    model, info = load_backbone(folder)
    assert (info.format, info.arch, info.embed_dim, info.depth) == \
        ("transformers", "dinov3_convnext_w96", 96, 5)
    assert model.norm.eps == 1e-5  # from config.json
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        ours = model.forward_single_pass(x)
    assert (ours.cls - ref[:, 0]).abs().max() <= 1e-4
    assert (ours.patch - ref[:, 1:]).abs().max() <= 1e-4


def test_transformers_in_memory_layout_loads_too(tmp_path, transformers):
    hf = _hf_model(transformers)
    folder = _save_pretrained(hf, tmp_path / "hf")
    state = hf.state_dict()  # transformers 5 holds model.stages.*
    assert any(k.startswith("model.stages.") for k in state)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    model, _ = load_backbone(folder / "model.safetensors")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - hf(pixel_values=x).pooler_output).abs().max() <= 1e-4


@pytest.mark.parametrize("change,expect", [
    ({"model_type": "convnext"}, "model_type 'convnext'"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"layer_norm_eps": "small"}, "layer_norm_eps 'small'"),
])
def test_bad_transformers_config_is_one_line(tmp_path, transformers, change, expect):
    folder = _save_pretrained(_hf_model(transformers), tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError) as e:
        load_backbone(folder)
    assert expect in _one_line(e)


def test_transformers_weights_without_config_or_with_a_stray_key_are_one_line(tmp_path,
                                                                              transformers):
    folder = _save_pretrained(_hf_model(transformers), tmp_path / "hf")
    lone = tmp_path / "lone"
    lone.mkdir()
    (folder / "model.safetensors").rename(lone / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_backbone(lone / "model.safetensors")
    assert "config.json" in _one_line(e)
    state = _hf_model(transformers).state_dict()
    state["model.stages.0.layers.0.grn.weight"] = torch.zeros(24)
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_backbone(folder)
    assert "unexpected key 'model.stages.0.layers.0.grn.weight' in a transformers" in _one_line(e)


# -- timm ------------------------------------------------------------------------------------------
_TO_TIMM = [  # timm's checkpoint_filter_fn (timm/models/convnext.py) on an official state dict
    (r"^downsample_layers\.0\.", "stem."),
    (r"^downsample_layers\.(\d)\.", r"stages.\1.downsample."),
    (r"^stages\.(\d)\.(\d+)\.", r"stages.\1.blocks.\2."),
    (r"\.dwconv\.", ".conv_dw."),
    (r"\.pwconv(\d)\.", r".mlp.fc\1."),
    (r"^norm\.", "head.norm."),
]


def _timm_layout(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        if key.startswith("norms."):
            continue  # timm discards the alias
        for pattern, repl in _TO_TIMM:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def test_timm_layout_loads_into_the_same_model(tmp_path):
    net = _convnext()
    timm_state = _timm_layout(net.state_dict())
    assert "stem.0.weight" in timm_state and "stages.2.blocks.1.mlp.fc2.bias" in timm_state
    save_file(timm_state, tmp_path / "model.safetensors")
    model, info = load_backbone(tmp_path / "model.safetensors")
    assert (info.format, info.arch) == ("timm", "dinov3_convnext_w64")
    _same_function(model, net)


def test_timm_classifier_is_refused_in_one_line(tmp_path):
    state = _timm_layout(_convnext().state_dict())
    state["head.fc.weight"] = torch.zeros(1000, 64)
    torch.save(state, tmp_path / "timm.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "timm.pth")
    assert "classifier (head.fc)" in _one_line(e)
