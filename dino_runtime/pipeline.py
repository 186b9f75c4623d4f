"""Decode -> preprocess -> batched inference -> post-process/render, overlapped in threads, for
one source or several at once.

Each stream has its own decoder thread; the other stages are one thread each, shared by all
streams, joined by bounded queues, so memory stays flat however long the sources are, and the
consumer (writers, display, live view: the caller's thread, which is the main thread in the
CLI because GUI toolkits want it) receives every stream's results in that stream's order.

Files: every frame, in order; a full queue blocks the stage before it (back-pressure).
Live sources: latency first. The decoder keeps reading (a camera that is not read buffers old
frames) and a frame still waiting when a newer one of the same stream arrives is dropped and
counted as stale for that stream; a decoder never waits (:mod:`.mux`).

Batches take frames of every stream (one model call for all cameras). A batch closes when it is
full or when its oldest frame has waited ``batch_wait`` seconds since it was decoded, so a slow
stream never stalls the others (:func:`batch_wait`). A stream that ends or dies ends alone; the
others go on.

OpenCV and numpy release the GIL in their kernels, and so do the inference backends, so the
threads overlap for real.
"""
from __future__ import annotations

import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dino_core.batching import stack_padded
from dino_core.masks import mass_threshold_masks

from .backends.base import Backend, ModelOutputs
from .mux import FrameMux, StreamEnd
from .pca import PcaBasis, PcaOptions
from .postprocess import HeadSelection, normalize_maps
from .preprocess import InputSpec, Preprocessor
from .render import RenderOptions, render
from .results import FrameResult
from .sources import Frame, Source
from .streams import Stream
from .summary import LiveStats, RunSummary, combine
from .tracking import TrackConfig, Tracker, draw_tracking

__all__ = ["Pipeline", "PipelineConfig", "PostProcessor", "RunSummary", "batch_wait"]

_END = object()          # end-of-run marker passed down the queues
POLL_S = 0.05            # how often blocked stages look at the stop flag
JOIN_TIMEOUT_S = 5.0
# Several live streams: a batch waits for other streams' frames at most half a frame interval
# of the fastest one (so a frame is never held back a whole interval), and never longer than
# this.
MAX_BATCH_WAIT_S = 0.05
EVERY_STREAM_ENDED = "every stream ended"


@dataclass(frozen=True)
class PipelineConfig:
    batch: int = 8
    max_frames: int | None = None  # per stream
    live: bool | None = None       # None: as each source says
    render: RenderOptions | None = None  # None: no rendered image in the results
    heads: HeadSelection = HeadSelection()
    threshold: float | None = None  # mass threshold for masks; None: no masks
    keep_patch: bool = False       # keep patch tokens in the results (and PCA needs them)
    pca: PcaOptions = field(default_factory=PcaOptions)  # the PCA view's basis, background rule
    track: TrackConfig | None = None  # label propagation from a seed (needs patch tokens)
    batch_wait: float | None = None  # seconds; None: as the streams say (see batch_wait)


def batch_wait(config: PipelineConfig, streams: Sequence[Stream]) -> float | None:
    """How long a batch waits for more frames, from its oldest frame's decoding (None: until
    it is full).

    The given ``config.batch_wait``, else: files only, until full (every frame is kept, and
    full batches are the fastest); one live stream, not at all (its next frame is a whole frame
    interval away: take what is ready); several streams with a live one, half a frame interval
    of the fastest live stream, at most :data:`MAX_BATCH_WAIT_S`.
    """
    if config.batch_wait is not None:
        return config.batch_wait
    live = [s for s in streams if s.live]
    if not live:
        return None
    if len(streams) == 1:
        return 0.0
    return min(MAX_BATCH_WAIT_S, 0.5 / max(s.source.info.fps for s in live))


class PostProcessor:
    """Model outputs for a batch -> one :class:`FrameResult` per frame (masks, overlays).

    One per stream: it holds the stream's own state (the PCA basis fitted on its frames).
    """

    def __init__(self, config: PipelineConfig, grid: tuple[int, int], patch_size: int = 16,
                 track: TrackConfig | None = None) -> None:
        self.config = config
        self.grid = grid
        self.pca = (config.pca.colors() if config.render is not None and config.render.pca
                    else None)
        # One tracker per stream: all its state (context ring, first labels) lives in it. The
        # stream's own seed (``track``) wins over the run's (``config.track``).
        track = track if track is not None else config.track
        self.tracker: Tracker | None = (track.tracker(grid, patch_size)
                                        if track is not None else None)

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


def _as_streams(sources: Source | Sequence[Source | Stream], live: bool | None) -> list[Stream]:
    """One :class:`Stream` per source, indexed in order; bare sources are named streamN."""
    if hasattr(sources, "frames"):
        sources = [sources]
    streams = [s if isinstance(s, Stream) else Stream(f"stream{i}", s)
               for i, s in enumerate(sources)]
    if not streams:
        raise ValueError("a pipeline needs at least one source")
    for i, stream in enumerate(streams):
        stream.index = i
        stream.live = stream.source.info.live if live is None else live
    return streams


class Pipeline:
    """Run ``source`` (one, or a list of sources or :class:`Stream`) through ``backend``;
    iterate :meth:`run` for results, each stream's in its order.

    ``on_stream_end(stream)`` runs in the consumer's thread when a stream has ended and its
    last result was consumed (the CLI commits that stream's outputs there).
    """

    def __init__(self, source: Source | Sequence[Source | Stream], backend: Backend,
                 config: PipelineConfig, where: str = "model",
                 on_stream_end: Callable[[Stream], None] | None = None) -> None:
        self.streams = _as_streams(source, config.live)
        self.source = self.streams[0].source
        self.where = where
        self.backend = backend
        self.config = config
        self.on_stream_end = on_stream_end
        self.live = any(s.live for s in self.streams)
        self.batch, self.pad_to = backend.metadata.batch.calls(config.batch)
        self.pre = Preprocessor(InputSpec.from_metadata(backend.metadata))
        meta = backend.metadata
        for stream in self.streams:
            stream.post = PostProcessor(config, meta.grid, meta.patch_size, stream.track)
            stream.summary = RunSummary()
            stream.live_stats = LiveStats()
        # One stream: its summary is the run's (the single-source summary of earlier versions).
        self.summary = (self.streams[0].summary if len(self.streams) == 1
                        else RunSummary(stop_reason=EVERY_STREAM_ENDED))
        self.wait = batch_wait(config, self.streams)
        self._by_name = {s.name: s for s in self.streams}
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._threads: list[threading.Thread] = []
        self._started = time.perf_counter()
        depth = max(2, self.batch)
        # Files: ``depth`` decoded frames in all, shared out (eight 720p streams would otherwise
        # hold 64 decoded frames, 180 MB); live streams: the newest frame only.
        per_file = max(2, math.ceil(depth / len(self.streams)))
        self._decoded = FrameMux(self.streams, [1 if s.live else per_file for s in self.streams],
                                 self._stop)
        self._ready: queue.Queue = queue.Queue(self.batch if self.live else 2 * depth)
        self._inferred: queue.Queue = queue.Queue(2)
        self._results: queue.Queue = queue.Queue(depth)

    # -- consumer side ----------------------------------------------------------------------
    def run(self) -> Iterator[FrameResult]:
        """Results until every stream ends, ``max_frames`` each or :meth:`stop`."""
        self._started = time.perf_counter()
        self._start()
        try:
            while (item := self._get(self._results)) is not _END:
                if isinstance(item, StreamEnd):
                    self._finish(item.stream)
                    continue
                stream = self._by_name[item.frame.stream]
                if stream.ending.is_set():  # past its --max-frames: what was still in flight
                    continue
                stream.summary.frames += 1
                if stream.size is None:
                    stream.size = (item.frame.image.shape[1], item.frame.image.shape[0])
                yield item
                done = time.perf_counter()
                stream.summary.latencies.append(done - item.frame.read_time)
                stream.live_stats.add(done, done - item.frame.read_time)
                limit = self.config.max_frames
                if limit and stream.summary.frames >= limit and self.end_stream(
                        stream, "max-frames reached"):
                    self.stop("max-frames reached")
                    break
        finally:
            self._shutdown()
            self._close_summaries()
        if self._error is not None:
            raise self._error

    def stream_of(self, result: FrameResult) -> Stream:
        """The stream a result belongs to."""
        return self._by_name[result.frame.stream]

    @property
    def pca_basis(self) -> PcaBasis | None:
        """The first stream's PCA basis: the given one, or the one fitted on its first batch."""
        return stream_pca_basis(self.streams[0])

    @property
    def tracker(self) -> Tracker | None:
        """The first stream's tracker (``request`` restarts or stops it), when tracking is on;
        each stream's is ``stream.post.tracker``."""
        return self.streams[0].post.tracker

    def stop(self, reason: str) -> None:
        """Ask every stage to finish; the first reason given is the one reported."""
        if not self._stop.is_set():
            self.summary.stop_reason = reason
        self._stop.set()
        for stream in self.streams:
            stream.source.interrupt.set()

    def end_stream(self, stream: Stream, reason: str) -> bool:
        """End one stream early (the others go on); True when no stream is left running."""
        if not stream.ending.is_set():
            stream.summary.stop_reason = reason
            stream.ending.set()
            stream.source.interrupt.set()
            self._decoded.drain(stream)
        return all(s.ending.is_set() or s.finished for s in self.streams)

    def _finish(self, stream: Stream) -> None:
        """A stream's end reached the consumer: close its counters, tell the caller."""
        stream.finished = True
        self._close_stream(stream)
        if self.on_stream_end is not None:
            self.on_stream_end(stream)

    def _close_stream(self, stream: Stream) -> None:
        summary, stats = stream.summary, stream.source.stats
        summary.seconds = time.perf_counter() - self._started
        summary.dropped["corrupt"] = stats.corrupt
        summary.reconnects = stats.reconnects
        if stats.disconnected and summary.stop_reason == "end of source":
            summary.stop_reason = (f"source disconnected; gave up after "
                                   f"{stats.reconnects} reconnect attempts")

    def _close_summaries(self) -> None:
        several = len(self.streams) > 1
        for stream in self.streams:
            if stream.finished:
                continue
            if several and not stream.ending.is_set():  # the run's stop reached it first
                stream.summary.stop_reason = self.summary.stop_reason
            self._close_stream(stream)
        self.summary.seconds = time.perf_counter() - self._started
        if several:
            combine([s.summary for s in self.streams], self.summary)

    def fail(self, reason: str) -> None:
        """Record a failure as the stop reason of the run and of the streams still running."""
        self.summary.stop_reason = reason
        for stream in self.streams:
            if not stream.finished:
                stream.summary.stop_reason = reason

    def status(self) -> dict[str, Any]:
        """Plain values for the live page, ``/api/status`` and ``/metrics``, taken now."""
        now = time.perf_counter()
        streams = [_stream_status(s, now) for s in self.streams]
        summary = self.summary
        return {
            "uptime_s": round(now - self._started, 3),
            "running": not self._stop.is_set() and not all(s.finished for s in self.streams),
            "batch": self.batch,
            "batches": summary.batches,
            "model_seconds": round(summary.model_seconds, 6),
            "frames": sum(s["frames"] for s in streams),
            "fps": round(sum(s["fps"] for s in streams), 3),
            "streams": streams,
        }

    # -- stages -----------------------------------------------------------------------------
    def _start(self) -> None:
        several = len(self.streams) > 1
        for stream in self.streams:
            name = f"dino-run-decode-{stream.name}" if several else "dino-run-decode"
            self._spawn(name, lambda s=stream: self._decode(s))
        for name, target in (("preprocess", self._preprocess), ("infer", self._infer),
                             ("postprocess", self._postprocess)):
            self._spawn(f"dino-run-{name}", target)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guard(target), name=name, daemon=True)
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

    def _decode(self, stream: Stream) -> None:
        limit = None if stream.live else self.config.max_frames
        count = 0
        for frame in stream.source.frames():
            frame.read_time = time.perf_counter()
            frame.stream = stream.name
            if not self._decoded.put(stream, frame):
                break
            count += 1
            if limit and count >= limit or self._stop.is_set() or stream.ending.is_set():
                break
        self._decoded.close(stream)

    def _preprocess(self) -> None:
        while (item := self._decoded.get()) is not None:
            if isinstance(item, StreamEnd):
                if not self._put(self._ready, item):
                    return
                continue
            stream, frame = item
            if stream.ending.is_set():
                continue
            if not self._put(self._ready, (stream, frame, self.pre(frame.image))):
                return
        self._put(self._ready, _END)

    def _infer(self) -> None:
        ended = False
        while not ended:
            first = self._get(self._ready)
            if first is _END:
                break
            if isinstance(first, StreamEnd):
                if not self._put(self._inferred, first):
                    return
                continue
            items, ends, ended = self._fill_batch([first])
            frames = [(stream, frame) for stream, frame, _ in items]
            t0 = time.perf_counter()
            outputs = self.backend.run(stack_padded([x for _, _, x in items], self.pad_to))
            self.summary.model_seconds += time.perf_counter() - t0
            if self.summary.batches == 0:  # broken weights show on the first batch
                outputs.check_finite(self.where, self.backend.precision)
            self.summary.batches += 1
            for item in [(frames, outputs), *ends]:  # a stream's end after its last frames
                if not self._put(self._inferred, item):
                    return
        self._put(self._inferred, _END)

    def _fill_batch(self, items: list) -> tuple[list, list[StreamEnd], bool]:
        """Add frames up to the batch size, waiting for them until the oldest frame has waited
        ``self.wait`` (None: until full). Returns (items, stream ends met, run ended)."""
        ends: list[StreamEnd] = []
        deadline = None if self.wait is None else items[0][1].read_time + self.wait
        while len(items) < self.batch:
            if deadline is None:
                item = self._get(self._ready)
            else:
                left = deadline - time.perf_counter()
                try:
                    item = (self._ready.get(timeout=min(left, POLL_S)) if left > 0
                            else self._ready.get_nowait())
                except queue.Empty:
                    if left > POLL_S and not self._stop.is_set():
                        continue
                    break
            if item is _END:
                return items, ends, True
            if isinstance(item, StreamEnd):
                ends.append(item)
                continue
            items.append(item)
        return items, ends, False

    def _postprocess(self) -> None:
        while (item := self._get(self._inferred)) is not _END:
            if isinstance(item, StreamEnd):
                if not self._put(self._results, item):
                    return
                continue
            frames, outputs = item
            for result in self._post_batch(frames, outputs):
                if not self._put(self._results, result):
                    return
        self._put(self._results, _END)

    def _post_batch(self, frames: list[tuple[Stream, Frame]], outputs: ModelOutputs
                    ) -> list[FrameResult]:
        """Each stream's rows through its own post-processor; results in batch order."""
        rows: dict[int, list[int]] = {}
        for row, (stream, _) in enumerate(frames):
            rows.setdefault(stream.index, []).append(row)
        if len(rows) == 1:  # one stream in the batch: no copy of the outputs
            return frames[0][0].post([f for _, f in frames], outputs)
        results: list[FrameResult | None] = [None] * len(frames)
        for index, picked in rows.items():
            post = self.streams[index].post
            for row, result in zip(picked, post([frames[r][1] for r in picked],
                                                outputs.take(picked))):
                results[row] = result
        return results

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
        for stream in self.streams:
            stream.source.interrupt.set()
        for thread in self._threads:
            thread.join(JOIN_TIMEOUT_S)
        for stream in self.streams:
            stream.source.close()


def stream_pca_basis(stream: Stream) -> PcaBasis | None:
    """A stream's PCA basis: the given one, or the one fitted on its first batch (None without
    the PCA view)."""
    pca = stream.post.pca if stream.post is not None else None
    return pca.fitted if pca is not None else None


def _stream_status(stream: Stream, now: float) -> dict[str, Any]:
    info, stats, summary = stream.source.info, stream.source.stats, stream.summary
    size = stream.size or info.size
    if stream.finished:
        state = "ended"
    elif stream.ending.is_set():
        state = "ending"
    else:
        state = "running"
    return {
        "name": stream.name,
        "source": info.description,
        "live": stream.live,
        "width": size[0] if size else None,
        "height": size[1] if size else None,
        "source_fps": round(info.fps, 3),
        "state": state,
        "stop_reason": summary.stop_reason if state != "running" else "",
        "frames": summary.frames,
        "fps": round(stream.live_stats.fps(now), 3),
        "latency_ms": {"p50": round(stream.live_stats.latency_ms(50), 1),
                       "p99": round(stream.live_stats.latency_ms(99), 1)},
        "dropped": {"corrupt": stats.corrupt, "stale": summary.dropped["stale"]},
        "reconnects": stats.reconnects,
    }
