"""Decode -> preprocess -> batched inference -> post-process/render, overlapped in threads.

Each stage is one thread joined to the next by a bounded queue, so memory stays flat however
long the source is, and the consumer (writers, display: the caller's thread, which is the main
thread in the CLI because GUI toolkits want it) receives results in source order.

Files: every frame, in order; a full queue blocks the stage before it (back-pressure).
Live sources: latency first. The decoder keeps reading (a camera that is not read buffers old
frames) and a frame still waiting when a newer one arrives is dropped and counted as stale;
inference takes whatever frames are ready, up to the batch size, instead of waiting for more.

OpenCV and numpy release the GIL in their kernels, and so do the inference backends, so the
threads overlap for real.
"""
from __future__ import annotations

import queue
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from dino_core.batching import stack_padded
from dino_core.masks import mass_threshold_masks

from .backends.base import Backend, ModelOutputs
from .pca import PcaBasis, PcaOptions
from .postprocess import HeadSelection, normalize_maps
from .preprocess import InputSpec, Preprocessor
from .render import RenderOptions, render
from .results import FrameResult
from .sources import Frame, Source
from .tracking import TrackConfig, Tracker, draw_tracking

_END = object()          # end-of-stream marker passed down the queues
POLL_S = 0.05            # how often blocked stages look at the stop flag
JOIN_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class PipelineConfig:
    batch: int = 8
    max_frames: int | None = None
    live: bool | None = None       # None: as the source says
    render: RenderOptions | None = None  # None: no rendered image in the results
    heads: HeadSelection = HeadSelection()
    threshold: float | None = None  # mass threshold for masks; None: no masks
    keep_patch: bool = False       # keep patch tokens in the results (and PCA needs them)
    pca: PcaOptions = field(default_factory=PcaOptions)  # the PCA view's basis, background rule
    track: TrackConfig | None = None  # label propagation from a seed (needs patch tokens)


@dataclass
class RunSummary:
    """What happened in one run; ``format()`` is the CLI's closing lines."""

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

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if len(self.latencies) else 0.0

    def format(self) -> str:
        drops = ", ".join(f"{k} {v}" for k, v in self.dropped.items())
        model_fps = self.frames / self.model_seconds if self.model_seconds > 0 else 0.0
        return (f"frames {self.frames} in {self.seconds:.2f} s: {self.fps:.1f} frames/s "
                f"(model alone {model_fps:.1f} frames/s over {self.batches} batches); "
                f"latency p50 {self.latency_ms(50):.0f} ms, p99 {self.latency_ms(99):.0f} ms\n"
                f"dropped {sum(self.dropped.values())} ({drops}); "
                f"reconnects {self.reconnects}; stopped: {self.stop_reason}")


class PostProcessor:
    """Model outputs for a batch -> one :class:`FrameResult` per frame (masks, overlays)."""

    def __init__(self, config: PipelineConfig, grid: tuple[int, int], patch_size: int = 16
                 ) -> None:
        self.config = config
        self.grid = grid
        self.pca = (config.pca.colors() if config.render is not None and config.render.pca
                    else None)
        # One tracker per stream: all its state (context ring, first labels) lives in it.
        self.tracker: Tracker | None = (config.track.tracker(grid, patch_size)
                                        if config.track is not None else None)

    def __call__(self, frames: list[Frame], out: ModelOutputs) -> list[FrameResult]:
        cfg = self.config
        maps = cfg.heads.select(out.attn) if out.attn is not None else None  # (B, k, h, w)
        masks = (mass_threshold_masks(maps, cfg.threshold)
                 if cfg.threshold is not None and maps is not None else None)  # bool
        draw = cfg.render
        heat = (normalize_maps(maps) if draw is not None and draw.attention and maps is not None
                else None)
        colors = self.pca(out.patch, self.grid) if self.pca is not None else None
        results = []
        for i, frame in enumerate(frames):
            track = self.tracker.update(frame.image, out.patch[i]) if self.tracker else None
            rendered = None
            if draw is not None:
                rendered = render(frame.image, _at(heat, i), _at(masks, i), _at(colors, i), draw)
                rendered = draw_tracking(rendered, track)
            patch = out.patch[i] if cfg.keep_patch and out.patch is not None else None
            results.append(FrameResult(frame, out.cls[i], _at(out.attn, i), _at(maps, i),
                                       _at(masks, i), patch, rendered, track))
        return results


def _at(values: np.ndarray | None, i: int) -> np.ndarray | None:
    return None if values is None else values[i]


class Pipeline:
    """Run ``source`` through ``backend``; iterate :meth:`run` for results in order."""

    def __init__(self, source: Source, backend: Backend, config: PipelineConfig,
                 where: str = "model") -> None:
        self.source = source
        self.where = where
        self.backend = backend
        self.config = config
        self.live = source.info.live if config.live is None else config.live
        self.batch, self.pad_to = backend.metadata.batch.calls(config.batch)
        self.pre = Preprocessor(InputSpec.from_metadata(backend.metadata))
        self.post = PostProcessor(config, backend.metadata.grid, backend.metadata.patch_size)
        self.summary = RunSummary()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        depth = max(2, self.batch)
        self._decoded: queue.Queue = queue.Queue(1 if self.live else depth)
        self._ready: queue.Queue = queue.Queue(self.batch if self.live else 2 * depth)
        self._inferred: queue.Queue = queue.Queue(2)
        self._results: queue.Queue = queue.Queue(depth)

    # -- consumer side ----------------------------------------------------------------------
    def run(self) -> Iterator[FrameResult]:
        """Results in source order until the source ends, ``max_frames`` or :meth:`stop`."""
        started = time.perf_counter()
        self._start()
        try:
            while (item := self._get(self._results)) is not _END:
                self.summary.frames += 1
                yield item
                self.summary.latencies.append(time.perf_counter() - item.frame.read_time)
                if self.config.max_frames and self.summary.frames >= self.config.max_frames:
                    self.stop("max-frames reached")
                    break
        finally:
            self._shutdown()
            self.summary.seconds = time.perf_counter() - started
            self._collect_source_stats()
        if self._error is not None:
            raise self._error

    @property
    def pca_basis(self) -> PcaBasis | None:
        """The PCA view's basis: the given one, or the one fitted on the first batch."""
        return self.post.pca.fitted if self.post.pca is not None else None

    @property
    def tracker(self) -> Tracker | None:
        """The stream's tracker (``request`` restarts or stops it), when tracking is on."""
        return self.post.tracker

    def stop(self, reason: str) -> None:
        """Ask every stage to finish; the first reason given is the one reported."""
        if not self._stop.is_set():
            self.summary.stop_reason = reason
        self._stop.set()
        self.source.interrupt.set()

    def _collect_source_stats(self) -> None:
        stats = self.source.stats
        self.summary.dropped["corrupt"] = stats.corrupt
        self.summary.reconnects = stats.reconnects
        if stats.disconnected and self.summary.stop_reason == "end of source":
            self.summary.stop_reason = (f"source disconnected; gave up after "
                                        f"{stats.reconnects} reconnect attempts")

    # -- stages -----------------------------------------------------------------------------
    def _start(self) -> None:
        for name, target in (("decode", self._decode), ("preprocess", self._preprocess),
                             ("infer", self._infer), ("postprocess", self._postprocess)):
            thread = threading.Thread(target=self._guard(target), name=f"dino-run-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _guard(self, stage: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                stage()
            except BaseException as e:  # handed to the consumer, which re-raises it
                if self._error is None:
                    self._error = e
                self.stop(f"error in {threading.current_thread().name}: {e}")
        return run

    def _decode(self) -> None:
        limit = None if self.live else self.config.max_frames
        count = 0
        for frame in self.source.frames():
            frame.read_time = time.perf_counter()
            if self.live:
                self._put_latest(self._decoded, frame)
            elif not self._put(self._decoded, frame):
                return
            count += 1
            if limit and count >= limit or self._stop.is_set():
                break
        self._put(self._decoded, _END)

    def _preprocess(self) -> None:
        while (frame := self._get(self._decoded)) is not _END:
            if not self._put(self._ready, (frame, self.pre(frame.image))):
                return
        self._put(self._ready, _END)

    def _infer(self) -> None:
        ended = False
        while not ended:
            first = self._get(self._ready)
            if first is _END:
                break
            items, ended = self._fill_batch([first])
            frames = [f for f, _ in items]
            t0 = time.perf_counter()
            outputs = self.backend.run(stack_padded([x for _, x in items], self.pad_to))
            self.summary.model_seconds += time.perf_counter() - t0
            if self.summary.batches == 0:  # broken weights show on the first batch
                outputs.check_finite(self.where, self.backend.precision)
            self.summary.batches += 1
            if not self._put(self._inferred, (frames, outputs)):
                return
        self._put(self._inferred, _END)

    def _fill_batch(self, items: list) -> tuple[list, bool]:
        """Add frames up to the batch size: waiting for them (files) or not (live)."""
        while len(items) < self.batch:
            try:
                item = self._ready.get_nowait() if self.live else self._get(self._ready)
            except queue.Empty:
                break
            if item is _END:
                return items, True
            items.append(item)
        return items, False

    def _postprocess(self) -> None:
        while (item := self._get(self._inferred)) is not _END:
            frames, outputs = item
            for result in self.post(frames, outputs):
                if not self._put(self._results, result):
                    return
        self._put(self._results, _END)

    # -- queue helpers ----------------------------------------------------------------------
    def _put(self, q: queue.Queue, item: Any) -> bool:
        """Blocking put that gives up (False) once the pipeline is stopping."""
        while not self._stop.is_set():
            try:
                q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _put_latest(self, q: queue.Queue, frame: Frame) -> None:
        """Live sources: replace a frame nobody has taken yet with the newer one."""
        while True:
            try:
                q.put_nowait(frame)
                return
            except queue.Full:
                try:
                    q.get_nowait()
                    self.summary.dropped["stale"] += 1
                except queue.Empty:
                    pass

    def _get(self, q: queue.Queue) -> Any:
        """Blocking get that returns the end marker once the pipeline is stopping."""
        while not self._stop.is_set():
            try:
                return q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        return _END

    def _shutdown(self) -> None:
        self._stop.set()
        self.source.interrupt.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        self.source.close()

