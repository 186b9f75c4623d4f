"""DINOv3 through the toolkit: a ViT checkpoint and a ConvNeXt checkpoint each go through
``dino-export`` (verified on every CPU engine) and ``dino-run``: the ViT with the attention view,
masks, embeddings and the PCA parts view; the ConvNeXt, which has no attention, with embeddings
and the PCA view, its attention options refused in one line. Both run from the checkpoint on
the torch backend with the exported file's outputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dino_export.cli import main as export_main
from dino_models.archs import resolve_arch
from dino_runtime import Runtime

from .conftest import assert_one_line_error, run_cli, synthetic_frame

VIT_SIZE = (96, 176)    # a 6x11 grid of 16-pixel patches
CONVNEXT_SIZE = (96, 160)  # a 3x5 grid at stride 32


def _export(checkpoint: Path, out: Path, size: tuple[int, int], *extra: str, capsys) -> str:
    """``dino-export`` as users run it (verified before it is written); its stdout."""
    with pytest.raises(SystemExit) as done:
        export_main([str(checkpoint), "-o", str(out), "--img-size", *map(str, size),
                     "--dynamic-batch", "1", "4", "8", *extra])
    out_text, err = capsys.readouterr()
    assert done.value.code == 0, err
    return out_text


@pytest.fixture(scope="module")
def vit_checkpoint(tmp_path_factory) -> Path:
    """Official-layout DINOv3 ViT-S/16, 2 blocks, random weights."""
    torch.manual_seed(33)
    path = tmp_path_factory.mktemp("v3rt") / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    torch.save(resolve_arch("dinov3_s16").build(depth=2).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def convnext_checkpoint(tmp_path_factory) -> Path:
    """Official-layout DINOv3 ConvNeXt of the Tiny layout, one block per stage, narrow."""
    torch.manual_seed(34)
    net = resolve_arch("dinov3_convnext_tiny").build(depths=(1, 1, 1, 1), dims=(24, 48, 96, 192))
    path = tmp_path_factory.mktemp("v3rt") / "convnext.pth"
    torch.save(net.state_dict(), path)
    return path


def test_vit_export_verify_run_every_view(vit_checkpoint, video_60, tmp_path, capsys):
    model = tmp_path / "v3.onnx"
    log = _export(vit_checkpoint, model, VIT_SIZE, "--outputs", "cls,attn,patch,attn_registers",
                  capsys=capsys)
    assert "dinov3 vit_small/16" in log and "4 registers" in log
    assert log.count("fp32 bounds: max|err| <= 1e-04 -> PASS") >= 1
    out, emb, masks = tmp_path / "out.mp4", tmp_path / "cls.npy", tmp_path / "masks"
    code, stdout, err = run_cli("--model", model, "--source", video_60, "--show-attention",
                                "--mask", "--pca", "--save", out, "--embeddings", emb,
                                "--masks-dir", masks, "--batch", "4", "--max-frames", "12",
                                "--no-display")
    assert code == 0, err
    assert "dinov3 vit_small/16 + 4 registers" in err and "frames 12 in" in stdout
    assert np.load(emb)["cls"].shape == (12, 384)
    assert len(list(masks.glob("*.png"))) == 12 and out.stat().st_size > 0
    # the checkpoint on the torch backend gives the exported file's outputs
    frames = np.stack([synthetic_frame(i, VIT_SIZE) for i in range(3)])
    onnx_out = Runtime(model, backend="onnxruntime")(frames)
    torch_out = Runtime(vit_checkpoint, precision="fp32", input_size=VIT_SIZE)(frames)
    assert onnx_out.attn.shape == (3, 6, 6, 11) and onnx_out.attn_registers.shape == (3, 6, 4)
    for name in ("cls", "attn", "patch", "attn_registers"):
        assert np.abs(getattr(torch_out, name) - getattr(onnx_out, name)).max() <= 1e-4, name
    assert onnx_out.masks is not None and onnx_out.masks.any()


def test_convnext_export_verify_run_embeddings_and_parts(convnext_checkpoint, video_60,
                                                         tmp_path, capsys):
    model = tmp_path / "convnext.onnx"
    log = _export(convnext_checkpoint, model, CONVNEXT_SIZE, capsys=capsys)  # default outputs
    assert "stride 32" in log and "no attention" in log and "-> PASS" in log
    emb, out = tmp_path / "cls.npy", tmp_path / "parts.mp4"
    code, stdout, err = run_cli("--model", model, "--source", video_60, "--pca", "--embeddings",
                                emb, "--save", out, "--max-frames", "8", "--no-display")
    assert code == 0, err
    assert "stride 32, no attention" in err and "frames 8 in" in stdout
    assert np.load(emb)["cls"].shape == (8, 192)
    code, _, err = run_cli("--model", model, "--source", video_60, "--show-attention",
                           "--no-display")
    assert_one_line_error(code, err, "--show-attention", "without attention", "--embeddings",
                          status=2)
    frames = np.stack([synthetic_frame(i, CONVNEXT_SIZE) for i in range(2)])
    onnx_out = Runtime(model, backend="onnxruntime")(frames)
    assert onnx_out.attn is None and onnx_out.masks is None
    assert onnx_out.patch.shape == (2, 15, 192)
    torch_rt = Runtime(convnext_checkpoint, precision="fp32", input_size=CONVNEXT_SIZE)
    assert (torch_rt.metadata.has_attention, torch_rt.metadata.num_heads) == (False, 0)
    torch_out = torch_rt(frames)
    for name in ("cls", "patch"):
        assert np.abs(getattr(torch_out, name) - getattr(onnx_out, name)).max() <= 1e-4, name


def test_convnext_attention_outputs_are_refused_in_one_line(convnext_checkpoint, tmp_path,
                                                            capsys):
    with pytest.raises(SystemExit) as done:
        export_main([str(convnext_checkpoint), "-o", str(tmp_path / "m.onnx"), "--outputs",
                     "cls,attn", "--img-size", "64", "64"])
    _, err = capsys.readouterr()
    assert done.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--outputs attn" in lines[0] and "no attention" in lines[0]
    assert not (tmp_path / "m.onnx").exists()
