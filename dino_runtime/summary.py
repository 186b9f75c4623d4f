"""What a run did: :class:`RunSummary` per stream and for the whole run (the closing lines of
``dino-run``), and :class:`LiveStats`, the recent window the live page and ``/metrics`` read
while the run goes on."""
from __future__ import annotations

import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

LIVE_WINDOW = 256           # recent frames the live figures are taken over
LIVE_FPS_SECONDS = 2.0      # frames/s now: frames finished in the last this many seconds


@dataclass
class RunSummary:
    """What happened in one run (or to one stream of it); ``format()`` is the CLI's closing
    lines."""

    frames: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0     # time inside backend.run, summed over batches
    batches: int = 0
    latencies: array = field(default_factory=lambda: array("d"))  # seconds, decode -> consumed
    dropped: dict[str, int] = field(default_factory=lambda: {"corrupt": 0, "stale": 0})
    reconnects: int = 0
    stop_reason: str = "end of source"

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.model_seconds if self.model_seconds > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if len(self.latencies) else 0.0

    def drops_text(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in self.dropped.items())
        return f"dropped {sum(self.dropped.values())} ({drops})"

    def latency_text(self) -> str:
        return f"latency p50 {self.latency_ms(50):.0f} ms, p99 {self.latency_ms(99):.0f} ms"

    def format(self) -> str:
        return (f"frames {self.frames} in {self.seconds:.2f} s: {self.fps:.1f} frames/s "
                f"(model alone {self.model_fps:.1f} frames/s over {self.batches} batches); "
                f"{self.latency_text()}\n"
                f"{self.drops_text()}; reconnects {self.reconnects}; stopped: {self.stop_reason}")


def combine(parts: Sequence[RunSummary], whole: RunSummary) -> None:
    """Fill ``whole`` (which holds the batches and model time) with the sum of ``parts``."""
    whole.frames = sum(p.frames for p in parts)
    whole.latencies = array("d", (v for p in parts for v in p.latencies))
    whole.dropped = {k: sum(p.dropped.get(k, 0) for p in parts) for k in whole.dropped}
    whole.reconnects = sum(p.reconnects for p in parts)


def stream_line(name: str, about: str, summary: RunSummary) -> str:
    """One stream's closing line."""
    return (f"stream {name} ({about}): frames {summary.frames} in {summary.seconds:.2f} s: "
            f"{summary.fps:.1f} frames/s; {summary.latency_text()}; {summary.drops_text()}; "
            f"reconnects {summary.reconnects}; stopped: {summary.stop_reason}")


def overall_line(streams: int, summary: RunSummary) -> str:
    """The whole run's closing line, after the streams' lines."""
    per_batch = summary.frames / summary.batches if summary.batches else 0.0
    return (f"all {streams} streams: frames {summary.frames} in {summary.seconds:.2f} s: "
            f"{summary.fps:.1f} frames/s (model alone {summary.model_fps:.1f} frames/s over "
            f"{summary.batches} batches, {per_batch:.1f} frames each); "
            f"{summary.latency_text()}; {summary.drops_text()}; "
            f"reconnects {summary.reconnects}; stopped: {summary.stop_reason}")


class LiveStats:
    """The last :data:`LIVE_WINDOW` frames of one stream (when each was finished, its latency)
    for figures of *now*: frames/s over the last seconds, latency percentiles.

    Written by the consumer thread, read by the live server's threads: ``deque.append`` and
    ``list(deque)`` are atomic in CPython, so a reader sees a consistent window.
    """

    def __init__(self) -> None:
        self._done: deque[tuple[float, float]] = deque(maxlen=LIVE_WINDOW)

    def add(self, done: float, latency: float) -> None:
        self._done.append((done, latency))

    def fps(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        recent = [t for t, _ in list(self._done) if now - t <= LIVE_FPS_SECONDS]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-6)

    def latency_ms(self, q: float) -> float:
        values = [lat for _, lat in list(self._done)]
        return float(np.percentile(values, q)) * 1000 if values else 0.0
