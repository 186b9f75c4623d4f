"""DINOv2 through the toolkit: a checkpoint goes through ``dino-export`` (verified) and
``dino-run`` (attention view, masks, embeddings, the PCA parts view across images), and runs
from the checkpoint on the torch backend with the same outputs."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dino_models.archs import resolve_arch
from dino_runtime import Runtime
from dino_runtime.pca import PcaBasis

from .conftest import ROOT, assert_one_line_error, run_cli, synthetic_frame

SIZE = (98, 168)  # a 7x12 grid of 14-pixel patches, 16:9-ish


@pytest.fixture(scope="module")
def v2_checkpoint(tmp_path_factory) -> Path:
    """Official-layout DINOv2 ViT-S/14 with 4 registers, 2 blocks, random weights."""
    torch.manual_seed(21)
    path = tmp_path_factory.mktemp("v2rt") / "dinov2_vits14_reg4_pretrain.pth"
    torch.save(resolve_arch("dinov2_s14_reg").build(depth=2).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def v2_onnx(v2_checkpoint, tmp_path_factory) -> Path:
    """``dino-export`` run as users run it: verified against PyTorch before it is written."""
    out = tmp_path_factory.mktemp("v2rt_onnx") / "v2.onnx"
    done = subprocess.run(
        [sys.executable, "-m", "dino_export.cli", str(v2_checkpoint), "-o", str(out),
         "--img-size", *map(str, SIZE), "--dynamic-batch", "1", "4", "8",
         "--outputs", "cls,attn,patch,attn_registers"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "fp32 bounds: max|err| <= 1e-04 -> PASS" in done.stdout
    assert "dinov2 vit_small/14" in done.stdout and "4 registers" in done.stdout
    return out


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        cv2.imwrite(str(folder / f"{i:02d}.jpg"), synthetic_frame(3 * i, (120, 200)))
    return folder


def test_export_verify_run_every_output(v2_onnx, video_60, tmp_path):
    out, emb, masks = tmp_path / "out.mp4", tmp_path / "cls.npy", tmp_path / "masks"
    code, stdout, err = run_cli("--model", v2_onnx, "--source", video_60, "--show-attention",
                                "--mask", "--pca", "--save", out, "--embeddings", emb,
                                "--masks-dir", masks, "--batch", "4", "--no-display")
    assert code == 0, err
    assert "dinov2 vit_small/14 + 4 registers" in err and "frames 60 in" in stdout
    records = np.load(emb)
    assert records["cls"].shape == (60, 384)
    assert len(list(masks.glob("*.png"))) == 60
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    cap.release()


def test_runtime_gives_register_attention_and_torch_backend_agrees(v2_onnx, v2_checkpoint):
    frames = np.stack([synthetic_frame(i, SIZE) for i in range(3)])
    onnx_out = Runtime(v2_onnx, backend="onnxruntime")(frames)  # float32, as torch below
    assert onnx_out.attn.shape == (3, 6, 7, 12) and onnx_out.attn_registers.shape == (3, 6, 4)
    if importlib.util.find_spec("openvino") is not None:  # auto's CPU engine gives them too
        ov_out = Runtime(v2_onnx, backend="openvino", precision="fp32")(frames)
        np.testing.assert_allclose(ov_out.attn_registers, onnx_out.attn_registers, atol=1e-4)
    torch_rt = Runtime(v2_checkpoint, precision="fp32", input_size=SIZE)
    meta = torch_rt.metadata
    assert (meta.family, meta.num_registers, meta.patch_size) == ("dinov2", 4, 14)
    torch_out = torch_rt(frames)
    for name in ("cls", "attn", "patch", "attn_registers"):
        assert np.abs(getattr(torch_out, name) - getattr(onnx_out, name)).max() <= 1e-4, name


def test_pca_basis_fitted_on_a_folder_saved_and_reused(v2_onnx, photo_folder, video_60,
                                                       tmp_path):
    basis, first, second = tmp_path / "basis.npz", tmp_path / "a.mp4", tmp_path / "b.mp4"
    code, _, err = run_cli("--model", v2_onnx, "--source", video_60, "--pca", "--pca-fit",
                           photo_folder, "--pca-foreground", "--pca-save", basis,
                           "--save", first, "--max-frames", "8", "--no-display")
    assert code == 0, err
    assert f"PCA basis fitted on {photo_folder}" in err and f"written to {basis}" in err
    saved = PcaBasis.load(basis, dim=384)
    assert saved.has_foreground
    # The same basis, loaded: the run colours every frame exactly as the first one did.
    code, _, err = run_cli("--model", v2_onnx, "--source", video_60, "--pca", "--pca-fit", basis,
                           "--save", second, "--max-frames", "8", "--no-display")
    assert code == 0, err
    a, b = cv2.VideoCapture(str(first)), cv2.VideoCapture(str(second))
    for _ in range(8):
        (ok_a, img_a), (ok_b, img_b) = a.read(), b.read()
        assert ok_a and ok_b and np.array_equal(img_a, img_b)


def test_pca_basis_from_the_first_frames_is_saved(v2_onnx, video_60, tmp_path):
    code, _, err = run_cli("--model", v2_onnx, "--source", video_60, "--pca", "--pca-save",
                           tmp_path / "b.npz", "--max-frames", "4", "--no-display")
    assert code == 0, err
    assert PcaBasis.load(tmp_path / "b.npz").components.shape == (384, 3)


@pytest.mark.parametrize("args,expect,status", [
    (("--pca-fit", "x"), "--pca-fit colours patches by their PCA: add --pca", 2),
    (("--pca", "--pca-threshold", "1"), "--pca-threshold is the background threshold", 2),
    (("--pca", "--pca-save", "basis.txt"), "--pca-save basis.txt: expected a .npz", 2),
    (("--pca", "--pca-fit", "BROKEN"), "not a PCA basis written by dino-run --pca-save", 1),
    (("--pca", "--pca-fit", "EMPTY"), "no such file or folder", 1),
])
def test_pca_option_errors_are_one_line(v2_onnx, video_60, tmp_path, args, expect, status):
    broken, empty = tmp_path / "broken.npz", tmp_path / "empty"
    broken.write_bytes(b"junk")
    empty.mkdir()
    args = [str(broken) if a == "BROKEN" else str(empty / "none") if a == "EMPTY" else a
            for a in args]
    code, _, err = run_cli("--model", v2_onnx, "--source", video_60, *args, "--no-display")
    assert_one_line_error(code, err, expect, status=status)
