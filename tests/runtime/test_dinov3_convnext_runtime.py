"""A DINOv3 ConvNeXt through the toolkit: an official-layout checkpoint goes through
``dino-export`` (verified on every CPU engine) and ``dino-run`` (embeddings, the PCA parts view);
the attention views are refused in one line; the torch backend on the checkpoint gives the same
outputs. The model is depth-reduced and narrow (blocks (1, 1, 2, 1), widths 16 to 64)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dino_export.onnx_export import read_metadata
from dino_models.archs import resolve_arch
from dino_runtime import Runtime

from .conftest import ROOT, assert_one_line_error, run_cli, synthetic_frame

SIZE = (96, 160)  # a 3x5 grid of the last stage (stride 32)


@pytest.fixture(scope="module")
def convnext_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = resolve_arch("dinov3_convnext_tiny").build(depths=(1, 1, 2, 1), dims=(16, 32, 48, 64))
    with torch.no_grad():  # LayerScale away from 1e-6 so that the blocks count
        for blk in (b for stage in model.stages for b in stage):
            blk.gamma.fill_(0.5)
    path = tmp_path_factory.mktemp("cnx") / "dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def convnext_onnx(convnext_checkpoint, tmp_path_factory) -> Path:
    """``dino-export`` run as users run it: verified against PyTorch before it is written."""
    out = tmp_path_factory.mktemp("cnx_onnx") / "convnext.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "dino_export.cli", str(convnext_checkpoint), "-o", str(out),
         "--img-size", *map(str, SIZE), "--dynamic-batch", "1", "4", "8"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "no attention" in done.stdout and "fp32 bounds: max|err| <= 1e-04 -> PASS" in done.stdout
    assert "FAIL" not in done.stdout
    return out


def test_exported_file_has_pooled_and_patch_outputs_only(convnext_onnx):
    meta = read_metadata(convnext_onnx)
    assert (meta.family, meta.has_attention, meta.patch_size, meta.embed_dim) == \
        ("dinov3", False, 32, 64)
    assert list(meta.outputs) == ["cls", "patch"]
    assert meta.outputs["patch"] == ["B", 15, 64]


def test_dino_run_embeddings_and_pca_parts_view(convnext_onnx, video_60, tmp_path):
    out, emb = tmp_path / "out.mp4", tmp_path / "cls.npy"
    code, stdout, err = run_cli("--model", convnext_onnx, "--source", video_60, "--pca",
                                "--save", out, "--embeddings", emb, "--batch", "4",
                                "--no-display")
    assert code == 0, err
    assert "no attention" in err and "frames 60 in" in stdout
    records = np.load(emb)
    assert records["cls"].shape == (60, 64) and np.isfinite(records["cls"]).all()
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    cap.release()


@pytest.mark.parametrize("flag", ["--show-attention", "--mask"])
def test_attention_views_are_refused_in_one_line(convnext_onnx, video_60, flag):
    code, _, err = run_cli("--model", convnext_onnx, "--source", video_60, flag, "--no-display")
    assert_one_line_error(code, err, flag, "without attention", "--embeddings", status=2)


def test_torch_backend_on_the_checkpoint_agrees_with_the_export(convnext_onnx,
                                                               convnext_checkpoint):
    frames = np.stack([synthetic_frame(i, SIZE) for i in range(3)])
    onnx_out = Runtime(convnext_onnx, backend="onnxruntime")(frames)
    torch_rt = Runtime(convnext_checkpoint, precision="fp32", input_size=SIZE)
    assert (torch_rt.metadata.family, torch_rt.metadata.has_attention) == ("dinov3", False)
    torch_out = torch_rt(frames)
    assert onnx_out.cls.shape == (3, 64) and onnx_out.patch.shape == (3, 15, 64)
    assert onnx_out.attn is None and torch_out.attn is None
    for name in ("cls", "patch"):
        assert np.abs(getattr(torch_out, name) - getattr(onnx_out, name)).max() <= 1e-4, name
