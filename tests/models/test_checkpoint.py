"""dino_models.checkpoint: every checkpoint kind loads strictly; bad files give one-line errors."""
from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dino_core.errors import CheckpointError
from dino_models import checkpoint as ckpt
from dino_models.checkpoint import load_backbone
from tests.conftest import official_training_checkpoint, tiny_vit


def _same_weights(model: torch.nn.Module, reference: torch.nn.Module) -> bool:
    ref = reference.state_dict()
    return all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text and text
    return text


def test_official_pretrained_file(tiny_pretrained):
    model, info = load_backbone(tiny_pretrained)
    assert (info.format, info.arch, info.patch_size, info.depth) == \
        ("official-pretrained", "vit_tiny", 16, 2)
    assert (info.num_heads, info.embed_dim, info.img_size) == (3, 192, 224)
    assert info.short_name == "vit_t16" and len(info.sha256) == 64
    assert _same_weights(model, tiny_vit())
    assert not model.training


def test_official_training_checkpoint_teacher_and_student(tmp_path):
    teacher_net, student_net = tiny_vit(seed=1), tiny_vit(seed=2)
    data = official_training_checkpoint(teacher_net)
    data["student"] = {f"module.backbone.{k}": v for k, v in student_net.state_dict().items()}
    data["student"].update({k.replace("head.", "module.head.", 1): v
                            for k, v in data["teacher"].items() if k.startswith("head.")})
    path = tmp_path / "checkpoint.pth"
    torch.save(data, path)
    model, info = load_backbone(path)
    assert (info.format, info.checkpoint_key, info.epoch) == ("official-training", "teacher", 7)
    assert _same_weights(model, teacher_net)
    model, info = load_backbone(path, checkpoint_key="student")
    assert info.checkpoint_key == "student" and _same_weights(model, student_net)


def test_toolkit_checkpoint_uses_its_record(tmp_path):
    data = official_training_checkpoint(tiny_vit())
    data["dino_edge"] = {"arch": "vit_tiny", "patch_size": 16, "num_heads": 3}
    torch.save(data, tmp_path / "c.pth")
    _, info = load_backbone(tmp_path / "c.pth")
    assert info.format == "toolkit-training" and info.num_heads == 3


def test_safetensors(tmp_path):
    net = tiny_vit(patch_size=8)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "m.safetensors")
    model, info = load_backbone(tmp_path / "m.safetensors")
    assert info.format == "safetensors" and info.patch_size == 8
    assert _same_weights(model, net)


def test_real_size_official_layout_infers_vit_s8(tmp_path):
    from dino_models import vit_small
    torch.save(vit_small(patch_size=8).state_dict(), tmp_path / "dino_deitsmall8_pretrain.pth")
    _, info = load_backbone(tmp_path / "dino_deitsmall8_pretrain.pth")
    assert (info.short_name, info.num_heads, info.depth) == ("vit_s8", 6, 12)


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"cls_token": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "evil.pth")
    assert "refused" in _one_line(e) and "system" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["missing", "directory", "truncated", "text", "empty", "resnet",
                                  "tensor", "bad-key"])
def test_bad_inputs_give_one_line_reasons(tmp_path, tiny_pretrained, tiny_training_checkpoint,
                                          kind):
    import torchvision
    path, key, expect = tmp_path / "x.pth", "teacher", ""
    if kind == "missing":
        expect = "no such file"
    elif kind == "directory":
        path, expect = tmp_path, "directory"
    elif kind == "truncated":
        path.write_bytes(tiny_pretrained.read_bytes()[:50_000])
        expect = "truncated"
    elif kind == "text":
        path.write_text("hello, not a checkpoint\n")
        expect = "not a PyTorch checkpoint"
    elif kind == "empty":
        path.write_bytes(b"")
        expect = "not a PyTorch checkpoint"
    elif kind == "resnet":
        torch.save(torchvision.models.resnet18().state_dict(), path)
        expect = "ResNet"
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
        expect = "not a state dict"
    elif kind == "bad-key":
        path, key, expect = tiny_training_checkpoint, "ema", "available: student, teacher"
    with pytest.raises(CheckpointError) as e:
        load_backbone(path, checkpoint_key=key)
    assert expect in _one_line(e)


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_strict_loading_names_the_key(tmp_path, change):
    state = tiny_vit().state_dict()
    if change == "missing":
        del state["blocks.1.mlp.fc2.bias"]
        expect = "missing blocks.1.mlp.fc2.bias"
    elif change == "unexpected":
        state["blocks.0.attn.extra"] = torch.zeros(1)
        expect = "unexpected blocks.0.attn.extra"
    else:
        state["norm.weight"] = torch.ones(7)
        expect = "norm.weight has shape (7,)"
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "s.pth")
    assert expect in _one_line(e)


def test_hub_name_resolves_from_cache_without_network(tmp_path, monkeypatch, tiny_pretrained):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    cached = ckpt.hub_cache_path("dino_vits8")
    assert cached == tmp_path / "hub" / "checkpoints" / "dino_deitsmall8_pretrain.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(tiny_pretrained.read_bytes())
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("must not download a cached file"))
    _, info = load_backbone("dino_vits8")
    assert info.path == cached and info.source == "dino_vits8"


def test_hub_download_is_real_and_atomic(tmp_path, monkeypatch, tiny_pretrained):
    # The real download code (torch.hub.download_url_to_file) fetching from a local file:// URL.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    mirror = tmp_path / "mirror" / "dino_deitsmall16_pretrain"
    mirror.mkdir(parents=True)
    (mirror / "dino_deitsmall16_pretrain.pth").write_bytes(tiny_pretrained.read_bytes())
    monkeypatch.setattr(ckpt, "_BASE_URL", (tmp_path / "mirror").as_uri())
    assert ckpt.hub_url("dino_vits16").startswith("file://")
    _, info = load_backbone("dino_vits16")
    assert info.path == ckpt.hub_cache_path("dino_vits16") and info.path.exists()
    assert not list(info.path.parent.glob("*.partial"))


def test_offline_error_names_url_and_cache_path(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url, dst, progress=True):
        Path(dst).write_bytes(b"partial")  # a half-written download must not survive
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError) as e:
        load_backbone("dino_vitb8")
    text = _one_line(e)
    assert ckpt.hub_url("dino_vitb8") in text and str(ckpt.hub_cache_path("dino_vitb8")) in text
    assert "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/" \
           "dino_vitbase8_pretrain.pth" in text
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())


def _deflated_copy(data: bytes, path: Path) -> Path:
    """``data`` (a torch.save zip) rewritten with every record deflated."""
    import io
    import zipfile
    with zipfile.ZipFile(io.BytesIO(data)) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return path


def test_a_zip_bomb_checkpoint_is_refused_before_it_is_inflated(tmp_path):
    """100 MB of zeros deflate to a 98 kB file (the issue's: 56 MB holding 12 GiB); torch.load
    inflated every byte of it before anything looked at the contents."""
    import io
    buf = io.BytesIO()
    torch.save({"cls_token": torch.zeros(25_000_000)}, buf)
    bomb = _deflated_copy(buf.getvalue(), tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 200_000
    with pytest.raises(CheckpointError) as e:
        load_backbone(bomb)
    assert "refused to load: its records declare 95.4 MiB of data in a 95.9 KiB file" in \
        _one_line(e) and "zip bomb" in str(e.value)


def test_a_deflated_but_honest_checkpoint_still_loads(tmp_path, tiny_pretrained):
    """Float weights barely compress, so a checkpoint someone re-zipped stays under the cap."""
    path = _deflated_copy(tiny_pretrained.read_bytes(), tmp_path / "deflated.pth")
    model, _ = load_backbone(path)
    assert _same_weights(model, tiny_vit())


def test_a_checkpoint_larger_than_free_memory_is_refused(tmp_path, tiny_pretrained, monkeypatch):
    from dino_core import memory
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 20)
    with pytest.raises(CheckpointError) as e:
        load_backbone(tiny_pretrained)
    assert "refused to load: its tensors need 4.1 MiB and this machine has 1.0 MiB " \
           "available" in _one_line(e)


def test_zero_stride_weights_describing_a_huge_model_are_refused_before_building(tmp_path):
    """A 2 kB file whose tensors are views with stride 0: shapes of a ViT 4096 wide and 1000
    blocks deep (about 800 GB of float32) that building the model would try to allocate."""
    d = 4096
    state = {"cls_token": torch.zeros(1).expand(1, 1, d),
             "pos_embed": torch.zeros(1).expand(1, 197, d),
             "patch_embed.proj.weight": torch.zeros(1).expand(d, 3, 16, 16),
             "blocks.0.mlp.fc1.weight": torch.zeros(1).expand(4 * d, d),
             "blocks.999.norm1.weight": torch.zeros(1).expand(d)}
    torch.save(state, tmp_path / "views.pth")
    assert (tmp_path / "views.pth").stat().st_size < 4000
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "views.pth")
    assert "a ViT 4096 wide and 1000 blocks deep" in _one_line(e) and "holds only" in str(e.value)


@pytest.mark.parametrize("record, expect", [
    ({"num_heads": 0}, "num_heads 0: expected an integer in 1..256"),
    ({"num_heads": "three"}, "num_heads 'three'"),
    ({"num_heads": 5}, "embed_dim 192 is not a multiple of num_heads 5"),
])
def test_a_toolkit_record_with_bad_heads_is_one_line(tmp_path, record, expect):
    data = official_training_checkpoint(tiny_vit())
    data["dino_edge"] = record
    torch.save(data, tmp_path / "c.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "c.pth")
    assert expect in _one_line(e)


@pytest.mark.parametrize("change, expect", [
    ("int-weights", "norm.weight holds torch.int64 values; expected floating point"),
    ("complex-weights", "norm.weight holds torch.complex64 values"),
    ("1d-pos-embed", "pos_embed has shape (37824,), expected (1, tokens, dim)"),
    ("no-mlp", "no blocks.0.mlp.fc1.weight"),
    ("int-key", "key 7 is not a string"),
    ("patch-0", "patch_embed.proj.weight has shape (192, 3, 0, 0)"),
])
def test_malformed_weights_are_one_line(tmp_path, change, expect):
    state = tiny_vit().state_dict()
    if change == "int-weights":
        state["norm.weight"] = state["norm.weight"].long()
    elif change == "complex-weights":
        state["norm.weight"] = state["norm.weight"].to(torch.complex64)
    elif change == "1d-pos-embed":
        state["pos_embed"] = state["pos_embed"].flatten()
    elif change == "no-mlp":
        state = {k: v for k, v in state.items() if "blocks.0.mlp.fc1" not in k}
    elif change == "int-key":
        state[7] = torch.zeros(1)
    elif change == "patch-0":
        state["patch_embed.proj.weight"] = torch.zeros(192, 3, 0, 0)
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(CheckpointError) as e:
        load_backbone(tmp_path / "s.pth")
    assert expect in _one_line(e)
