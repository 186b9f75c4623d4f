"""One training step in each CPU precision gives the fp32 loss within that precision's tolerance."""
from __future__ import annotations

import pytest
import torch

from dino_train import distributed as D
from dino_train.builders import build_trainer
from dino_train.config import TrainConfig
from dino_train.context import TrainContext
from dino_train.loss import koleo_loss
from dino_train.step import train_step

from .conftest import write_images


def _trainer(tmp_path, precision: str, **options):
    images = tmp_path / "images"
    if not images.exists():
        write_images(images, 8)
    cfg = TrainConfig(arch="vit_tiny", depth=2, out_dim=256, batch_size_per_gpu=4,
                      local_crops_number=2, global_crop_size=32, local_crop_size=16,
                      data_path=str(images), output_dir=str(tmp_path / precision),
                      num_workers=0, drop_path_rate=0.0, random_crops=False, epochs=2,
                      warmup_epochs=0, lr=0.5, progress=False, **options)
    t = build_trainer(cfg, TrainContext(torch.device("cpu"), precision, D.DistInfo()))
    t.sampler.set_epoch(0)
    return t


def _first_losses(tmp_path, precision: str, **options) -> list[float]:
    t = _trainer(tmp_path, precision, **options)
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


def test_koleo_term_is_added_to_the_first_loss(tmp_path):
    """The first step's loss (before any update) is the DINO loss plus w * KoLeo of 2 crops."""
    plain = _first_losses(tmp_path, "fp32")[0]
    weighted = _first_losses(tmp_path, "fp32", koleo_loss_weight=0.5)[0]
    t = _trainer(tmp_path, "fp32")  # same seed: the same initial student and first batch
    crops, _ = next(iter(t.loader))
    with torch.no_grad():
        koleo = sum(koleo_loss(t.nets.student.backbone(c)).item() for c in crops[:2])
    assert weighted == pytest.approx(plain + 0.5 * koleo, rel=1e-5)
    assert weighted != pytest.approx(plain, rel=1e-3)
