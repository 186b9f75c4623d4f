"""Run logs: ``log.jsonl`` (one JSON record per logging interval) and the ``training.png`` plot."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .diagnostics import DIAGNOSTICS


@dataclass
class IntervalMeter:
    """Sums over the steps since the last log record."""

    steps: int = 0
    images: int = 0
    loss_sum: float = 0.0
    data_time: float = 0.0
    term_sums: dict[str, float] = field(default_factory=dict)  # extra loss terms, unweighted
    started: float = field(default_factory=time.perf_counter)
    # the teacher's diagnostics summed over the steps that measured them (the loop: the last
    # of the interval): a tensor on the training device, read once per record (a host sync on
    # a GPU; see dino_train.diagnostics)
    diagnostics_sum: Any = None
    diagnostics_steps: int = 0

    def update(self, loss: float, images: int, data_time: float,
               terms: dict[str, float] | None = None, diagnostics: Any = None) -> None:
        self.steps += 1
        self.images += images
        self.loss_sum += loss
        self.data_time += data_time
        for name, value in (terms or {}).items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value
        if diagnostics is not None:
            self.diagnostics_sum = diagnostics if self.diagnostics_sum is None \
                else self.diagnostics_sum + diagnostics
            self.diagnostics_steps += 1

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {"loss": self.loss_sum / max(self.steps, 1),
               "images_per_s": self.images / elapsed,
               "data_time_s": self.data_time / max(self.steps, 1),
               "data_share": self.data_time / elapsed}
        for name, total in self.term_sums.items():
            out[name] = total / max(self.steps, 1)
        if self.diagnostics_sum is not None:
            means = (self.diagnostics_sum / self.diagnostics_steps).tolist()
            out.update(zip(DIAGNOSTICS, means))
        return out


class JsonlLog:
    """Appends one JSON object per line; a reader never sees a partial record from a kill
    between records (each line is written with a single ``write`` and flushed)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
        return out


def plot_training(log: JsonlLog, out_path: str | os.PathLike) -> None:
    """``training.png``, written atomically: the loss (and k-NN top-1 when monitored); the
    teacher's entropy and KL(teacher || student), the two curves of the DINO paper's collapse
    study; the prototypes in use and the largest one's share; the centre's norm. A collapse
    found by :mod:`dino_train.collapse` is marked on every panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = log.records()
    train = [r for r in records if "loss" in r]
    knn = [r for r in records if "knn_top1" in r]
    collapses = [r for r in records if "collapse" in r]
    teacher = [r for r in train if "teacher_entropy" in r]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True, squeeze=False)
    _plot_loss(axes[0, 0], train, knn)
    if teacher:
        _plot_teacher(axes, teacher)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        for r in collapses:
            ax.axvline(r["step"], color="tab:red", ls=":", lw=1)
    if collapses:
        axes[0, 0].set_title("collapse: " + ", ".join(f"{r['collapse']} at step {r['step']}"
                                                      for r in collapses),
                             color="tab:red", fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out_path)


def _plot_loss(ax: Any, train: list[dict], knn: list[dict]) -> None:
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax.set_ylabel("loss", color="tab:blue")
    if knn:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in knn], [r["knn_top1"] for r in knn], "o-", color="tab:red")
        ax2.set_ylabel("k-NN top-1 (%)", color="tab:red")


def _plot_teacher(axes: Any, teacher: list[dict]) -> None:
    """The diagnostics panels (see dino_train.diagnostics)."""
    steps = [r["step"] for r in teacher]
    ax = axes[0, 1]
    ax.plot(steps, [r["teacher_entropy"] for r in teacher], color="tab:blue",
            label="teacher entropy H(P_t)")
    ln_k = [r["teacher_entropy"] / r["teacher_entropy_frac"] for r in teacher
            if r["teacher_entropy_frac"] > 0]
    if ln_k:
        ax.axhline(ln_k[-1], color="tab:blue", ls="--", lw=1, label="ln K (uniform)")
    ax.plot(steps, [r["kl"] for r in teacher], color="tab:orange", label="KL(P_t || P_s)")
    ax.set_ylabel("nats")
    ax.legend(fontsize=8, loc="best")
    ax = axes[1, 0]
    ax.plot(steps, [r["prototypes_used"] for r in teacher], color="tab:green")
    ax.set_ylabel("prototypes in use, exp H(mean P_t)", color="tab:green", fontsize=9)
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(steps, [r["top_prototype_share"] for r in teacher], color="tab:purple")
    ax2.set_ylabel("largest prototype share", color="tab:purple", fontsize=9)
    ax2.set_ylim(0, 1)
    ax = axes[1, 1]
    ax.plot(steps, [r["center_norm"] for r in teacher], color="tab:gray")
    ax.set_ylabel("centre norm |C|")
