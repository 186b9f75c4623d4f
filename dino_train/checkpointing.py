"""Training checkpoints: the official ``main_dino.py`` format plus a ``dino_edge`` record;
:func:`save_checkpoint` writes one, :func:`resume` restores a run from it.

Official keys: ``student`` (``module.``-prefixed, as the official DDP student), ``teacher``,
``optimizer``, ``epoch`` (epochs completed), ``args`` (an ``argparse.Namespace`` of plain values),
``dino_loss`` (the centre) and ``fp16_scaler`` when fp16 is used. ``dino_edge`` is a plain dict:
arch, patch size, heads, global step, position in the epoch, RNG states (tensors) of every
process, and the resolved configuration. Files are written to a temporary name and renamed, so a
kill at any moment leaves either the previous or the new checkpoint, never half of one.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
from typing import Any, Mapping

import numpy as np
import torch

from dino_core.errors import UserError
from dino_core.fileio import atomic_output
from dino_models.checkpoint import TOOLKIT_KEY, strip_prefix
from dino_models.safe_load import load_pickle_checkpoint

from . import distributed as D
from .builders import Trainer, TrainState
from .config import TrainConfig

FORMAT_VERSION = 1
# Options that shape the networks: a checkpoint written with other values cannot be resumed.
NETWORK_OPTIONS = ("out_dim", "use_bn_in_head", "norm_last_layer", "head_hidden_dim",
                   "head_bottleneck_dim")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_output(path) as f:
        torch.save(obj, f)


# -- RNG state as tensors (the safe loader accepts tensors and plain containers only) -----------
def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), NumPy and Python RNG states, as tensors and ints."""
    version, mt, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python_mt": torch.tensor(mt, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": gauss,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(x) for x in state["python_mt"].tolist()),
                     state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         state["numpy_pos"], state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def with_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state.items()}


# -- save ---------------------------------------------------------------------------------------
def checkpoint_dict(t: Trainer, rng_states: list[dict]) -> dict[str, Any]:
    arch = t.cfg.resolved_arch()
    ckpt = {
        "student": with_prefix(t.nets.student_module.state_dict(), "module."),
        "teacher": t.nets.teacher.state_dict(),
        "optimizer": t.optimizer.state_dict(),
        "epoch": t.state.epoch,
        "args": t.cfg.official_args(),
        "dino_loss": t.loss.state_dict(),
        TOOLKIT_KEY: {
            "format_version": FORMAT_VERSION,
            "arch": arch.family.name, "short_name": arch.short_name,
            "patch_size": arch.patch_size, "num_heads": arch.family.num_heads,
            "embed_dim": arch.family.embed_dim,
            "depth": t.cfg.resolved_depth(),
            "step": t.state.step, "epoch": t.state.epoch, "step_in_epoch": t.state.step_in_epoch,
            "skipped_files": t.state.skipped_files,
            "world_size": t.ctx.dist.world_size, "precision": t.ctx.precision,
            "rng": rng_states,
            "config": json.loads(json.dumps(dataclasses.asdict(t.cfg))),
        },
    }
    if t.scaler is not None:
        ckpt["fp16_scaler"] = t.scaler.state_dict()
    if t.ibot is not None:
        ckpt["ibot"] = t.ibot.state_dict()
    return ckpt


def save_checkpoint(t: Trainer, epoch_end: bool) -> None:
    """``checkpoint.pth`` (and ``checkpointNNNN.pth`` every ``saveckp_freq`` epochs), atomically.

    Every process contributes its RNG state; only the main process writes.
    """
    states = D.gather_objects(rng_state(), t.ctx.dist)
    if t.ctx.dist.is_main:
        ckpt = checkpoint_dict(t, states)
        atomic_save(ckpt, t.out / "checkpoint.pth")
        finished = t.state.epoch - 1
        if epoch_end and t.cfg.saveckp_freq and finished % t.cfg.saveckp_freq == 0:
            atomic_save(ckpt, t.out / f"checkpoint{finished:04}.pth")
    t.state.last_checkpoint_step = t.state.step
    D.barrier(t.ctx.dist)


# -- resume -------------------------------------------------------------------------------------
def network_option_mismatch(ckpt: dict[str, Any], cfg: TrainConfig) -> str | None:
    """'--opt X (this run: Y)' for the first network option that differs, from a toolkit
    checkpoint's recorded configuration; None if all agree or the checkpoint has no record."""
    written = (ckpt.get(TOOLKIT_KEY) or {}).get("config")
    if not written:
        return None
    if written.get("arch") != cfg.arch or written.get("patch_size") != cfg.patch_size:
        short = (ckpt[TOOLKIT_KEY].get("short_name"), cfg.resolved_arch().short_name)
        if short[0] != short[1]:
            return f"--arch {short[0]} (this run: {short[1]})"
    depth = (ckpt[TOOLKIT_KEY].get("depth"), cfg.resolved_depth())
    if depth[0] is not None and depth[0] != depth[1]:
        return f"--depth {depth[0]} (this run: {depth[1]})"
    for name in NETWORK_OPTIONS:
        if name in written and written[name] != getattr(cfg, name):
            return f"--{name.replace('_', '-')} {written[name]} (this run: {getattr(cfg, name)})"
    return None


def first_reason(e: Exception) -> str:
    """The first informative line of a load error (torch puts its summary line first)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):
        return f"{lines[0]} {lines[1]}"
    return lines[0] if lines else type(e).__name__


def resume(t: Trainer) -> bool:
    """Restore everything from ``output_dir/checkpoint.pth`` if it exists; True if it did."""
    path = t.out / "checkpoint.pth"
    if not (t.cfg.resume and path.exists()):
        return False
    ckpt = load_pickle_checkpoint(path)
    if ("ibot" in ckpt) != (t.ibot is not None):
        raise UserError(f"{path} was written {'with' if 'ibot' in ckpt else 'without'} "
                        "--ibot-loss-weight, this run is not; resume with the same options, or "
                        "use another --output-dir or --no-resume")
    mismatch = network_option_mismatch(ckpt, t.cfg)
    if mismatch:
        raise UserError(f"{path} was written with {mismatch}; resume with the same options, or "
                        "use another --output-dir or --no-resume")
    try:
        t.nets.student_module.load_state_dict(strip_prefix(ckpt["student"], "module."))
        t.nets.teacher.load_state_dict(strip_prefix(ckpt["teacher"], "module."))
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.loss.load_state_dict(ckpt["dino_loss"])
        if t.ibot is not None:
            t.ibot.load_state_dict(ckpt["ibot"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise UserError(f"{path}: cannot resume from it ({first_reason(e)}); use another "
                        "--output-dir or --no-resume") from None
    if t.scaler is not None and "fp16_scaler" in ckpt:
        t.scaler.load_state_dict(ckpt["fp16_scaler"])
    record = ckpt.get(TOOLKIT_KEY)
    if record is None:  # an official checkpoint: restart at the beginning of its epoch
        t.state = TrainState(epoch=int(ckpt["epoch"]),
                             step=int(ckpt["epoch"]) * t.schedules.iters_per_epoch)
    else:
        t.state = TrainState(epoch=record["epoch"], step=record["step"],
                             step_in_epoch=record["step_in_epoch"],
                             skipped_files=record.get("skipped_files", 0))
        rngs = record.get("rng", [])
        if t.ctx.dist.rank < len(rngs) and record.get("world_size") == t.ctx.dist.world_size:
            set_rng_state(rngs[t.ctx.dist.rank])
    t.state.last_checkpoint_step = t.state.step
    return True
