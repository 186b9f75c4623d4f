"""``dino-run``'s tracking options, checked, and the seed they give (read before the model loads)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dino_core.errors import OptionError

from .palette import LabelImageError, read_labels
from .tracker import Seed, TrackConfig, TrackError, TrackOptions, parse_box


@dataclass(frozen=True)
class TrackRequest:
    """What ``--track``, ``--track-box``, ``--track-json`` and the propagation options asked."""

    mask: str | None = None        # --track: first-frame label image
    box: str | None = None         # --track-box: "X,Y,W,H" in the first frame's pixels
    json: str | None = None        # --track-json: objects per frame, JSON lines
    options: TrackOptions = field(default_factory=TrackOptions)

    @property
    def seeded(self) -> bool:
        return self.mask is not None or self.box is not None

    def check(self, display: bool, heads_all: bool) -> None:
        """Usage errors, before anything is opened."""
        if self.mask is not None and self.box is not None:
            raise OptionError("give one of --track MASK.png and --track-box X,Y,W,H")
        if self.box is not None:
            parse_box(self.box)
        self.options.check()
        if self.json is not None and not self.seeded and not display:
            raise OptionError("--track-json writes the tracked objects: add --track MASK.png or "
                              "--track-box X,Y,W,H (or draw a box in the window)")
        if self.seeded and heads_all:
            raise OptionError("--heads all tiles the frame into one copy per head, and tracking "
                              "draws on the whole frame: choose one")

    def seed(self, frame_hw: tuple[int, int] | None) -> Seed | None:
        """The first frame's seed; the mask is read and checked here (against the first frame's
        size when the source tells it before the run: ``frame_hw`` (H, W))."""
        if self.box is not None:
            x, y, w, h = box = parse_box(self.box)
            if frame_hw is not None and (x >= frame_hw[1] or y >= frame_hw[0] or x + w <= 0
                                         or y + h <= 0):
                raise TrackError(f"--track-box {x},{y},{w},{h} lies outside the "
                                 f"{frame_hw[1]}x{frame_hw[0]} frame")
            return Seed(box=box, origin="--track-box")
        if self.mask is None:
            return None
        origin = f"--track {self.mask}"
        try:
            labels, _ = read_labels(self.mask)
        except LabelImageError as e:
            raise TrackError(f"{origin}: {e}") from None
        seed = Seed(labels=labels, origin=origin)
        if frame_hw is not None and labels.shape != tuple(frame_hw):
            raise TrackError(f"{origin} is {labels.shape[1]}x{labels.shape[0]} and the first "
                             f"frame {frame_hw[1]}x{frame_hw[0]}; give a mask of the first "
                             "frame's size")
        return seed

    def config(self, seed: Seed | None, armed: bool) -> TrackConfig | None:
        """Tracking from ``seed``; or, without one, ``armed`` (a window to draw a box in on a
        model with patch tokens): a tracker waiting for that box; else None."""
        if seed is None and not armed:
            return None
        return TrackConfig(self.options, seed)
