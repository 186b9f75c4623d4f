"""DAVIS semi-supervised evaluation: track every sequence of a DAVIS folder from its first
annotation, write the results as DAVIS does, and score them with J and F.

Layout (the DAVIS releases'): ``JPEGImages/480p/<seq>/00000.jpg ...``,
``Annotations/480p/<seq>/00000.png ...`` (palette PNGs) and the sequence lists:

* 2017 (multi-object): ``ImageSets/2017/<set>.txt``, one sequence per line; annotation value
  255 is void and counts as background, as in davis2017-evaluation's semi-supervised task.
* 2016 (single object): ``ImageSets/2016/<set>.txt`` (the 2017 release's list of the 2016
  sequences) or the 2016 release's ``ImageSets/480p/<set>.txt`` (lines of frame and mask
  paths); every nonzero annotation value is the one object (2016 masks are 0/255).

Scores follow davis2017-evaluation (:mod:`.metrics`): per object, J and F on every frame but
the first (given) and the last, then mean, recall and decay; the overall row averages over
all objects of all sequences, and J&F is the mean of J-Mean and F-Mean.

Sizes: the official script runs each frame at short side 480 with the long side floored to a
multiple of 64 (832x480 for DAVIS's 854x480): :func:`official_size`. A checkpoint runs there;
an exported file runs at its own size, and a warning names the official one when they differ.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from dino_core.errors import SourceError, UserError
from dino_core.fileio import atomic_write_bytes

from .metrics import f_measure, jaccard, statistics
from .palette import LabelImageError, encode_palette_png, read_labels
from .tracker import Seed, TrackConfig, TrackFrame, TrackOptions

VOID = 255
YEARS = ("2017", "2016")
OFFICIAL_SHORT_SIDE = 480
OFFICIAL_MULTIPLE = 64


def official_size(frame_hw: tuple[int, int], short_side: int = OFFICIAL_SHORT_SIDE
                  ) -> tuple[int, int]:
    """(H, W) the official eval_video_segmentation.py resizes a frame of ``frame_hw`` to."""
    h, w = frame_hw
    if h > w:
        return int((short_side * h / w) // OFFICIAL_MULTIPLE * OFFICIAL_MULTIPLE), short_side
    return short_side, int((short_side * w / h) // OFFICIAL_MULTIPLE * OFFICIAL_MULTIPLE)


@dataclass(frozen=True)
class DavisSet:
    """A DAVIS folder's sequences of one year and set, at one resolution."""

    root: Path
    year: str
    subset: str
    sequences: tuple[str, ...]
    resolution: str = "480p"

    def frames(self, sequence: str) -> list[Path]:
        return sorted((self.root / "JPEGImages" / self.resolution / sequence).glob("*.jpg"))

    def annotations(self, sequence: str) -> list[Path]:
        return sorted((self.root / "Annotations" / self.resolution / sequence).glob("*.png"))

    def labels(self, path: Path) -> np.ndarray:
        """An annotation's object ids (void as background; 2016: one object)."""
        try:
            ids, _ = read_labels(path)
        except LabelImageError as e:
            raise SourceError(f"{path}: {e}") from None
        if self.year == "2016":
            return (ids > 0).astype(np.uint8)
        return np.where(ids == VOID, 0, ids).astype(np.uint8)


def open_davis(root: str | Path, year: str = "2017", subset: str = "val",
               sequences: list[str] | None = None, resolution: str = "480p") -> DavisSet:
    """The sequences of ``root`` (all of the set's list, or ``sequences``), checked to have
    frames and a first annotation; :class:`SourceError` in one line otherwise."""
    root = Path(root)
    if year not in YEARS:
        raise UserError(f"--year {year}: expected one of {', '.join(YEARS)}")
    for folder in ("JPEGImages", "Annotations"):
        if not (root / folder / resolution).is_dir():
            raise SourceError(f"{root}: no {folder}/{resolution} folder; expected the DAVIS "
                              "layout (JPEGImages/480p, Annotations/480p, ImageSets)")
    names = list(sequences) if sequences else _sequence_list(root, year, subset, resolution)
    davis = DavisSet(root, year, subset, tuple(names), resolution)
    for name in names:
        if not davis.frames(name):
            raise SourceError(f"{root}: sequence {name} has no frames "
                              f"(JPEGImages/{resolution}/{name}/*.jpg)")
        if not davis.annotations(name):
            raise SourceError(f"{root}: sequence {name} has no annotation "
                              f"(Annotations/{resolution}/{name}/*.png)")
    if not names:
        raise SourceError(f"{root}: the {year} {subset} list names no sequence")
    return davis


def _sequence_list(root: Path, year: str, subset: str, resolution: str) -> list[str]:
    lists = [root / "ImageSets" / year / f"{subset}.txt"]
    if year == "2016":
        lists.append(root / "ImageSets" / resolution / f"{subset}.txt")
    path = next((p for p in lists if p.is_file()), None)
    if path is None:
        raise SourceError(f"{root}: no sequence list for DAVIS {year} {subset} (looked for "
                          f"{' and '.join(str(p.relative_to(root)) for p in lists)})")
    names: list[str] = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        # 2016's 480p lists: "/JPEGImages/480p/<seq>/00000.jpg /Annotations/480p/<seq>/00000.png"
        name = line.split()[0].strip("/").split("/")[-2] if "/" in line else line
        if name not in names:
            names.append(name)
    return names


@dataclass
class ObjectScore:
    """J and F of one object of one sequence: per frame, and their (mean, recall, decay)."""

    sequence: str
    object: int
    j: list[float] = field(default_factory=list)
    f: list[float] = field(default_factory=list)

    @property
    def j_stats(self) -> tuple[float, float, float]:
        return statistics(np.array(self.j))

    @property
    def f_stats(self) -> tuple[float, float, float]:
        return statistics(np.array(self.f))


def score_sequence(davis: DavisSet, sequence: str, results: Path) -> list[ObjectScore]:
    """J and F of each first-frame object of ``sequence`` against ``results/<seq>/<id>.png``."""
    annotations = davis.annotations(sequence)
    first = davis.labels(annotations[0])
    count = int(first.max())
    scores = [ObjectScore(sequence, i) for i in range(1, count + 1)]
    for path in annotations[1:-1]:          # the first is given, the last is not scored
        truth = davis.labels(path)
        predicted = read_result(results / sequence / path.name, truth.shape, count)
        for score in scores:
            t, p = truth == score.object, predicted == score.object
            score.j.append(jaccard(t, p))
            score.f.append(f_measure(t, p))
    return scores


def read_result(path: Path, shape: tuple[int, int], objects: int) -> np.ndarray:
    try:
        ids, _ = read_labels(path)
    except LabelImageError as e:
        raise SourceError(f"{path}: {e}; results are palette PNGs named like the "
                          "annotations") from None
    if ids.shape != tuple(shape):
        raise SourceError(f"{path} is {ids.shape[1]}x{ids.shape[0]}, its annotation "
                          f"{shape[1]}x{shape[0]}")
    if ids.max() > objects:
        raise SourceError(f"{path} holds object id {int(ids.max())}, and the sequence's first "
                          f"annotation has {objects} objects")
    return ids


@dataclass
class SequenceRun:
    """How tracking one sequence went: frames, seconds in all and inside the model."""

    sequence: str
    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    def line(self) -> str:
        rate = self.frames / max(self.seconds, 1e-9)
        model = self.frames / max(self.model_seconds, 1e-9)
        return (f"{self.sequence}: {self.frames} frames in {self.seconds:.1f} s, {rate:.2f} "
                f"frames/s (model alone {model:.2f} frames/s)")


def first_seed(davis: DavisSet, sequence: str) -> Seed:
    return Seed(labels=davis.labels(davis.annotations(sequence)[0]),
                origin=f"{sequence}: first annotation")


def write_results(folder: Path, tracked: Iterable[tuple[str, TrackFrame]]) -> int:
    """``folder/<frame name>.png`` for each (frame file name, tracking), each written whole;
    returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, track in tracked:
        atomic_write_bytes(encode_palette_png(track.labels), folder / f"{Path(name).stem}.png")
        count += 1
    return count


def track_sequence(davis: DavisSet, sequence: str, runtime, options: TrackOptions,
                   out: Path) -> SequenceRun:
    """Track ``sequence`` from its first annotation through ``runtime``'s pipeline (dino-run's:
    decoding, inference and tracking overlap) and write ``out/<seq>/<frame>.png``."""
    from ..sources import ImageFiles
    source = ImageFiles(davis.frames(sequence), f"{davis.root}: sequence {sequence}")
    pipe = runtime.pipeline(source, keep_patch=False,
                            track=TrackConfig(options, first_seed(davis, sequence)))
    write_results(out / sequence, ((r.frame.name, r.track) for r in pipe.run()))
    summary = pipe.summary
    return SequenceRun(sequence, summary.frames, summary.seconds, summary.model_seconds)


def _read_frame(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: not an image OpenCV can decode")
    return image


def summary(scores: list[ObjectScore]) -> dict[str, float]:
    """The overall row: means over every object of the per-object statistics."""
    j = np.array([s.j_stats for s in scores]).reshape(-1, 3)
    f = np.array([s.f_stats for s in scores]).reshape(-1, 3)
    jm, jr, jd = (float(np.mean(j[:, i])) if len(j) else math.nan for i in range(3))
    fm, fr, fd = (float(np.mean(f[:, i])) if len(f) else math.nan for i in range(3))
    return {"J&F-Mean": (jm + fm) / 2, "J-Mean": jm, "J-Recall": jr, "J-Decay": jd,
            "F-Mean": fm, "F-Recall": fr, "F-Decay": fd}


def format_table(scores: list[ObjectScore]) -> str:
    """Per object (sequence_id as DAVIS names them) and overall, three decimals."""
    names = [f"{s.sequence}_{s.object}" for s in scores]
    width = max([len("sequence")] + [len(n) for n in names])
    head = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
    lines = [f"{'sequence':<{width}}  " + "  ".join(f"{h:>8}" for h in head)]
    for name, s in zip(names, scores):
        lines.append(f"{name:<{width}}  " + "  ".join(f"{v:8.3f}" for v in (*s.j_stats,
                                                                            *s.f_stats)))
    overall = summary(scores)
    lines += ["", "  ".join(f"{k:>8}" for k in overall),
              "  ".join(f"{v:8.3f}" for v in overall.values())]
    return "\n".join(lines)


def scores_json(scores: list[ObjectScore], runs: list[SequenceRun], meta: dict) -> str:
    """Everything the table shows, per-frame values included, as JSON text."""
    objects = [{"sequence": s.sequence, "object": s.object, "J": s.j, "F": s.f,
                "J-Mean": s.j_stats[0], "J-Recall": s.j_stats[1], "J-Decay": s.j_stats[2],
                "F-Mean": s.f_stats[0], "F-Recall": s.f_stats[1], "F-Decay": s.f_stats[2]}
               for s in scores]
    return json.dumps({**meta, "overall": summary(scores), "objects": objects,
                       "runs": [asdict(r) for r in runs]}, indent=2, allow_nan=True) + "\n"


def iter_scores(davis: DavisSet, results: Path) -> Iterator[list[ObjectScore]]:
    for sequence in davis.sequences:
        yield score_sequence(davis, sequence, results)


@dataclass(frozen=True)
class EvalRequest:
    """``dino-eval davis``: a model to run (or results to score) on a DAVIS folder."""

    davis: DavisSet
    model: str | None = None          # run it and write into ``output_dir``
    output_dir: Path | None = None
    results: Path | None = None       # or score these result PNGs
    options: TrackOptions = TrackOptions()
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    batch: int = 8
    overwrite: bool = False


def evaluate(request: EvalRequest, echo: Callable[[str], None] = print,
             warn: Callable[[str], None] = print) -> tuple[list[ObjectScore], list[SequenceRun]]:
    """Track (when a model is given) then score every sequence; ``echo`` each sequence's line."""
    davis, runs = request.davis, []
    results = request.results
    if request.model is not None:
        results = request.output_dir
        _check_output(results, davis, request.overwrite)
        runs = list(_track_all(request, echo, warn))
    scores = []
    for sequence in davis.sequences:
        scores += score_sequence(davis, sequence, results)
    return scores, runs


def _check_output(folder: Path, davis: DavisSet, overwrite: bool) -> None:
    earlier = [s for s in davis.sequences if any((folder / s).glob("*.png"))]
    if earlier and not overwrite:
        raise UserError(f"--output-dir {folder} holds results of {', '.join(earlier[:3])}"
                        f"{' ...' if len(earlier) > 3 else ''}; add --overwrite to replace "
                        "them, or choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output-dir {folder}: cannot create it ({e.strerror or e})") from None


def _track_all(request: EvalRequest, echo: Callable[[str], None],
               warn: Callable[[str], None]) -> Iterator[SequenceRun]:
    from ..api import Runtime   # here: the module is imported by the CLI before any model
    runtimes: dict[tuple[int, int], Runtime] = {}
    warned = False
    for sequence in request.davis.sequences:
        first = _read_frame(request.davis.frames(sequence)[0])
        wanted = official_size(first.shape[:2])
        runtime = runtimes.get(wanted) or next(iter(runtimes.values()), None)
        if runtime is None or (runtime.metadata.img_size != wanted and _resizable(runtime)):
            runtime = Runtime(request.model, backend=request.backend, device=request.device,
                              batch_size=request.batch, threshold=None, input_size=wanted,
                              precision=request.precision, warmup=False)
            runtime.require_patch("tracking")
            runtimes[tuple(runtime.metadata.img_size)] = runtime
        size = tuple(runtime.metadata.img_size)
        if size != wanted and not warned:
            warn(f"{sequence}: frames {first.shape[1]}x{first.shape[0]} run at the model's "
                 f"{size[1]}x{size[0]}; the official script runs them at {wanted[1]}x{wanted[0]}"
                 f" (export with --img-size {wanted[0]} {wanted[1]} to compare with it)")
            warned = True
        run = track_sequence(request.davis, sequence, runtime, request.options,
                             request.output_dir)
        echo(run.line())
        yield run


def _resizable(runtime) -> bool:
    """Whether the model runs at any size (a checkpoint) rather than its exported one."""
    return runtime.backend.name == "torch"
