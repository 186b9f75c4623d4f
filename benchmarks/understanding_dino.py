"""The figures of docs/understanding-dino.md: DINO's balance between centering and sharpening,
seen in three real CIFAR-10 runs (a few CPU minutes each).

    /work/team/heavy python benchmarks/understanding_dino.py --work /tmp/understanding

1. extracts ``cifar10-train.tar.gz`` and ``cifar10-test.tar.gz`` from ``--shared-data`` into
   ``--work`` (once, as bench_quality.py) and links the first ``--per-class`` (500) training
   images of each class: the training set and the k-NN bank; the first 100 test images of each
   class are the k-NN validation set;
2. trains the same recipe (below) for ``--steps`` steps three times: the default (centering and
   sharpening), centering only (``--no-sharpening``: the teacher at the student's temperature)
   and sharpening only (``--centering none``), and writes the untrained network's checkpoint
   (``--max-steps 0``, same seed) as the reference;
3. runs ``dino-eval knn`` (k = 20, T = 0.07, 32 px) on the four checkpoints;
4. draws the figures from the runs' ``log.jsonl`` into ``--figures`` (docs/figures):
   ``collapse-entropy-kl.png`` (the teacher's entropy and KL(teacher || student) per step, the
   two curves of the DINO paper's figure 7), ``collapse-prototypes.png`` (prototypes in use and
   the largest one's share), and copies each run's own ``training.png``; prints a markdown
   table of the runs (last diagnostics, the collapse warnings, k-NN) and writes it with the
   commands as ``understanding-dino.json``.

``--plot-only`` draws the figures again from the runs already in ``--work``. Arguments after
``--`` are added to every dino-train command (the last value of an option
wins). Refuses a ``--work`` that already holds these runs, rather than resume them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import extract, fail, knn, run, subset, tool  # noqa: E402

from dino_train.cpu_tuning import cpu_model  # noqa: E402

REPO = HERE.parent
# A small DINO that shows the balance in a few minutes on two cores: ViT-Tiny/4 with 2 blocks
# on 32 px global and 16 px local crops; the official head (K = 4096 prototypes here), optimiser,
# teacher temperature (0.04), centre and teacher momentum; a 4-epoch schedule over the 5,000
# images (624 steps of 32) that ends with the run.
RECIPE = [
    "--arch", "vit_tiny", "--patch_size", "4", "--depth", "2", "--out_dim", "4096",
    "--batch_size_per_gpu", "32", "--local_crops_number", "2", "--global-crop-size", "32",
    "--local-crop-size", "16", "--augmentation", "batched", "--epochs", "4",
    "--warmup_epochs", "1", "--lr", "0.002", "--num_workers", "1", "--seed", "0",
    "--log-every", "8", "--no-progress",
]
RUNS = {  # name -> (label, options)
    "default": ("centering + sharpening (default)", []),
    "centering_only": ("centering only (--no-sharpening)", ["--no-sharpening"]),
    "sharpening_only": ("sharpening only (--centering none)", ["--centering", "none"]),
}
COLOURS = {"default": "tab:green", "centering_only": "tab:blue", "sharpening_only": "tab:red"}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shared-data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--work", type=Path, required=True, help="scratch folder: data, runs, logs")
    p.add_argument("--figures", type=Path, default=REPO / "docs" / "figures")
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--steps", type=int, default=624, help="steps per run (624: the schedule)")
    p.add_argument("--plot-only", action="store_true",
                   help="only draw the figures again from the runs already in --work")
    p.add_argument("extra", nargs="*", help="after --: more dino-train options")
    return p.parse_args()


def records(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "log.jsonl").read_text().splitlines() if x.strip()]


def plot_curves(work: Path, figures: Path) -> None:
    """The two figures, each two panels with one curve per run; a collapse warning is a dotted
    line in its run's colour."""
    logs = {name: records(work / name) for name in RUNS}
    ln_k = next(r["teacher_entropy"] / r["teacher_entropy_frac"] for r in logs["default"]
                if r.get("teacher_entropy_frac"))
    left, right = two_panels(logs, "teacher_entropy", "kl")
    left.axhline(ln_k, color="gray", ls="--", lw=1, label=f"ln K (K = {round(math.exp(ln_k))})")
    left.set(ylabel="nats", title="teacher entropy H(P_t)")
    right.set(ylabel="nats", title="KL(P_t || P_s)")
    left.legend(fontsize=8)
    save(left.figure, figures / "collapse-entropy-kl.png")
    left, right = two_panels(logs, "prototypes_used", "top_prototype_share")
    left.set(ylabel="exp H(mean P_t)", yscale="log", title="prototypes in use (batch mean)")
    right.set(ylabel="share", ylim=(0, 1), title="largest prototype's share of the batch")
    left.legend(fontsize=8)
    save(left.figure, figures / "collapse-prototypes.png")


def two_panels(logs: dict[str, list[dict]], left_key: str, right_key: str):
    """(left, right) axes of a new figure: ``left_key`` and ``right_key`` per step, per run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, recs in logs.items():
        train = [r for r in recs if "teacher_entropy" in r]
        steps = [r["step"] for r in train]
        for ax, key in zip(axes, (left_key, right_key)):
            ax.plot(steps, [r[key] for r in train], color=COLOURS[name], label=RUNS[name][0])
            for r in (r for r in recs if "collapse" in r):
                ax.axvline(r["step"], color=COLOURS[name], ls=":", lw=1)
    for ax in axes:
        ax.set(xlabel="step")
        ax.grid(alpha=0.3)
    return axes


def draw(work: Path, figures: Path) -> None:
    """The two figures, and each run's own training.png beside them."""
    plot_curves(work, figures)
    for name in RUNS:
        shutil.copyfile(work / name / "training.png",
                        figures / f"training-{name.replace('_', '-')}.png")


def save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"wrote {path}")


def summary(work: Path, knns: dict[str, float], commands: dict[str, list[str]]) -> dict:
    rows = {}
    for name in RUNS:
        recs = records(work / name)
        last = [r for r in recs if "teacher_entropy" in r][-1]
        rows[name] = {
            "label": RUNS[name][0], "steps": last["step"],
            "precision": json.loads((work / name / "config.json").read_text())["resolved"][
                "precision"],
            "command": " ".join(["dino-train", *commands[name][1:]]),
            "last": {k: last[k] for k in ("loss", "teacher_entropy", "teacher_entropy_frac",
                                          "kl", "prototypes_used", "top_prototype_share",
                                          "center_norm")},
            "collapse": [{"mode": r["collapse"], "step": r["step"], "warning": r["warning"]}
                         for r in recs if "collapse" in r],
            "knn20_top1": knns[name]}
    return rows


def print_table(rows: dict, init_knn: float) -> None:
    print("| run | H(P_t) / ln K | KL | prototypes in use | largest share | warning | "
          "k-NN top-1 (k = 20) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows.values():
        last = row["last"]
        warned = ", ".join(f"{c['mode']} at step {c['step']}" for c in row["collapse"]) or "none"
        print(f"| {row['label']} | {last['teacher_entropy_frac']:.3f} | {last['kl']:.3f} | "
              f"{last['prototypes_used']:.0f} | {last['top_prototype_share']:.2f} | {warned} | "
              f"{row['knn20_top1']:.2f} |")
    print(f"| untrained network (same seed) | | | | | | {init_knn:.2f} |")


def main() -> None:
    args = parse_args()
    if args.plot_only:
        draw(args.work, args.figures)
        return
    for name in [*RUNS, "init"]:
        if (args.work / name).exists():
            fail(f"{args.work / name} exists: use another --work, or delete it")
    args.work.mkdir(parents=True, exist_ok=True)
    train = extract(args.shared_data / "cifar10-train.tar.gz", args.work, "train")
    test = extract(args.shared_data / "cifar10-test.tar.gz", args.work, "test")
    bank = subset(train, args.work / f"train_{args.per_class}", args.per_class)
    val = subset(test, args.work / "test_100", 100)
    started = datetime.datetime.now().isoformat(timespec="seconds")
    head = [tool("dino-train"), *RECIPE, "--data_path", str(bank)]
    commands, knns = {}, {}
    for name, (_, options) in RUNS.items():
        commands[name] = [*head, *options, *args.extra, "--output_dir", str(args.work / name),
                          "--max-steps", str(args.steps)]
        run(commands[name], args.work / f"{name}.train.log")
        knns[name] = knn(args.work / name / "checkpoint.pth", bank, val,
                         args.work / f"{name}.knn.json", "20")[20]
    run([*head, *args.extra, "--output_dir", str(args.work / "init"), "--max-steps", "0"],
        args.work / "init.train.log")
    init_knn = knn(args.work / "init" / "checkpoint.pth", bank, val,
                   args.work / "init.knn.json", "20")[20]

    draw(args.work, args.figures)
    rows = summary(args.work, knns, commands)
    print(f"date: {started}  machine: {cpu_model()}, {os.cpu_count()} cores")
    print_table(rows, init_knn)
    doc = {"date": started, "machine": cpu_model(), "recipe": RECIPE, "extra": args.extra,
           "steps": args.steps, "per_class": args.per_class, "runs": rows,
           "init_knn20_top1": init_knn}
    out = args.figures / "understanding-dino.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
