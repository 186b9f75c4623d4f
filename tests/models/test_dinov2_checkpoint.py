"""DINOv2 checkpoints: official files, hub names with pinned SHA-256, transformers folders and
timm layouts all load strictly into the same model, with the architecture inferred."""
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
from dino_models.checkpoint import HubFile, load_backbone


def _dinov2(name: str, depth: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return resolve_arch(name).build(depth=depth).eval()


def _same_weights(model, reference) -> bool:
    ref = reference.state_dict()
    return set(ref) == set(model.state_dict()) and \
        all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


@pytest.mark.parametrize("name,file,registers", [
    ("dinov2_s14", "dinov2_vits14_pretrain.pth", 0),
    ("dinov2_s14_reg", "dinov2_vits14_reg4_pretrain.pth", 4),
    ("dinov2_b14_reg", "dinov2_vitb14_reg4_pretrain.pth", 4),
])
def test_official_pretrained_files_infer_the_architecture(tmp_path, name, file, registers):
    net = _dinov2(name)
    torch.save(net.state_dict(), tmp_path / file)
    model, info = load_backbone(tmp_path / file)
    assert (info.family, info.num_registers, info.patch_size, info.depth) == \
        ("dinov2", registers, 14, 2)
    assert info.short_name == name and info.img_size == 518 and info.format == "official-pretrained"
    assert _same_weights(model, net)
    # each variant interpolates as the official hub builds it
    assert (model.interpolate_offset, model.interpolate_antialias) == \
        ((0.0, True) if registers else (0.1, False))
    x = torch.randn(1, 3, 42, 70)
    with torch.no_grad():
        torch.testing.assert_close(model(x), net(x), atol=0, rtol=0)


def test_giant_swiglu_is_inferred(tmp_path):
    net = _dinov2("dinov2_g14", depth=1)
    torch.save(net.state_dict(), tmp_path / "dinov2_vitg14_pretrain.pth")
    model, info = load_backbone(tmp_path / "dinov2_vitg14_pretrain.pth")
    assert info.short_name == "dinov2_g14" and info.num_heads == 24
    assert model.blocks[0].mlp.w12.weight.shape == (8192, 1536)
    assert _same_weights(model, net)


def test_real_size_vits14_layout(tmp_path):
    from dino_models import build_dinov2
    torch.manual_seed(0)
    torch.save(build_dinov2("vit_small").state_dict(), tmp_path / "w.pth")
    _, info = load_backbone(tmp_path / "w.pth")
    assert (info.short_name, info.num_heads, info.depth, info.img_size) == \
        ("dinov2_s14", 6, 12, 518)


@pytest.mark.parametrize("name,url,cached", [
    ("dinov2_vits14", ("https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/"
                       "dinov2_vits14_pretrain.pth"), "dinov2_vits14_pretrain.pth"),
    ("dinov2_vitg14_reg", ("https://dl.fbaipublicfiles.com/dinov2/dinov2_vitg14/"
                           "dinov2_vitg14_reg4_pretrain.pth"), "dinov2_vitg14_reg4_pretrain.pth"),
    ("dino_vits8", ("https://dl.fbaipublicfiles.com/dino/dino_deitsmall8_pretrain/"
                    "dino_deitsmall8_pretrain.pth"), "dino_deitsmall8_pretrain.pth"),
])
def test_hub_names_resolve_like_torch_hub(tmp_path, monkeypatch, name, url, cached):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert ckpt.hub_url(name) == url
    assert ckpt.hub_cache_path(name) == tmp_path / "hub" / "checkpoints" / cached


def test_pinned_hashes_are_sha256_hex():
    pinned = {n: e.sha256 for n, e in ckpt.HUB.items() if e.sha256}
    assert {"dinov2_vits14", "dinov2_vitb14"} <= set(pinned)
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pinned.values())


def _mirror(tmp_path: Path, monkeypatch, name: str, payload: bytes, sha256: str | None) -> Path:
    """A file:// mirror serving ``payload`` as hub file ``name`` with ``sha256`` pinned."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    entry = ckpt.HUB[name]
    folder = tmp_path / "mirror" / entry.folder
    folder.mkdir(parents=True)
    (folder / f"{entry.stem}.pth").write_bytes(payload)
    attr = "_DINOV2_BASE_URL" if entry.family == "dinov2" else "_BASE_URL"
    monkeypatch.setattr(ckpt, attr, (tmp_path / "mirror").as_uri())
    monkeypatch.setitem(ckpt.HUB, name, HubFile(entry.folder, entry.stem, sha256))
    return ckpt.hub_cache_path(name)


@pytest.mark.parametrize("name", ["dinov2_vits14_reg", "dino_vits16"])
def test_hub_download_with_the_pinned_hash_is_kept(tmp_path, monkeypatch, name, tiny_pretrained):
    payload = tiny_pretrained.read_bytes()
    import hashlib
    cached = _mirror(tmp_path, monkeypatch, name, payload, hashlib.sha256(payload).hexdigest())
    _, info = load_backbone(name)
    assert info.path == cached and cached.read_bytes() == payload


@pytest.mark.parametrize("name", ["dinov2_vits14", "dino_vitb8"])
def test_hub_download_with_another_hash_is_refused_and_removed(tmp_path, monkeypatch, name,
                                                               tiny_pretrained):
    cached = _mirror(tmp_path, monkeypatch, name, tiny_pretrained.read_bytes(), "0" * 64)
    with pytest.raises(CheckpointError) as e:
        load_backbone(name)
    text = _one_line(e)
    assert "SHA-256" in text and "0" * 64 in text and ckpt.hub_url(name) in text
    assert not any(cached.parent.iterdir())   # neither the file nor a .partial is kept


def test_cached_hub_file_with_another_hash_is_refused(tmp_path, monkeypatch, tiny_pretrained):
    cached = _mirror(tmp_path, monkeypatch, "dinov2_vitl14", b"", "1" * 64)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_pretrained.read_bytes())
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("a cached file is not downloaded again"))
    with pytest.raises(CheckpointError) as e:
        load_backbone("dinov2_vitl14")
    assert str(cached) in _one_line(e) and "delete the file" in str(e.value)


# -- transformers ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers", reason="transformers (the test extra) writes the "
                               "reference checkpoints")

HF_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
           "image_size": 56, "patch_size": 14, "layerscale_value": 0.5,
           "attn_implementation": "eager"}


def _hf_model(transformers, registers: int = 0, seed: int = 0, **extra):
    torch.manual_seed(seed)
    if registers:
        cfg = transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **HF_TINY,
                                                     **extra)
        return transformers.Dinov2WithRegistersModel(cfg).eval()
    return transformers.Dinov2Model(transformers.Dinov2Config(**HF_TINY, **extra)).eval()


def _save(model, folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("registers,extra", [(0, {}), (4, {}), (0, {"use_swiglu_ffn": True})],
                         ids=["Dinov2Model", "Dinov2WithRegistersModel", "swiglu"])
def test_transformers_checkpoint_matches_transformers_within_1e4(tmp_path, transformers,
                                                                 registers, extra):
    hf = _hf_model(transformers, registers, **extra)
    folder = _save(hf, tmp_path / "hf")
    for source in (folder, folder / "model.safetensors"):
        model, info = load_backbone(source)
        assert (info.format, info.family, info.num_registers, info.num_heads) == \
            ("transformers", "dinov2", registers, 4)
        x = torch.randn(2, 3, 56, 56)   # the checkpoint's native size
        with torch.no_grad():
            ref = hf(pixel_values=x, output_attentions=True)
            tokens = model.forward_tokens(x)
            out = model.forward_single_pass(x)
        r = 1 + registers
        assert (tokens - ref.last_hidden_state).abs().max() <= 1e-4
        assert (out.cls - ref.pooler_output).abs().max() <= 1e-4
        assert (out.patch - ref.last_hidden_state[:, r:]).abs().max() <= 1e-4
        last = ref.attentions[-1][:, :, 0]
        assert (out.attn - last[:, :, r:]).abs().max() <= 1e-4
        torch.testing.assert_close(out.attn_registers, last[:, :, 1:r], atol=1e-4, rtol=0)
        assert ref.last_hidden_state.std() > 0.1   # not a vacuous comparison


def test_transformers_classifier_checkpoint_loads_its_backbone(tmp_path, transformers):
    torch.manual_seed(1)
    cfg = transformers.Dinov2Config(num_labels=3, **HF_TINY)
    clf = transformers.Dinov2ForImageClassification(cfg).eval()
    model, info = load_backbone(_save(clf, tmp_path / "clf"))
    assert info.format == "transformers"
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        ref = clf.dinov2(pixel_values=x).pooler_output
        assert (model(x) - ref).abs().max() <= 1e-4


def test_transformers_state_dict_without_config_names_what_is_missing(tmp_path, transformers):
    folder = _save(_hf_model(transformers), tmp_path / "hf")
    lone = tmp_path / "lone"
    lone.mkdir()
    (folder / "model.safetensors").rename(lone / "model.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_backbone(lone / "model.safetensors")
    assert "config.json" in _one_line(e)


@pytest.mark.parametrize("change,expect", [
    ({"model_type": "vit"}, "model_type 'vit'"),
    ({"hidden_act": "relu"}, "hidden_act 'relu'"),
    ({"num_attention_heads": "four"}, "num_attention_heads 'four'"),
])
def test_bad_transformers_config_is_one_line(tmp_path, transformers, change, expect):
    folder = _save(_hf_model(transformers), tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError) as e:
        load_backbone(folder)
    assert expect in _one_line(e)


def test_folder_that_is_not_a_transformers_model_is_refused(tmp_path):
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path)
    assert "transformers folder" in _one_line(e)


# -- timm -------------------------------------------------------------------------------------
def _timm_layout(state: dict) -> dict:
    """timm's ``_convert_dinov2`` (timm 1.0.31, models/vision_transformer.py), applied to an
    official state dict, so the test needs no timm."""
    out = {k: v for k, v in state.items() if k != "mask_token"}
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, 0]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return {re.sub(r"mlp\.w12\.", "mlp.fc1.", re.sub(r"mlp\.w3\.", "mlp.fc2.", k)): v
            for k, v in out.items()}


@pytest.mark.parametrize("name", ["dinov2_s14", "dinov2_s14_reg", "dinov2_g14_reg"])
def test_timm_layout_gives_the_same_model(tmp_path, name):
    net = _dinov2(name, depth=1)
    save_file({k: v.contiguous() for k, v in _timm_layout(net.state_dict()).items()},
              tmp_path / "timm.safetensors")
    model, info = load_backbone(tmp_path / "timm.safetensors")
    assert info.format == "timm" and info.short_name == name
    x = torch.randn(1, 3, 56, 84)
    with torch.no_grad():
        a, b = model.forward_single_pass(x), net.forward_single_pass(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=0)


def test_real_timm_dinov2_weights_load_and_agree_with_timm(tmp_path):
    timm = pytest.importorskip("timm", reason="timm is not a dependency; this cross-check runs "
                                              "where it happens to be installed")
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, depth=2,
                            init_values=0.5).eval()
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    model, info = load_backbone(tmp_path / "timm.pth")
    x = torch.randn(1, 3, 518, 518)       # timm's native size
    with torch.no_grad():
        tokens = ref.forward_features(x)
        ours = model.forward_tokens(x)
    assert info.short_name == "dinov2_s14_reg"
    assert (ours - tokens).abs().max() <= 1e-4
