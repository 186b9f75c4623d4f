"""One declaration of the options: the CLI's defaults are TrainConfig's, every official argument
exists with its official default, and every value outside its range is one line and status 2."""
from __future__ import annotations

import dataclasses

import pytest

from dino_core.cli import run
from dino_core.errors import OptionError
from dino_train.cli import config_values, train_command
from dino_train.config import TrainConfig, option_of

from .conftest import TINY_ARGS, write_images

# Every argument of facebookresearch/dino main_dino.py (get_args_parser, commit 04c0ad9) with
# its default, written out here so that a change on either side shows.
OFFICIAL_DEFAULTS = {
    "arch": "vit_small", "patch_size": 16, "out_dim": 65536, "norm_last_layer": True,
    "momentum_teacher": 0.996, "use_bn_in_head": False, "warmup_teacher_temp": 0.04,
    "teacher_temp": 0.04, "warmup_teacher_temp_epochs": 0, "use_fp16": True,
    "weight_decay": 0.04, "weight_decay_end": 0.4, "clip_grad": 3.0, "batch_size_per_gpu": 64,
    "epochs": 100, "freeze_last_layer": 1, "lr": 0.0005, "warmup_epochs": 10, "min_lr": 1e-6,
    "optimizer": "adamw", "drop_path_rate": 0.1, "global_crops_scale": (0.4, 1.0),
    "local_crops_number": 8, "local_crops_scale": (0.05, 0.4),
    "data_path": "/path/to/imagenet/train/", "output_dir": ".", "saveckp_freq": 20, "seed": 0,
    "num_workers": 10, "dist_url": "env://", "local_rank": 0,
}


def _params() -> dict[str, object]:
    """Click parameter name -> default, as ``dino-train`` declares them."""
    return {p.name: p.default for p in train_command.params}


def _config(args: list[str]) -> TrainConfig:
    ctx = train_command.make_context("dino-train", list(args))
    return TrainConfig(**config_values(ctx.params))


def test_cli_defaults_are_the_config_defaults():
    assert _config(["--data-path", "/d"]) == TrainConfig(data_path="/d")
    params = _params()
    for f in dataclasses.fields(TrainConfig):
        default = params[f.name]
        assert (tuple(default) if isinstance(default, list) else default) == f.default, f.name


def test_cli_help_is_the_declared_help_and_range():
    options = {p.name: p for p in train_command.params}
    for f in dataclasses.fields(TrainConfig):
        how = option_of(f)
        assert how.help in options[f.name].help, f.name
        if how.range is not None:
            assert f"must be {how.range}" in options[f.name].help, f.name


def test_every_official_argument_exists_with_its_official_default():
    params = {p.name: p for p in train_command.params}
    for name in OFFICIAL_DEFAULTS:
        assert f"--{name}" in params[name].opts + params[name].secondary_opts, name
    cfg = _config(["--data-path", "/d"])
    same = {name: getattr(cfg, name) for name in OFFICIAL_DEFAULTS if hasattr(cfg, name)}
    differs = {name for name in OFFICIAL_DEFAULTS if same.get(name) != OFFICIAL_DEFAULTS[name]}
    # The four that differ, each with the official meaning: patch size 16 for vit_small;
    # use_fp16 unset means --precision auto, fp16 on CUDA as the official True; the data path
    # has no placeholder (it is required); local_rank is torchrun's, accepted and unused.
    assert differs == {"patch_size", "use_fp16", "data_path", "local_rank"}
    assert cfg.patch_size is None and cfg.resolved_arch().patch_size == 16
    assert params["use_fp16"].default is None and cfg.precision == "auto"
    assert params["local_rank"].default == 0 and params["local_rank"].hidden
    assert cfg.official_args().use_fp16 is False  # auto is recorded as fp16 only on CUDA


# (option and value, what the message says): each exits 2 with one line, before any work.
OUT_OF_RANGE = [
    (["--lr", "-1"], "--lr -1: must be >= 0"),
    (["--depth", "-1"], "--depth -1: must be >= 1"),
    (["--depth", "0"], "--depth 0: must be >= 1"),
    (["--global-crop-size", "0"], "--global-crop-size 0: must be >= 1"),
    (["--global-crop-size", "17"], "--global-crop-size 17: must be a multiple of the patch size "
                                   "16 (vit_t16)"),
    (["--local-crop-size", "17"], "--local-crop-size 17: must be a multiple of the patch size 16"),
    (["--patch-size", "7"], "--global-crop-size 32: must be a multiple of the patch size 7"),
    (["--patch_size", "0"], "--patch-size 0: must be >= 1"),
    (["--num-workers", "-1"], "--num-workers -1: must be >= 0"),
    (["--video-stride", "0"], "--video-stride 0: must be >= 1"),
    (["--teacher_temp", "0"], "--teacher-temp 0: must be > 0"),
    (["--warmup_teacher_temp", "-0.1"], "--warmup-teacher-temp -0.1: must be > 0"),
    (["--seed", "-1"], "--seed -1: must be in [0, 4294967295]"),
    (["--drop_path_rate", "1"], "--drop-path-rate 1: must be in [0, 1)"),
    (["--global_crops_scale", "0.5", "0.2"], "--global-crops-scale 0.5 0.2: takes MIN MAX"),
    (["--local_crops_scale", "0", "0.4"], "--local-crops-scale 0 0.4: must be in (0, 1]"),
    (["--weight_decay", "-1"], "--weight-decay -1: must be >= 0"),
    (["--clip_grad", "-1"], "--clip-grad -1: must be >= 0"),
    (["--freeze_last_layer", "-1"], "--freeze-last-layer -1: must be >= 0"),
    (["--min_lr", "-1"], "--min-lr -1: must be >= 0"),
    (["--momentum_teacher", "1.5"], "--momentum-teacher 1.5: must be in [0, 1]"),
    (["--saveckp_freq", "-1"], "--saveckp-freq -1: must be >= 0"),
    (["--max-steps", "-1"], "--max-steps -1: must be >= 0"),
    (["--max-minutes", "-1"], "--max-minutes -1: must be > 0"),
    (["--ckpt-every-steps", "-1"], "--ckpt-every-steps -1: must be >= 0"),
    (["--log-every", "0"], "--log-every 0: must be >= 1"),
    (["--knn-every-steps", "-1"], "--knn-every-steps -1: must be >= 0"),
    (["--knn-max-per-class", "0"], "--knn-max-per-class 0: must be >= 1"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
]


@pytest.mark.parametrize("args, message", OUT_OF_RANGE, ids=[a[0] for a, _ in OUT_OF_RANGE])
def test_out_of_range_option_is_one_line_naming_it_and_its_range(capsys, tmp_path, args,
                                                                 message):
    images = write_images(tmp_path / "images", 8)
    out = tmp_path / "out"
    code = run(train_command, "dino-train", [*TINY_ARGS, "--data-path", str(images),
                                             "--output-dir", str(out), "--max-steps", "1",
                                             *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"dino-train: {message}"), err
    assert not out.exists()


def test_python_callers_get_the_same_check():
    with pytest.raises(OptionError, match=r"^--lr -1: must be >= 0$"):
        TrainConfig(data_path="/d", lr=-1.0).validate()
    with pytest.raises(OptionError, match="--optimizer 'adam': choose one of adamw, sgd, lars"):
        TrainConfig(data_path="/d", optimizer="adam").validate()
    TrainConfig(data_path="/d").validate()  # the defaults are valid

