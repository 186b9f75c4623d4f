"""What a run leaves on disk: official checkpoint keys, the dino_edge record, logs, config."""
from __future__ import annotations

import argparse
import json

import pytest
import torch

from dino_core.cli import run
from dino_models.checkpoint import load_backbone
from dino_models.safe_load import load_pickle_checkpoint
from dino_train.cli import train_command

from .conftest import TINY_ARGS, write_images

PLAIN = (str, int, float, bool, list, type(None))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    images = write_images(tmp / "images", 8)
    (images / "broken.jpg").write_bytes(b"\x89PNG not really")
    out = tmp / "out"
    code = run(train_command, "dino-train", [*TINY_ARGS, "--data_path", str(images), "--output_dir", str(out),
                                "--max-steps", "3", "--saveckp_freq", "1", "--log-every", "2"])
    assert code == 0
    return out


def test_official_keys_and_safe_loading(run_dir):
    ckpt = load_pickle_checkpoint(run_dir / "checkpoint.pth")
    assert {"student", "teacher", "optimizer", "epoch", "args", "dino_loss", "dino_edge"} <= set(ckpt)
    assert all(k.startswith("module.backbone.") or k.startswith("module.head.")
               for k in ckpt["student"])
    assert "backbone.cls_token" in ckpt["teacher"] and "head.last_layer.weight_g" in ckpt["teacher"]
    assert ckpt["dino_loss"]["center"].shape == (1, 128)
    assert isinstance(ckpt["args"], argparse.Namespace)
    assert all(isinstance(v, PLAIN) for v in vars(ckpt["args"]).values())
    assert ckpt["args"].arch == "vit_tiny" and ckpt["args"].use_fp16 is False
    assert ckpt["epoch"] == 1  # 9 files (one broken), batch 4: 2 steps an epoch, epoch 0 done
    record = ckpt["dino_edge"]
    assert (record["num_heads"], record["patch_size"], record["depth"], record["step"]) == \
        (3, 16, 2, 3)
    assert "fp16_scaler" not in ckpt  # fp32 run


def test_backbone_loader_reads_it(run_dir):
    model, info = load_backbone(run_dir / "checkpoint.pth")
    assert info.format == "toolkit-training" and info.short_name == "vit_t16"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 192)


def test_epoch_checkpoints_logs_config_and_plot(run_dir):
    assert (run_dir / "checkpoint0000.pth").exists()
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    keys = {"step", "epoch", "loss", "lr", "wd", "momentum", "teacher_temp", "images_per_s",
            "data_time_s", "skipped_files"}
    assert records and all(keys <= set(r) for r in records)
    assert [r["step"] for r in records] == [2, 3]
    assert records[-1]["skipped_files"] >= 1  # broken.jpg was met at least once
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["total_batch"] == 4 and config["out_dim"] == 128
    assert (run_dir / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_max_steps_zero_saves_the_initial_weights(tmp_path):
    images = write_images(tmp_path / "images", 4)
    assert run(train_command, "dino-train", [*TINY_ARGS, "--data_path", str(images), "--output_dir",
                                str(tmp_path / "o"), "--max-steps", "0"]) == 0
    ckpt = load_pickle_checkpoint(tmp_path / "o" / "checkpoint.pth")
    student = {k[len("module."):]: v for k, v in ckpt["student"].items()}
    assert ckpt["dino_edge"]["step"] == 0
    assert all(torch.equal(student[k], v) for k, v in ckpt["teacher"].items())
