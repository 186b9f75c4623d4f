"""Collapse detection: the two ways DINO fails, named with their numbers, a cause and a fix.

Caron et al. 2021 (section 5.3, figure 7): with centering alone the teacher's output becomes
uniform over the K prototypes, with sharpening alone it puts every image on one prototype; in
both the student then copies it (the KL between them goes to 0) and learns nothing. Users meet
it as a loss stuck at ln K (11.09 = ln 65536) or falling to 0. :class:`CollapseWatch` reads the
diagnostics of each ``log.jsonl`` record (:mod:`dino_train.diagnostics`) and reports a mode once,
when every record over ``--collapse-window`` steps, after ``--collapse-after`` steps, shows it:

* **uniform**: the teacher's entropy is at least 0.98 ln K and KL(teacher || student) below
  0.02 ln K (so the DINO loss, their sum, is within 4% of ln K);
* **one prototype**: one prototype takes at least a quarter of the batch's mean teacher mass
  (and at least 8 times its uniform share 1/K), and each image's teacher entropy is below
  0.5 ln K: the collapse is under way, and is reported before it is complete.

The thresholds leave a healthy run far away: in the runs of docs/understanding-dino.md and of
the tests, the default recipe's teacher entropy stayed at or below 0.93 ln K with a KL of at
least 0.04 ln K, and no prototype took more than 5% of the mass. The cause is read from the run's own settings (teacher vs student
temperature, centering and its momentum, lr, batch size, out_dim, the head's last layer), most
specific first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .config import STUDENT_TEMP, TrainConfig

UNIFORM, ONE_PROTOTYPE = "uniform", "one-prototype"
UNIFORM_MIN_ENTROPY = 0.98     # teacher entropy / ln K
UNIFORM_MAX_KL = 0.02          # KL(teacher || student) / ln K
ONE_MIN_SHARE = 0.25           # largest prototype share of the batch-mean teacher distribution
ONE_MIN_SHARE_OVER_UNIFORM = 8  # ... and at least 8 times its uniform share 1 / K
ONE_MAX_ENTROPY = 0.5          # teacher entropy / ln K
OFFICIAL_MAX_TEMP = 0.07       # main_dino.py: "anything above 0.07 is unstable"


@dataclass(frozen=True)
class Collapse:
    mode: str        # UNIFORM | ONE_PROTOTYPE
    step: int
    message: str     # one line: what was seen, the likely cause, what to change


def uniform_seen(record: dict[str, Any], log_k: float) -> bool:
    return (record["teacher_entropy_frac"] >= UNIFORM_MIN_ENTROPY
            and record["kl"] < UNIFORM_MAX_KL * log_k)


def one_prototype_seen(record: dict[str, Any], log_k: float) -> bool:
    share = record["top_prototype_share"]
    return (share >= ONE_MIN_SHARE and share * math.exp(log_k) >= ONE_MIN_SHARE_OVER_UNIFORM
            and record["teacher_entropy_frac"] < ONE_MAX_ENTROPY)


SIGNS: dict[str, Callable[[dict[str, Any], float], bool]] = {UNIFORM: uniform_seen,
                                                      ONE_PROTOTYPE: one_prototype_seen}


class CollapseWatch:
    """Fed every training record of a run; returns a :class:`Collapse` the first time a mode
    has lasted ``cfg.collapse_window`` steps after step ``cfg.collapse_after``, then stays quiet
    about that mode."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.log_k = math.log(cfg.out_dim)
        self.since: dict[str, int | None] = dict.fromkeys(SIGNS)  # step a streak began
        self.reported: set[str] = set()
        self.last_step: int | None = None

    def check(self, record: dict[str, Any]) -> Collapse | None:
        """``record``: a ``log.jsonl`` training record (with the teacher's diagnostics)."""
        start, self.last_step = self.last_step, record["step"]
        if "teacher_entropy_frac" not in record or record["step"] <= self.cfg.collapse_after:
            return None
        # the record covers the steps since the previous one
        start = max(start if start is not None else record["step"] - 1, self.cfg.collapse_after)
        found = None
        for mode, seen in SIGNS.items():
            if not seen(record, self.log_k):
                self.since[mode] = None
                continue
            if self.since[mode] is None:
                self.since[mode] = start
            lasted = record["step"] - self.since[mode]
            if lasted >= self.cfg.collapse_window and mode not in self.reported and not found:
                self.reported.add(mode)
                found = Collapse(mode, record["step"], describe(mode, record, self.cfg, lasted))
        return found


def describe(mode: str, record: dict[str, Any], cfg: TrainConfig, lasted: int) -> str:
    """The one-line warning: what was seen, with its numbers; the likely cause; the fix."""
    k, h, kl = cfg.out_dim, record["teacher_entropy"], record["kl"]
    loss = h + kl  # the DINO term alone (record["loss"] also holds KoLeo and iBOT)
    if mode == UNIFORM:
        seen = (f"teacher collapse (uniform) at step {record['step']}: for {lasted} steps every "
                f"image's teacher output has been almost flat over the K = {k} prototypes "
                f"(entropy {h:.3f} = {record['teacher_entropy_frac']:.3f} ln K), the student "
                f"copies it (KL {kl:.4f}) and the DINO loss is {loss:.3f} (ln K = "
                f"{math.log(k):.3f})")
        cause, fix = uniform_cause(record, cfg)
    else:
        seen = (f"teacher collapse (one prototype) at step {record['step']}: for {lasted} steps "
                f"{record['top_prototype_share']:.0%} of the batch's teacher mass has been on "
                f"one prototype ({record['prototypes_used']:.1f} of {k} in use), each image's "
                f"entropy {h:.3f} = {record['teacher_entropy_frac']:.3f} ln K, KL {kl:.4f}")
        cause, fix = one_prototype_cause(record, cfg)
    return f"{seen}; likely cause: {cause}; try {fix} (docs/understanding-dino.md)"


def uniform_cause(record: dict[str, Any], cfg: TrainConfig) -> tuple[str, str]:
    """Centering without enough sharpening, most specific first."""
    temp = record.get("teacher_temp", cfg.teacher_temps()[1])
    if not cfg.sharpening:
        return (f"no sharpening (--no-sharpening: the teacher at the student's temperature "
                f"{STUDENT_TEMP}), so centering alone flattens the teacher",
                "dropping --no-sharpening (teacher temperature 0.04, the official default)")
    if temp >= STUDENT_TEMP:
        return (f"the teacher temperature {temp:g} is not below the student's {STUDENT_TEMP}: "
                "no sharpening against the centering",
                "--teacher-temp 0.04 (official; 0.04-0.07 in the paper)")
    if temp > OFFICIAL_MAX_TEMP:
        return (f"the teacher temperature {temp:g} is above {OFFICIAL_MAX_TEMP}, where the "
                "official code calls training unstable",
                "--teacher-temp 0.04 (official default)")
    if cfg.warmup_teacher_temp_epochs and cfg.warmup_teacher_temp > cfg.teacher_temp and \
            record.get("epoch", 0) < cfg.warmup_teacher_temp_epochs:
        return (f"the warm-up teacher temperature {cfg.warmup_teacher_temp:g} sharpens less "
                f"than the final {cfg.teacher_temp:g}",
                f"--warmup-teacher-temp {min(cfg.teacher_temp, 0.04):g}")
    batch = cfg.batch_size_per_gpu
    if cfg.out_dim > 64 * batch and cfg.out_dim > 4096:
        return (f"K = {cfg.out_dim} prototypes against a batch of {batch} per process: the "
                "sharpened teacher spreads too thin to separate images",
                f"--out-dim {max(1024, 16 * batch)} or a larger --batch-size-per-gpu, or a "
                "lower --teacher-temp (official help: decrease --warmup-teacher-temp when the "
                "loss does not decrease)")
    return (f"sharpening at temperature {temp:g} is too weak for this run (lr "
            f"{record.get('lr', cfg.lr):.2g}, batch {cfg.batch_size_per_gpu}, K = {cfg.out_dim})",
            f"a lower --warmup-teacher-temp / --teacher-temp (now {cfg.warmup_teacher_temp:g} / "
            f"{cfg.teacher_temp:g}; official help: decrease it when the loss does not decrease), "
            f"or a lower --lr (now {cfg.lr:g})")


def one_prototype_cause(record: dict[str, Any], cfg: TrainConfig) -> tuple[str, str]:
    """Sharpening without enough centering, most specific first."""
    temp = record.get("teacher_temp", cfg.teacher_temps()[1])
    if cfg.centering == "none":
        return ("no centering (--centering none): nothing keeps one prototype from taking "
                "every image once the teacher is sharpened",
                "--centering center (the official running centre) or sinkhorn_knopp")
    if cfg.centering == "center" and cfg.center_momentum >= 0.99:
        return (f"the centre's momentum {cfg.center_momentum:g} makes it too slow to follow "
                "the teacher's drift onto one prototype",
                "--center-momentum 0.9 (official)")
    if temp < 0.02:
        return (f"the teacher temperature {temp:g} sharpens so much that the centre cannot "
                "balance it", "--teacher-temp 0.04 (official; 0.04-0.07 in the paper)")
    if not cfg.norm_last_layer or cfg.freeze_last_layer == 0:
        return ("the head's last layer is free to grow "
                f"(--norm-last-layer {str(cfg.norm_last_layer).lower()}, --freeze-last-layer "
                f"{cfg.freeze_last_layer}), which lets one prototype's logit dominate",
                "--norm-last-layer true and --freeze-last-layer 1 (official help: not "
                "normalising can make training unstable)")
    return (f"the student moves faster than centering can balance (lr {cfg.lr:g} for a batch "
            f"of {cfg.batch_size_per_gpu}, teacher temperature {temp:g})",
            f"a lower --lr (now {cfg.lr:g}) or a higher --teacher-temp (up to 0.07)")
