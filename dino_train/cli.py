"""``dino-train`` (pretraining), ``dino-eval knn`` (weighted k-NN), ``dino-eval linear`` (linear
probe) and ``dino-eval davis`` (video object segmentation by label propagation, scored with
DAVIS's J and F).

``dino-train``'s options are made from :class:`~dino_train.config.TrainConfig`'s fields, so each
default, help text and valid range is written once. Every official ``main_dino.py`` argument
exists with its official default, spelled with dashes (``--batch-size-per-gpu``) and, as an
alias, with the official underscores (``--batch_size_per_gpu``), so an official command line runs
as is. Errors follow :mod:`dino_core.cli`: one line on stderr; exit status 2 for a bad option
(naming the option and its valid range), 1 for bad data or a diverged run, 128 + the signal after
SIGINT (130), SIGTERM (143) or SIGHUP (129), once the checkpoint is written (run the same command
again to resume).
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click

from dino_core.cli import run
from dino_core.errors import OptionError, OutputError, UserError
from dino_core.extras import require_extra

from .config import DEVICES, TrainConfig, flag_name, option_of

_HINTS = typing.get_type_hints(TrainConfig)


def _names(official: str) -> tuple[str, ...]:
    """``--dashed-name`` first, then the official ``--underscore_name`` when it differs."""
    dashed = flag_name(official)
    return (dashed,) if "_" not in official else (dashed, f"--{official}")


def _value_type(name: str) -> tuple[Any, int]:
    """(click type, nargs) of a field from its annotation: ``int | None`` -> int, a pair of
    floats -> (float, 2); official bools take a value (``--norm_last_layer false``)."""
    hint = _HINTS[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0], len(args)
    base = args[0] if args else hint
    return (click.BOOL if base is bool else base), 1


def _option(f: dataclasses.Field) -> Callable:
    """The click option of one :class:`TrainConfig` field, from its declared :class:`Option`."""
    how = option_of(f)
    text = f"{how.help}; must be {how.range}" if how.range else how.help
    shown: Any = how.default_text or f.default not in ("", None)
    if how.flag and "/" in how.flag:
        return click.option(how.flag, f.name, default=f.default, show_default=True, help=text)
    if how.flag:  # one flag that sets the opposite of the default
        return click.option(how.flag, f.name, flag_value=not f.default, default=f.default,
                            help=text)
    typ, nargs = _value_type(f.name)
    if how.choices:
        typ = click.Choice(how.choices)
    names = _names(f.name) if how.official else (flag_name(f.name),)
    return click.option(*names, f.name, type=typ, nargs=nargs, default=f.default,
                        show_default=shown, help=text)


def config_options(f: Callable) -> Callable:
    """Every :class:`TrainConfig` field as an option, plus the official spellings that are not
    fields: ``--use_fp16`` (folded into ``--precision``) and ``--local_rank`` (torchrun's)."""
    for field_ in reversed(dataclasses.fields(TrainConfig)):
        f = _option(field_)(f)
    f = click.option(*_names("use_fp16"), "use_fp16", type=click.BOOL, default=None,
                     help="official spelling of --precision fp16 (true) / fp32 (false)")(f)
    f = click.option("--local-rank", "--local_rank", "local_rank", type=int, default=0,
                     hidden=True, help="accepted for official command lines; torchrun sets it")(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@config_options
def train_command(**kw: Any) -> None:
    """Pretrain a DINO ViT on a folder of images or videos (the official recipe)."""
    require_extra("train", "dino-train")
    from .cpu_tuning import prefer_passive_omp_wait, will_train_on_cpu
    if will_train_on_cpu(kw["device"]):
        prefer_passive_omp_wait()  # before torch is imported; see cpu_tuning
    cfg = TrainConfig(**config_values(kw))
    from .train import train
    summary = train(cfg)  # validates cfg first: a bad option is one line, before any work
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
    for name, value in kw.items():
        if isinstance(value, list):
            kw[name] = tuple(value)
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


def eval_options(f: Callable) -> Callable:
    """The options ``dino-eval knn`` and ``dino-eval linear`` share (official spellings as
    aliases)."""
    options = [
        click.option("--checkpoint", "--pretrained_weights", "checkpoint", required=True,
                     help="training checkpoint, pretrained backbone, .safetensors or hub name"),
        click.option("--checkpoint-key", "--checkpoint_key", "checkpoint_key", default="teacher",
                     show_default=True),
        click.option("--train-data", required=True, help="labelled folder <class>/<images>"),
        click.option("--val-data", required=True, help="labelled folder <class>/<images>"),
        click.option("--image-size", type=click.IntRange(min=1), default=224, show_default=True,
                     help="centre crop side, a multiple of the patch size; images are first "
                          "resized to size*256/224"),
        click.option("--batch-size", "--batch_size_per_gpu", "batch_size",
                     type=click.IntRange(min=1), default=128, show_default=True),
        click.option("--num-workers", "--num_workers", "num_workers",
                     type=click.IntRange(min=0), default=2, show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--max-per-class", type=click.IntRange(min=1), default=None,
                     help="use the first N images (sorted) of each class"),
        click.option("--json", "json_path", default=None,
                     help="also write the results to this file"),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclasses.dataclass
class EvalInputs:
    """What both evaluations start from: the backbone on its device and the two folders."""

    model: Any
    info: Any            # dino_models.checkpoint.BackboneInfo
    device: Any          # torch.device
    train: Any           # knn.LabelledImages
    val: Any


def eval_inputs(checkpoint: str, checkpoint_key: str, train_data: str, val_data: str,
                image_size: int, device: str, max_per_class: int | None,
                json_path: str | None) -> EvalInputs:
    """Check the output first (before minutes of feature extraction), then load the backbone
    and the labelled folders; one-line errors for each."""
    from dino_models.checkpoint import load_backbone

    from .context import resolve_device
    from .knn import labelled_folder
    if json_path:
        check_writable(json_path, "--json")
    dev = resolve_device(device)
    model, info = load_backbone(checkpoint, checkpoint_key=checkpoint_key)
    if image_size % info.patch_size:
        raise OptionError(f"--image-size {image_size}: must be a multiple of the patch size "
                          f"{info.patch_size} ({info.short_name})")
    train = labelled_folder(train_data, max_per_class=max_per_class)
    val = labelled_folder(val_data, train.classes, max_per_class)
    return EvalInputs(model.to(dev), info, dev, train, val)


def write_json(results: dict[str, Any], json_path: str | None) -> None:
    if not json_path:
        return
    from dino_core.fileio import atomic_write_text
    try:
        atomic_write_text(json.dumps(results, indent=2) + "\n", json_path)
    except OSError as e:
        raise OutputError(f"--json {json_path}: cannot write it ({e.strerror or e})") from None


@eval_group.command("knn")
@eval_options
@click.option("--nb-knn", "--nb_knn", "nb_knn", default="10,20,100,200", show_default=True)
@click.option("--temperature", type=click.FloatRange(0, min_open=True), default=0.07,
              show_default=True)
def knn_command(checkpoint: str, checkpoint_key: str, train_data: str, val_data: str,
                image_size: int, batch_size: int, num_workers: int, device: str,
                max_per_class: int | None, json_path: str | None, nb_knn: str,
                temperature: float) -> None:
    """Weighted k-NN accuracy of a backbone's features (official eval_knn protocol)."""
    require_extra("train", "dino-eval")
    from .knn import NonFiniteFeatures, knn_evaluate
    ks = _ks(nb_knn)
    e = eval_inputs(checkpoint, checkpoint_key, train_data, val_data, image_size, device,
                    max_per_class, json_path)
    try:
        results = knn_evaluate(e.model, e.train, e.val, ks, temperature, image_size,
                               batch_size, str(e.device), num_workers)
    except NonFiniteFeatures as err:
        raise UserError(f"{checkpoint} ({checkpoint_key}): {err}") from None
    click.echo(f"{e.info.short_name} ({e.info.format}, {checkpoint_key}): {len(e.train.paths)} "
               f"train, {len(e.val.paths)} val images, {len(e.train.classes)} classes")
    for r in results:
        click.echo(f"{r.k}-NN classifier result: Top1: {r.top1:.2f}, Top5: {r.top5:.2f}")
    write_json({"checkpoint": checkpoint, "arch": e.info.short_name,
                "train_images": len(e.train.paths), "val_images": len(e.val.paths),
                "temperature": temperature, "image_size": image_size,
                "results": [r.__dict__ for r in results]}, json_path)


@eval_group.command("linear")
@eval_options
@click.option("--mode", type=click.Choice(("augmented", "cached")), default="augmented",
              show_default=True,
              help="augmented: the official protocol (new random-resized crops and flips through "
                   "the backbone every epoch); cached: the backbone once per image, on the "
                   "evaluation view, then every epoch on those features (fast on CPUs)")
@click.option("--n-last-blocks", "--n_last_blocks", "n_last_blocks",
              type=click.IntRange(min=1), default=None,
              help="concatenate the [CLS] tokens of the last N blocks [default: 4 below ViT-B's "
                   "width (or every block of a shallower backbone), 1 from it on, as the "
                   "official recipe]")
@click.option("--avgpool-patchtokens", "--avgpool_patchtokens", "avgpool", type=click.BOOL,
              default=None, help="add the last block's average-pooled patch tokens [default: "
                                 "false below ViT-B's width, true from it on]")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=0.001, show_default=True,
              help="SGD lr for a batch of 256 (scaled linearly), cosine to 0 over the epochs")
@click.option("--val-freq", "--val_freq", "val_freq", type=click.IntRange(min=1), default=1,
              show_default=True, help="validate every N epochs (and after the last)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="the classifier's initialisation and the epochs' training order")
@click.option("--save-classifier", default=None,
              help="write the trained classifier here (the official checkpoint.pth.tar keys)")
def linear_command(checkpoint: str, checkpoint_key: str, train_data: str, val_data: str,
                   image_size: int, batch_size: int, num_workers: int, device: str,
                   max_per_class: int | None, json_path: str | None, mode: str,
                   n_last_blocks: int | None, avgpool: bool | None, epochs: int, lr: float,
                   val_freq: int, seed: int, save_classifier: str | None) -> None:
    """Linear probe on frozen features (official eval_linear protocol); top-1/top-5."""
    require_extra("train", "dino-eval")
    from .knn import NonFiniteFeatures
    from .linear import LinearConfig, default_pooling, linear_evaluate
    if save_classifier:
        check_writable(save_classifier, "--save-classifier")
    e = eval_inputs(checkpoint, checkpoint_key, train_data, val_data, image_size, device,
                    max_per_class, json_path)
    n_default, pool_default = default_pooling(e.info.embed_dim)
    n_default = min(n_default, e.info.depth)  # a shallow backbone: all its blocks
    cfg = LinearConfig(n_last_blocks or n_default, pool_default if avgpool is None else avgpool,
                       mode, epochs, lr, batch_size, image_size, val_freq, seed, num_workers,
                       str(e.device))
    if cfg.n_last_blocks > e.info.depth:
        raise OptionError(f"--n-last-blocks {cfg.n_last_blocks}: the backbone has "
                          f"{e.info.depth} blocks")
    click.echo(f"{e.info.short_name} ({e.info.format}, {checkpoint_key}): {len(e.train.paths)} "
               f"train, {len(e.val.paths)} val images, {len(e.train.classes)} classes; "
               f"{mode}, [CLS] of the last {cfg.n_last_blocks} block(s)"
               f"{' + pooled patches' if cfg.avgpool_patchtokens else ''}, lr {cfg.scaled_lr:g} "
               f"(batch {batch_size}), {epochs} epochs")
    try:
        classifier, result = linear_evaluate(e.model, e.train, e.val, cfg, _echo_epoch)
    except NonFiniteFeatures as err:
        raise UserError(f"{checkpoint} ({checkpoint_key}): {err}") from None
    top5 = "n/a (fewer than 5 classes)" if result.top5 is None else f"{result.top5:.2f}"
    click.echo(f"Linear probe result: Top1: {result.top1:.2f}, Top5: {top5} (best Top1 over the "
               f"validated epochs: {result.best_top1:.2f})")
    if save_classifier:
        _save_classifier(classifier, result, save_classifier)
    write_json({"checkpoint": checkpoint, "arch": e.info.short_name,
                "checkpoint_key": checkpoint_key, **dataclasses.asdict(cfg),
                "scaled_lr": cfg.scaled_lr, **dataclasses.asdict(result)}, json_path)


def _echo_epoch(r: Any) -> None:
    """One line per epoch: its lr, training loss and, when validated, top-1/top-5."""
    acc = "" if r.top1 is None else f", top-1 {r.top1:.2f}" + \
        ("" if r.top5 is None else f", top-5 {r.top5:.2f}")
    click.echo(f"epoch {r.epoch}: lr {r.lr:.6f}, train loss {r.train_loss:.4f}{acc}")


def _save_classifier(classifier: Any, result: Any, path: str) -> None:
    """The official ``checkpoint.pth.tar`` layout: the DDP-prefixed state dict, epochs, best."""
    from .checkpointing import atomic_save
    state = {f"module.{k}": v.cpu() for k, v in classifier.state_dict().items()}
    try:
        atomic_save({"epoch": len(result.history), "state_dict": state,
                     "best_acc": result.best_top1}, path)
    except OSError as e:
        raise OutputError(f"--save-classifier {path}: cannot write it ({e.strerror or e})") \
            from None


@eval_group.command("davis")
@click.option("--davis", "davis_root", required=True, metavar="DIR",
              help="DAVIS folder: JPEGImages/480p, Annotations/480p, ImageSets")
@click.option("--model", help="exported .onnx/.engine with patch tokens, or a checkpoint; "
                              "tracks every sequence from its first annotation")
@click.option("--output-dir", help="where the result PNGs go (<dir>/<sequence>/<frame>.png); "
                                   "required with --model")
@click.option("--results", metavar="DIR", help="score these result PNGs instead of running a model")
@click.option("--year", type=click.Choice(["2017", "2016"]), default="2017", show_default=True,
              help="2017: several objects per sequence; 2016: one (every annotated pixel)")
@click.option("--set", "subset", default="val", show_default=True, help="ImageSets list")
@click.option("--sequences", help="comma-separated sequences instead of the whole list")
@click.option("--track-context", type=click.IntRange(min=0), default=7, show_default=True,
              help="last frames kept as context besides the first (official --n_last_frames)")
@click.option("--track-radius", type=click.IntRange(min=0), default=12, show_default=True,
              help="neighbourhood half-size in patches, 0: whole frame "
                   "(official --size_mask_neighborhood)")
@click.option("--track-topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="affinities kept per patch (official --topk)")
@click.option("--backend", default="auto", show_default=True, help="as dino-run's")
@click.option("--device", default="auto", show_default=True, help="as dino-run's")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
              show_default=True, help="as dino-run's")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace earlier results in --output-dir")
@click.option("--json", "json_path", default=None, help="also write the scores to this file")
def davis_command(davis_root: str, model: str | None, output_dir: str | None,
                  results: str | None, year: str, subset: str, sequences: str | None,
                  track_context: int, track_radius: int, track_topk: int, backend: str,
                  device: str, precision: str, batch: int, overwrite: bool,
                  json_path: str | None) -> None:
    """DAVIS J and F of label propagation over a model's patch features (official protocol).

    Runs on the base install (no torch) for exported files: the tracking is dino-run's.
    """
    import logging

    from dino_core.fileio import atomic_write_text
    from dino_runtime.tracking import TrackOptions
    from dino_runtime.tracking.davis import EvalRequest, evaluate, format_table, open_davis
    from dino_runtime.tracking.davis import scores_json
    if (model is None) == (results is None):
        raise OptionError("give one of --model (track, then score) and --results (score)")
    if model is not None and output_dir is None:
        raise OptionError("--model writes its results: add --output-dir DIR")
    if json_path:
        check_writable(json_path, "--json")
    names = [s for s in (sequences or "").replace(" ", ",").split(",") if s]
    davis = open_davis(davis_root, year, subset, names or None)
    request = EvalRequest(davis, model, Path(output_dir) if output_dir else None,
                          Path(results) if results else None,
                          TrackOptions(track_context, track_radius, track_topk), backend,
                          device, precision, batch, overwrite)
    warn = logging.getLogger("dino_train.cli").warning
    scores, runs = evaluate(request, echo=lambda line: click.echo(line, err=True), warn=warn)
    click.echo(f"DAVIS {year} {subset}: {len(davis.sequences)} sequences, {len(scores)} objects")
    click.echo(format_table(scores))
    if json_path:
        meta = {"davis": str(davis.root), "year": year, "set": subset, "model": model,
                "results": str(output_dir or results),
                "options": {"context": track_context, "radius": track_radius,
                            "topk": track_topk}}
        try:
            atomic_write_text(scores_json(scores, runs, meta), json_path)
        except OSError as e:
            raise OutputError(f"--json {json_path}: cannot write it ({e.strerror or e})") from None


def check_writable(path: str, option: str) -> None:
    """:class:`OutputError` unless ``path``'s folder exists and is writable, or can be made
    (its nearest existing ancestor is a writable folder)."""
    folder = Path(path).absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{option} {path}: cannot write in {folder} (permission denied)")


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
