"""dino-train / dino-eval command lines: official spellings, defaults, one-line errors."""
from __future__ import annotations

import json
import math

import pytest

from dino_core.cli import run
from dino_models.safe_load import load_pickle_checkpoint
from dino_train.cli import INTERRUPTED, config_values, eval_group, train_command
from dino_train.train import TrainConfig

from .conftest import TINY_ARGS, run_cli, write_images

# The official README's ViT-S/8 command, extended with every other official argument.
OFFICIAL_COMMAND = (
    "--arch vit_small --patch_size 8 --data_path /data/train --output_dir /out "
    "--out_dim 65536 --norm_last_layer false --momentum_teacher 0.9995 --use_bn_in_head false "
    "--warmup_teacher_temp 0.04 --teacher_temp 0.07 --warmup_teacher_temp_epochs 30 "
    "--use_fp16 false --weight_decay 0.04 --weight_decay_end 0.4 --clip_grad 0 "
    "--batch_size_per_gpu 32 --epochs 800 --freeze_last_layer 1 --lr 0.0005 --warmup_epochs 10 "
    "--min_lr 1e-6 --optimizer adamw --drop_path_rate 0.1 --global_crops_scale 0.25 1 "
    "--local_crops_number 10 --local_crops_scale 0.05 0.25 --saveckp_freq 20 --seed 0 "
    "--num_workers 10 --dist_url env:// --local_rank 0").split()


def _config(args: list[str]) -> TrainConfig:
    ctx = train_command.make_context("dino-train", list(args))
    return TrainConfig(**config_values(ctx.params))


def test_official_command_line_parses_with_underscore_names():
    cfg = _config(OFFICIAL_COMMAND)
    assert (cfg.arch, cfg.patch_size, cfg.norm_last_layer, cfg.precision) == \
        ("vit_small", 8, False, "fp32")
    assert cfg.global_crops_scale == (0.25, 1.0) and cfg.local_crops_number == 10
    assert cfg.warmup_teacher_temp_epochs == 30 and cfg.clip_grad == 0
    assert cfg.momentum_teacher == 0.9995 and cfg.epochs == 800
    assert cfg.resolved_arch().short_name == "vit_s8"


def test_dashed_names_and_official_defaults():
    cfg = _config(["--data-path", "/d", "--batch-size-per-gpu", "8", "--arch", "vit_s8"])
    assert cfg.batch_size_per_gpu == 8 and cfg.resolved_arch().patch_size == 8
    official_defaults = dict(
        out_dim=65536, norm_last_layer=True, momentum_teacher=0.996, use_bn_in_head=False,
        warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0,
        weight_decay=0.04, weight_decay_end=0.4, clip_grad=3.0, epochs=100,
        freeze_last_layer=1, lr=0.0005, warmup_epochs=10, min_lr=1e-6, optimizer="adamw",
        drop_path_rate=0.1, global_crops_scale=(0.4, 1.0), local_crops_number=8,
        local_crops_scale=(0.05, 0.4), output_dir=".", saveckp_freq=20, seed=0,
        num_workers=10, dist_url="env://")
    assert {k: getattr(cfg, k) for k in official_defaults} == official_defaults
    assert _config(["--data-path", "/d"]).batch_size_per_gpu == 64
    assert cfg.resume is True and cfg.precision == "auto"
    assert cfg.color_jitter == 1.0 and cfg.crops().color_jitter == 1.0


def test_dinov2_options_run_and_log_the_koleo_term(tmp_path):
    images = write_images(tmp_path / "images", 8)
    out = tmp_path / "out"
    result = run_cli([*TINY_ARGS, "--data_path", str(images), "--output_dir", str(out),
                      "--max-steps", "2", "--centering", "sinkhorn_knopp",
                      "--koleo-loss-weight", "0.1"])
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["koleo"]) for r in steps)
    config = json.loads((out / "config.json").read_text())
    assert (config["centering"], config["koleo_loss_weight"]) == ("sinkhorn_knopp", 0.1)
    args = load_pickle_checkpoint(out / "checkpoint.pth")["args"]
    assert (args.centering, args.koleo_loss_weight) == ("sinkhorn_knopp", 0.1)


def test_ibot_option_runs_logs_its_term_and_keeps_official_keys(tmp_path):
    images = write_images(tmp_path / "images", 8)
    out = tmp_path / "out"
    result = run_cli([*TINY_ARGS, "--data_path", str(images), "--output_dir", str(out),
                      "--max-steps", "2", "--ibot-loss-weight", "1", "--ibot-mask-ratio",
                      "0.2", "0.4"])
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(math.isfinite(r["ibot"]) and r["ibot"] > 0 for r in steps)
    ckpt = load_pickle_checkpoint(out / "checkpoint.pth")
    assert set(ckpt["ibot"]) == {"mask_token", "center"}
    assert ckpt["ibot"]["mask_token"].shape == (192,)
    assert not any("mask" in k for k in [*ckpt["student"], *ckpt["teacher"]])
    assert (ckpt["args"].ibot_loss_weight, list(ckpt["args"].ibot_mask_ratio)) == (1.0, [0.2, 0.4])


def test_resuming_with_or_without_ibot_against_the_checkpoint_is_one_line(capsys, tmp_path):
    images = write_images(tmp_path / "images", 8)
    common = [*TINY_ARGS, "--data_path", str(images), "--output_dir", str(tmp_path / "out")]
    assert run(train_command, "dino-train", [*common, "--max-steps", "1"]) == 0
    capsys.readouterr()
    err = _one_line_error(capsys, train_command, [*common, "--max-steps", "2",
                                                  "--ibot-loss-weight", "1"])
    assert "written without --ibot-loss-weight" in err


def test_head_sizes_reach_both_heads_and_resuming_with_other_sizes_is_one_line(capsys,
                                                                              tmp_path):
    images = write_images(tmp_path / "images", 8)
    common = [*TINY_ARGS, "--data_path", str(images), "--output_dir", str(tmp_path / "out")]
    sizes = ["--head-hidden-dim", "48", "--head-bottleneck-dim", "24"]
    assert run(train_command, "dino-train", [*common, "--max-steps", "1", *sizes]) == 0
    ckpt = load_pickle_checkpoint(tmp_path / "out" / "checkpoint.pth")
    for net in ("student", "teacher"):
        state = {k.removeprefix("module."): v for k, v in ckpt[net].items()}
        linears = [k for k in state if k.startswith("head.mlp.") and k.endswith(".weight")
                   and state[k].dim() == 2]
        assert [tuple(state[k].shape[:1]) for k in linears] == [(48,), (48,), (24,)]
        assert state["head.last_layer.weight_v"].shape[1] == 24
    assert (ckpt["args"].head_hidden_dim, ckpt["args"].head_bottleneck_dim) == (48, 24)
    capsys.readouterr()
    err = _one_line_error(capsys, train_command, [*common, "--max-steps", "2"])
    assert "written with --head-hidden-dim 48 (this run: 2048)" in err


def test_colour_jitter_strength_reaches_the_crops():
    cfg = _config(["--data-path", "/d", "--color-jitter", "2"])
    assert cfg.crops().color_jitter == 2.0


def _one_line_error(capsys, command, args, status: int = 1) -> str:
    """One ``PROG: reason`` line and ``status``: 1 a user error, 2 a usage error."""
    prog = "dino-eval" if command is eval_group else "dino-train"
    code = run(command, prog, args)
    err = capsys.readouterr().err.strip()
    assert code == status, err
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: "), err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("args, expected, status", [
    ([], "--data-path is required", 2),
    (["--data_path", "/no/such/folder"], "not a directory", 1),
    (["--data_path", "{images}", "--arch", "resnet50"], "unknown architecture", 2),
    (["--data_path", "{images}", "--arch", "vit_s8", "--patch_size", "16"], "patch size 8", 2),
    (["--data_path", "{images}", "--precision", "fp8"], "'fp8' is not one of", 2),
    (["--data_path", "{images}", "--optimizer", "adam"], "'adam' is not one of", 2),
    (["--data_path", "{images}", "--epochs", "ten"], "'ten' is not a valid integer", 2),
    (["--data_path", "{images}", "--use_fp16", "true", "--precision", "bf16"], "contradicts", 2),
    (["--data_path", "{images}", "--batch_size_per_gpu", "64"], "fewer than one batch", 1),
    (["--data_path", "{empty}"], "no images or videos found", 1),
    (["--data_path", "{images}", "--device", "cuda"], "no CUDA device", 1),
    (["--data_path", "{images}", "--warmup_epochs", "50"], "--warmup-epochs", 2),
    (["--data_path", "{images}", "--color-jitter", "-1"], "--color-jitter", 2),
    (["--data_path", "{images}", "--centering", "mean"], "'mean' is not one of", 2),
    (["--data_path", "{images}", "--koleo-loss-weight", "-0.1"], "--koleo-loss-weight", 2),
    (["--data_path", "{images}", "--ibot-loss-weight", "-1"], "--ibot-loss-weight", 2),
    (["--data_path", "{images}", "--ibot-mask-ratio", "0.5", "0.2"], "--ibot-mask-ratio", 2),
    (["--data_path", "{images}", "--ibot-mask-probability", "0"], "--ibot-mask-probability", 2),
    (["--data_path", "{images}", "--head-hidden-dim", "0"], "--head-hidden-dim", 2),
])
def test_bad_input_is_one_line(capsys, tmp_path, args, expected, status):
    if "cuda" in args:
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present, so --device cuda is valid here")
    images = write_images(tmp_path / "images", 4)
    (tmp_path / "empty").mkdir()
    args = [a.format(images=images, empty=tmp_path / "empty") for a in args]
    err = _one_line_error(capsys, train_command, [*TINY_ARGS, "--output_dir",
                                                  str(tmp_path / "out"), *args]
                          if args else [], status)
    assert expected in err
    assert not (tmp_path / "out").exists()  # a failed start leaves no empty output folder


def test_output_dir_that_is_a_file_is_one_line(capsys, tmp_path):
    images = write_images(tmp_path / "images", 4)
    (tmp_path / "out").write_text("not a folder")
    err = _one_line_error(capsys, train_command, [*TINY_ARGS, "--data_path", str(images),
                                                  "--output_dir", str(tmp_path / "out")])
    assert "exists and is not a directory" in err
    assert (tmp_path / "out").read_text() == "not a folder"


def test_eval_bad_input_is_one_line(capsys, tmp_path, tiny_training_checkpoint):
    err = _one_line_error(capsys, eval_group, ["knn", "--checkpoint", str(tmp_path / "nope.pth"),
                                               "--train-data", str(tmp_path),
                                               "--val-data", str(tmp_path)])
    assert "no such file" in err
    err = _one_line_error(capsys, eval_group, [
        "knn", "--checkpoint", str(tiny_training_checkpoint), "--train-data", str(tmp_path),
        "--val-data", str(tmp_path), "--nb-knn", "ten"], status=2)
    assert "--nb-knn" in err


def test_nan_loss_stops_with_advice_and_keeps_last_checkpoint(capsys, tmp_path, monkeypatch):
    import torch

    import dino_train.step as step_mod
    real = step_mod.forward_loss

    def diverging(t, crops, epoch):
        loss = real(t, crops, epoch)
        return loss * float("nan") if t.state.step == 3 else loss

    monkeypatch.setattr(step_mod, "forward_loss", diverging)
    images = write_images(tmp_path / "images", 16)
    out = tmp_path / "out"
    code = run(train_command, "dino-train", [*TINY_ARGS, "--data_path", str(images), "--output_dir", str(out),
                                "--max-steps", "10", "--ckpt-every-steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "loss is nan at step 3" in err and "lower --lr" in err and "step 2" in err
    ckpt = load_pickle_checkpoint(out / "checkpoint.pth")
    assert ckpt["dino_edge"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["teacher"].values())


def test_folder_of_only_corrupt_files_is_one_line_with_workers(tmp_path):
    """The reason is raised in a DataLoader worker; the user still gets one line."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(b"not a jpeg at all")
    proc = run_cli(["--data-path", str(data), "--output-dir", str(tmp_path / "out"),
                    "--arch", "vit_tiny", "--depth", "1", "--batch-size-per-gpu", "1",
                    "--num-workers", "1", "--max-steps", "1", "--no-progress"])
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("dino-train: warning: skipping")]
    errors = [line for line in lines if line.startswith("dino-train:") and line not in warnings]
    assert errors == ["dino-train: no readable image in the dataset"]
    assert warnings and all("a.jpg" in line for line in warnings)  # through logging, by name
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out" / "checkpoint.pth").exists()


def test_ctrl_c_is_one_line_and_status_130(capsys):
    # click's main turns a KeyboardInterrupt raised inside a command into Abort; both must end
    # as one line, not the traceback the first version printed.
    import click

    @click.command()
    def interrupted() -> None:
        raise KeyboardInterrupt

    assert run(interrupted, "dino-train", [], interrupted=INTERRUPTED) == 130
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == ["dino-train: interrupted; run the same command again to resume"]
