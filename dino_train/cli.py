"""``dino-train`` (pretraining) and ``dino-eval knn`` (weighted k-NN evaluation).

Every official ``main_dino.py`` argument exists with its official default, spelled with dashes
(``--batch-size-per-gpu``) and, as an alias, with the official underscores
(``--batch_size_per_gpu``), so an official command line runs as is. Errors follow
:mod:`dino_core.cli`: one line on stderr; exit status 2 for a bad option, 1 for bad data or a
diverged run, 130 after Ctrl-C (run the same command again to resume).
"""
from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from dino_core.cli import run
from dino_core.errors import OptionError
from dino_core.extras import require_extra

# (official name, click type, default, help). Options taking a value; official bools take one too.
OFFICIAL_OPTIONS: list[tuple[str, Any, Any, str]] = [
    ("arch", str, "vit_small", "vit_tiny|vit_small|vit_base|vit_large, or a short name like vit_s8"),
    ("patch_size", int, None, "patch size in pixels [default: 16, or the short name's]"),
    ("out_dim", int, 65536, "output dimension of the DINO head"),
    ("norm_last_layer", click.BOOL, True, "weight-normalise the head's last layer"),
    ("momentum_teacher", float, 0.996, "base EMA momentum of the teacher (cosine to 1)"),
    ("use_bn_in_head", click.BOOL, False, "batch norm in the projection head"),
    ("warmup_teacher_temp", float, 0.04, "initial teacher temperature"),
    ("teacher_temp", float, 0.04, "teacher temperature after warm-up"),
    ("warmup_teacher_temp_epochs", int, 0, "epochs of teacher temperature warm-up"),
    ("weight_decay", float, 0.04, "initial weight decay"),
    ("weight_decay_end", float, 0.4, "final weight decay (cosine schedule)"),
    ("clip_grad", float, 3.0, "per-parameter gradient norm clip; 0 disables"),
    ("batch_size_per_gpu", int, 64, "images per process and step"),
    ("epochs", int, 100, "epochs of training"),
    ("freeze_last_layer", int, 1, "epochs during which the head's last layer is frozen"),
    ("lr", float, 0.0005, "peak learning rate for a total batch of 256 (scaled linearly)"),
    ("warmup_epochs", int, 10, "epochs of linear lr warm-up"),
    ("min_lr", float, 1e-6, "final learning rate"),
    ("optimizer", click.Choice(["adamw", "sgd", "lars"]), "adamw", "optimizer"),
    ("drop_path_rate", float, 0.1, "stochastic depth rate of the student"),
    ("local_crops_number", int, 8, "number of local crops"),
    ("output_dir", str, ".", "where checkpoints and logs go"),
    ("saveckp_freq", int, 20, "also keep checkpointNNNN.pth every this many epochs"),
    ("seed", int, 0, "random seed"),
    ("num_workers", int, 10, "data loading processes per training process"),
    ("dist_url", str, "env://", "torch.distributed init method"),
]
PAIR_OPTIONS = [("global_crops_scale", (0.4, 1.0), "scale range of the global crops"),
                ("local_crops_scale", (0.05, 0.4), "scale range of the local crops")]


def _names(official: str) -> tuple[str, ...]:
    """``--dashed-name`` first, then the official ``--underscore_name`` when it differs."""
    dashed = f"--{official.replace('_', '-')}"
    return (dashed,) if "_" not in official else (dashed, f"--{official}")


def official_options(f: Callable) -> Callable:
    for name, typ, default, help_ in reversed(OFFICIAL_OPTIONS):
        f = click.option(*_names(name), name, type=typ, default=default, show_default=True,
                         help=help_)(f)
    for name, default, help_ in PAIR_OPTIONS:
        f = click.option(*_names(name), name, type=float, nargs=2, default=default,
                         show_default=True, help=help_ + " (two numbers)")(f)
    f = click.option(*_names("data_path"), "data_path", type=str, default=None,
                     help="folder of images and/or videos (ImageFolder layout or flat)")(f)
    f = click.option(*_names("use_fp16"), "use_fp16", type=click.BOOL, default=None,
                     help="official spelling of --precision fp16 (true) / fp32 (false)")(f)
    f = click.option("--local-rank", "--local_rank", "local_rank", type=int, default=0,
                     hidden=True, help="accepted for official command lines; torchrun sets it")(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@official_options
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True,
              help="auto: fp16 with a grad scaler on CUDA (official), bf16 on CPUs with native "
                   "bf16, else fp32")
@click.option("--compile/--no-compile", "compile_", default=False, show_default=True,
              help="torch.compile the backbones")
@click.option("--max-steps", type=int, default=None, help="stop after this many steps in total")
@click.option("--max-minutes", type=float, default=None,
              help="stop after this much wall-clock time (this invocation)")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="continue from OUTPUT_DIR/checkpoint.pth when it exists")
@click.option("--ckpt-every-steps", type=int, default=0, show_default=True,
              help="also write checkpoint.pth every N steps (long CPU epochs); 0: per epoch only")
@click.option("--log-every", type=int, default=10, show_default=True,
              help="steps per log.jsonl record")
@click.option("--global-crop-size", type=int, default=224, show_default=True)
@click.option("--local-crop-size", type=int, default=96, show_default=True)
@click.option("--color-jitter", type=click.FloatRange(0, 5), default=1.0, show_default=True,
              help="colour-jitter strength: 1 is the official (0.4, 0.4, 0.2, 0.1); 2 is "
                   "close to SimCLR's CIFAR strength (no k-NN gain measured on CIFAR-10 in 30 "
                   "CPU minutes: BENCHMARKS.md)")
@click.option("--centering", type=click.Choice(["center", "sinkhorn_knopp"]), default="center",
              show_default=True,
              help="teacher normalisation: the official running centre, or DINOv2's "
                   "Sinkhorn-Knopp")
@click.option("--head-hidden-dim", type=click.IntRange(min=1), default=2048, show_default=True,
              help="width of the head's hidden layers (official: 2048, fixed)")
@click.option("--head-bottleneck-dim", type=click.IntRange(min=1), default=256,
              show_default=True,
              help="width of the head's L2-normalised bottleneck (official: 256, fixed)")
@click.option("--momentum-teacher-end", type=float, default=1.0, show_default=True,
              help="final EMA momentum of the teacher (official: 1, fixed; DINOv2's "
                   "final_momentum_teacher). Below 1 the teacher keeps following the student "
                   "to the end of a short schedule")
@click.option("--koleo-loss-weight", type=click.FloatRange(min=0), default=0.0,
              show_default=True,
              help="weight of DINOv2's KoLeo term on the student [CLS] features (DINOv2: 0.1)")
@click.option("--ibot-loss-weight", type=click.FloatRange(min=0), default=0.0,
              show_default=True,
              help="weight of iBOT's masked-patch term (iBOT and DINOv2: 1.0); 0: plain DINO")
@click.option("--ibot-mask-probability", type=float, default=0.5, show_default=True,
              help="share of the global crops that get masked patches")
@click.option("--ibot-mask-ratio", type=float, nargs=2, default=(0.1, 0.5), show_default=True,
              help="MIN MAX share of a masked crop's patches that are hidden")
@click.option("--depth", type=int, default=None, help="number of blocks [default: the arch's]")
@click.option("--video-stride", type=int, default=15, show_default=True,
              help="use every Nth frame of the videos in the data folder")
@click.option("--augmentation", type=click.Choice(["pil", "batched"]), default="pil",
              show_default=True,
              help="pil: the official per-image PIL views, made by the loader workers; batched: "
                   "the same transforms on whole batches, made on the training device (workers "
                   "only decode; bilinear resampling: see dino_train/batched_augment.py)")
@click.option("--deterministic-crops", is_flag=True, default=False,
              help="resize instead of random crops and colour changes (parity tests)")
@click.option("--knn-train-data", type=str, default=None,
              help="labelled folder (<class>/<images>) for periodic k-NN monitoring")
@click.option("--knn-val-data", type=str, default=None)
@click.option("--knn-every-steps", type=int, default=0, show_default=True)
@click.option("--knn-max-per-class", type=int, default=None)
@click.option("--progress/--no-progress", default=True, show_default=True)
def train_command(**kw: Any) -> None:
    """Pretrain a DINO ViT on a folder of images or videos (the official recipe)."""
    require_extra("train", "dino-train")
    from .cpu_tuning import prefer_passive_omp_wait, will_train_on_cpu
    if will_train_on_cpu(kw["device"]):
        prefer_passive_omp_wait()  # before torch is imported; see cpu_tuning
    from .train import TrainConfig, train
    cfg = TrainConfig(**config_values(kw))
    summary = train(cfg)
    if cfg.progress:
        click.echo(f"stopped after step {summary.steps} (epoch {summary.epoch}, "
                   f"{summary.stopped_by}); last loss {summary.last_loss}; "
                   f"checkpoint: {cfg.output_dir}/checkpoint.pth", err=True)


def config_values(kw: dict[str, Any]) -> dict[str, Any]:
    """Click values -> ``TrainConfig`` fields (``--use_fp16`` folded into ``--precision``)."""
    kw = dict(kw)
    kw.pop("local_rank")
    use_fp16 = kw.pop("use_fp16")
    if use_fp16 is not None:
        wanted = "fp16" if use_fp16 else "fp32"
        if kw["precision"] not in ("auto", wanted):
            raise OptionError(f"--use_fp16 {use_fp16} contradicts --precision {kw['precision']}")
        kw["precision"] = wanted
    if kw["data_path"] is None:
        raise OptionError("--data-path is required: a folder of images and/or videos")
    kw["compile"] = kw.pop("compile_")
    kw["random_crops"] = not kw.pop("deterministic_crops")
    kw["global_crops_scale"] = tuple(kw["global_crops_scale"])
    kw["local_crops_scale"] = tuple(kw["local_crops_scale"])
    kw["ibot_mask_ratio"] = tuple(kw["ibot_mask_ratio"])
    return kw


# -- dino-eval ----------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def eval_group() -> None:
    """Evaluate DINO backbones."""


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(x) for x in text.replace(" ", ",").split(",") if x)
    except ValueError:
        raise OptionError(f"--nb-knn {text!r}: expected integers like 10,20,100,200") from None
    if not ks or min(ks) < 1:
        raise OptionError(f"--nb-knn {text!r}: expected positive integers like 10,20,100,200")
    return ks


@eval_group.command("knn")
@click.option("--checkpoint", "--pretrained_weights", "checkpoint", required=True,
              help="training checkpoint, pretrained backbone, .safetensors or hub name")
@click.option("--checkpoint-key", "--checkpoint_key", "checkpoint_key", default="teacher",
              show_default=True)
@click.option("--train-data", required=True, help="labelled folder <class>/<images>")
@click.option("--val-data", required=True, help="labelled folder <class>/<images>")
@click.option("--nb-knn", "--nb_knn", "nb_knn", default="10,20,100,200", show_default=True)
@click.option("--temperature", type=float, default=0.07, show_default=True)
@click.option("--image-size", type=int, default=224, show_default=True,
              help="centre crop side; images are first resized to size*256/224")
@click.option("--batch-size", "--batch_size_per_gpu", "batch_size", type=int, default=128,
              show_default=True)
@click.option("--num-workers", "--num_workers", "num_workers", type=int, default=2,
              show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              show_default=True)
@click.option("--max-per-class", type=int, default=None,
              help="use the first N images (sorted) of each class")
@click.option("--json", "json_path", default=None, help="also write the results to this file")
def knn_command(checkpoint: str, checkpoint_key: str, train_data: str, val_data: str,
                nb_knn: str, temperature: float, image_size: int, batch_size: int,
                num_workers: int, device: str, max_per_class: int | None,
                json_path: str | None) -> None:
    """Weighted k-NN accuracy of a backbone's features (official eval_knn protocol)."""
    require_extra("train", "dino-eval")
    from dino_core.fileio import atomic_write_text
    from dino_models.checkpoint import load_backbone

    from .knn import knn_evaluate, labelled_folder
    from .train import resolve_device
    ks = _ks(nb_knn)
    dev = resolve_device(device)
    model, info = load_backbone(checkpoint, checkpoint_key=checkpoint_key)
    train = labelled_folder(train_data, max_per_class=max_per_class)
    val = labelled_folder(val_data, train.classes, max_per_class)
    results = knn_evaluate(model.to(dev), train, val, ks, temperature, image_size, batch_size,
                           str(dev), num_workers)
    click.echo(f"{info.short_name} ({info.format}, {checkpoint_key}): {len(train.paths)} train, "
               f"{len(val.paths)} val images, {len(train.classes)} classes")
    for r in results:
        click.echo(f"{r.k}-NN classifier result: Top1: {r.top1:.2f}, Top5: {r.top5:.2f}")
    if json_path:
        atomic_write_text(json.dumps({
            "checkpoint": checkpoint, "arch": info.short_name, "train_images": len(train.paths),
            "val_images": len(val.paths), "temperature": temperature, "image_size": image_size,
            "results": [r.__dict__ for r in results]}, indent=2) + "\n", json_path)


# -- entry points -------------------------------------------------------------------------------
INTERRUPTED = "interrupted; run the same command again to resume"


def main(args: list[str] | None = None) -> None:
    """``dino-train``."""
    sys.exit(run(train_command, "dino-train", args, interrupted=INTERRUPTED))


def eval_main(args: list[str] | None = None) -> None:
    """``dino-eval``."""
    sys.exit(run(eval_group, "dino-eval", args))


if __name__ == "__main__":
    main()
