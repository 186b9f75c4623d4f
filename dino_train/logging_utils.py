"""Run logs: ``log.jsonl`` (one JSON record per logging interval) and the ``training.png`` plot."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class IntervalMeter:
    """Sums over the steps since the last log record."""

    steps: int = 0
    images: int = 0
    loss_sum: float = 0.0
    data_time: float = 0.0
    term_sums: dict[str, float] = field(default_factory=dict)  # extra loss terms, unweighted
    started: float = field(default_factory=time.perf_counter)

    def update(self, loss: float, images: int, data_time: float,
               terms: dict[str, float] | None = None) -> None:
        self.steps += 1
        self.images += images
        self.loss_sum += loss
        self.data_time += data_time
        for name, value in (terms or {}).items():
            self.term_sums[name] = self.term_sums.get(name, 0.0) + value

    def summary(self) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {"loss": self.loss_sum / max(self.steps, 1),
               "images_per_s": self.images / elapsed,
               "data_time_s": self.data_time / max(self.steps, 1),
               "data_share": self.data_time / elapsed}
        for name, total in self.term_sums.items():
            out[name] = total / max(self.steps, 1)
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
    """Loss per step and, when monitored, k-NN top-1 per step; written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = log.records()
    train = [r for r in records if "loss" in r]
    knn = [r for r in records if "knn_top1" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("DINO loss", color="tab:blue")
    if knn:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in knn], [r["knn_top1"] for r in knn], "o-", color="tab:red")
        ax2.set_ylabel("k-NN top-1 (%)", color="tab:red")
    fig.tight_layout()
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, out_path)
