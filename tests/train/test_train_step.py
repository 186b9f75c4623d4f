"""One training step in each CPU precision gives the fp32 loss within that precision's tolerance."""
from __future__ import annotations

import pytest
import torch

from dino_train import distributed as D
from dino_train.train import Runtime, TrainConfig, build_trainer, train_step

from .conftest import write_images


def _first_losses(tmp_path, precision: str) -> list[float]:
    images = write_images(tmp_path / "images", 8)
    cfg = TrainConfig(arch="vit_tiny", depth=2, out_dim=256, batch_size_per_gpu=4,
                      local_crops_number=2, global_crop_size=32, local_crop_size=16,
                      data_path=str(images), output_dir=str(tmp_path / precision),
                      num_workers=0, drop_path_rate=0.0, random_crops=False, epochs=2,
                      warmup_epochs=0, lr=0.5, progress=False)
    t = build_trainer(cfg, Runtime(torch.device("cpu"), precision, D.DistInfo()))
    t.sampler.set_epoch(0)
    out = []
    for crops, _ in t.loader:
        out.append(train_step(t, crops))
        t.state.step += 1
    return out


@pytest.mark.parametrize("precision, rel", [("bf16", 1e-2), ("fp16", 5e-3)])
def test_low_precision_steps_track_fp32(tmp_path, precision, rel):
    ref = _first_losses(tmp_path, "fp32")
    low = _first_losses(tmp_path, precision)
    assert len(ref) == len(low) == 2 and ref[0] != ref[1]  # the update changed the loss
    assert low == pytest.approx(ref, rel=rel)
