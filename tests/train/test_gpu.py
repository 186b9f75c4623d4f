"""GPU training steps (run by scripts/gpu_check.sh on a CUDA machine; skipped without one)."""
from __future__ import annotations

import math

import pytest
import torch

from dino_core.cli import run
from dino_train.cli import train_command

from .conftest import TINY_ARGS, losses, write_images

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_cuda_training_steps_are_finite(tmp_path, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    images = write_images(tmp_path / "images", 16)
    args = [a for a in TINY_ARGS if a not in ("--precision", "fp32")]
    code = run(train_command, "dino-train", [*args, "--data_path", str(images), "--output_dir",
                                str(tmp_path / "o"), "--device", "cuda", "--precision",
                                precision, "--max-steps", "6", "--num_workers", "2"])
    assert code == 0
    got = losses(tmp_path / "o")
    assert sorted(got) == [1, 2, 3, 4, 5, 6] and all(math.isfinite(v) for v in got.values())


def test_fp16_checkpoint_has_the_grad_scaler(tmp_path):
    from dino_models.safe_load import load_pickle_checkpoint
    images = write_images(tmp_path / "images", 8)
    args = [a for a in TINY_ARGS if a not in ("--precision", "fp32")]
    assert run(train_command, "dino-train", [*args, "--data_path", str(images), "--output_dir",
                                str(tmp_path / "o"), "--device", "cuda", "--max-steps", "2"]) == 0
    ckpt = load_pickle_checkpoint(tmp_path / "o" / "checkpoint.pth")
    assert "fp16_scaler" in ckpt and ckpt["dino_edge"]["precision"] == "fp16"  # auto on CUDA


def test_batched_views_on_cuda_match_the_cpu_views():
    from dino_train.batched_augment import BatchedMultiCrop
    from dino_train.data import CropConfig
    cfg = CropConfig(global_crop_size=32, local_crop_size=16, local_crops_number=2)
    images = torch.randint(0, 256, (8, 3, 40, 48), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    sizes = torch.tensor([[40, 48]] * 8)
    views = BatchedMultiCrop(cfg)
    cpu = views(images, sizes, torch.Generator().manual_seed(3))
    gpu = views(images.cuda(), sizes, torch.Generator().manual_seed(3))  # draws stay on the CPU
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda"
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


def test_cuda_training_with_batched_views(tmp_path):
    images = write_images(tmp_path / "images", 16)
    args = [a for a in TINY_ARGS if a not in ("--precision", "fp32")]
    code = run(train_command, "dino-train", [*args, "--data_path", str(images), "--output_dir",
                                str(tmp_path / "o"), "--device", "cuda", "--precision", "bf16",
                                "--augmentation", "batched", "--max-steps", "4",
                                "--num_workers", "2"])
    assert code == 0
    got = losses(tmp_path / "o")
    assert sorted(got) == [1, 2, 3, 4] and all(math.isfinite(v) for v in got.values())


@pytest.mark.skipif(torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA devices (NCCL takes one process per GPU)")
def test_two_gpu_processes_hand_nccl_only_tensors_on_their_own_gpu(tmp_path):
    """NCCL stopped a multi-GPU run at its first log record (a CPU tensor in all_reduce)."""
    import json

    from .test_ddp import _torchrun, off_device
    images = write_images(tmp_path / "images", 16)
    (tmp_path / "collectives").mkdir()
    args = [a for a in TINY_ARGS if a not in ("--precision", "fp32")]
    two = _torchrun(2, [*args, "--data_path", str(images), "--output_dir", str(tmp_path / "o"),
                        "--device", "cuda", "--batch_size_per_gpu", "4", "--max-steps", "3",
                        "--ibot-loss-weight", "1"], probe=tmp_path / "collectives")
    assert two.returncode == 0, two.stderr[-3000:]
    assert sorted(losses(tmp_path / "o")) == [1, 2, 3]
    for rank in (0, 1):
        calls = json.loads((tmp_path / "collectives" / f"rank{rank}.json").read_text())
        assert calls and off_device(calls, f"cuda:{rank}") == []
