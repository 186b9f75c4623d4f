"""Python API: ``Runtime("model.onnx")(frames)`` and ``Runtime(...).stream(source)``.

    from dino_runtime import Runtime
    rt = Runtime("dino_vits16.onnx")              # backend chosen by the file type
    out = rt(frames)                              # frames (B, H, W, 3) uint8 BGR
    out.cls, out.attn, out.masks                  # (B, D), (B, heads, h, w), (B, 1, h, w) bool
    for r in rt.stream("video.mp4"):              # or a camera index, folder, glob, URL
        r.index, r.timestamp, r.cls, r.masks
    for r in rt.streams(["a.mp4", "rtsp://cam/1"]):  # several, batched together
        r.stream, r.index, r.cls
    basis = rt.fit_pca("photos/", foreground=True)  # one PCA basis across images (DINOv2 parts)
"""
from __future__ import annotations

import os
from typing import Callable, Iterator, Sequence

import numpy as np

from dino_core.batching import chunks, stack_padded
from dino_core.errors import OptionError, UserError
from dino_core.masks import mass_threshold_masks
from dino_core.memory import check_inference_memory, largest_batch

from .backends import BackendOptions, ModelOutputs, load_backend
from .pca import PcaBasis, PcaOptions, fit_basis
from .pipeline import Pipeline, PipelineConfig, RunSummary
from .postprocess import HeadSelection
from .preprocess import InputSpec, Preprocessor
from .render import RenderOptions
from .results import BatchResult, FrameResult
from .sources import Source, SourceSpec, open_source
from .streams import Stream, stream_specs
from .tracking import TrackConfig

FIT_IMAGES = 64   # frames a PCA basis is fitted on at most (tokens: 64 x h*w x D floats)


class Runtime:
    """An exported model (``.onnx``, ``.engine``) or checkpoint (``.pth``) ready to run on frames.

    ``heads``: ``"mean"``, ``"all"`` or a head index, for the masks; ``threshold``: the official
    mass threshold (None: no masks). ``input_size`` (H, W) applies to checkpoints only: exported
    files carry their own; without it a checkpoint runs at short side 224 with the aspect of
    ``frame_size`` (H, W). Other arguments go to the backend (see ``BackendOptions``).
    A model without attention (a DINOv3 ConvNeXt: ``metadata.has_attention`` false) gives
    embeddings and patch tokens only: ``attn`` and ``masks`` are None, whatever ``threshold``.
    One call on ``batch_size`` frames must fit in the memory available (checked before the
    warm-up); ``fit_batch`` lowers the batch to what fits instead of refusing (verification,
    whose batch is only a speed choice).
    """

    def __init__(self, model: str | os.PathLike, *, backend: str = "auto", device: str = "auto",
                 batch_size: int = 8, heads: str | int = "mean", threshold: float | None = 0.6,
                 input_size: tuple[int, int] | None = None, precision: str = "auto",
                 threads: int | None = None, providers: Sequence[str] | None = None,
                 frame_size: tuple[int, int] | None = None, warmup: bool = True,
                 fit_batch: bool = False, compile_cache: bool = True,
                 qdq_fusion: bool = True) -> None:
        options = BackendOptions(device=device, precision=precision, input_size=input_size,
                                 frame_size=frame_size, threads=threads,
                                 providers=tuple(providers) if providers else None,
                                 batch=batch_size, compile_cache=compile_cache,
                                 qdq_fusion=qdq_fusion)
        self.model = model
        self.backend = load_backend(model, backend, options)
        self.metadata = self.backend.metadata
        self.heads = HeadSelection.parse(heads)
        self.heads.check(self.metadata.num_heads)
        self.threshold = threshold if self.metadata.has_attention else None
        if batch_size < 1:
            raise OptionError(f"batch size must be >= 1, got {batch_size}")
        self.batch_size, self.pad_to = self.metadata.batch.calls(batch_size)
        if self.backend.runs_on_host:  # before anything the size of a batch is allocated
            fits = largest_batch(self.metadata)
            if fit_batch and self.pad_to is None and fits is not None:
                self.batch_size = max(1, min(self.batch_size, fits))
            check_inference_memory(self.metadata, self.pad_to or self.batch_size, str(model))
        self.preprocessor = Preprocessor(InputSpec.from_metadata(self.metadata))
        self.last_summary: RunSummary | None = None
        self.last_streams: list[Stream] = []
        if warmup:  # the first call of a shape allocates and plans; keep that out of timings
            h, w = self.metadata.img_size
            blank = self.preprocessor(np.zeros((h, w, 3), np.uint8))
            out = self.backend.run(stack_padded([blank] * self.batch_size, self.pad_to))
            out.check_finite(str(model), self.backend.precision, "on a blank warm-up frame")

    @property
    def device(self) -> str:
        return self.backend.device

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> BatchResult:
        """frames (B, H, W, 3) uint8 BGR (any H, W; resized to the model) -> :class:`BatchResult`."""
        images = list(frames)
        for image in images:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"frames must be (H, W, 3) uint8 BGR, got {image.shape} "
                                 f"{image.dtype}")
        if not images:
            raise ValueError("no frames given")
        inputs = [self.preprocessor(image) for image in images]
        parts = [self._run_chunk(inputs[part]) for part in chunks(len(inputs), self.batch_size)]
        cls = np.concatenate([p.cls for p in parts])
        attn, patch, registers = (
            np.concatenate(arrays) if arrays[0] is not None else None
            for arrays in ([p.attn for p in parts], [p.patch for p in parts],
                           [p.attn_registers for p in parts]))
        masks = (mass_threshold_masks(self.heads.select(attn), self.threshold)
                 if self.threshold is not None and attn is not None else None)
        return BatchResult(cls, attn, masks, patch, registers)

    def _run_chunk(self, inputs: list[np.ndarray]) -> ModelOutputs:
        out = self.backend.run(stack_padded(inputs, self.pad_to))
        n = len(inputs)  # drop the rows that only padded a fixed-batch graph
        out.cls = out.cls[:n]
        out.attn = out.attn[:n] if out.attn is not None else None
        out.patch = out.patch[:n] if out.patch is not None else None
        out.attn_registers = out.attn_registers[:n] if out.attn_registers is not None else None
        return out

    def pipeline(self, source: Source | Sequence[Source | Stream], *,
                 max_frames: int | None = None, render: RenderOptions | None = None,
                 live: bool | None = None, keep_patch: bool = True,
                 pca: PcaOptions | None = None, track: TrackConfig | None = None,
                 batch_wait: float | None = None,
                 on_stream_end: Callable[[Stream], None] | None = None) -> Pipeline:
        """The threaded pipeline over an opened ``source``, or several batched together (used
        by ``stream``, ``streams`` and the CLI); ``pca``: the PCA view's basis and background
        rule (default: fitted on each stream's first batch); ``track``: label propagation from
        a seed, one tracker per stream (a :class:`Stream` with its own ``track`` uses that);
        ``max_frames`` per stream; ``batch_wait`` in seconds (see
        :func:`dino_runtime.pipeline.batch_wait`)."""
        own = [s.track for s in source if isinstance(s, Stream)] \
            if isinstance(source, (list, tuple)) else []
        if track is not None or any(t is not None for t in own):
            self.require_patch("tracking")
        config = PipelineConfig(batch=self.batch_size, max_frames=max_frames, live=live,
                                render=render, heads=self.heads, threshold=self.threshold,
                                keep_patch=keep_patch, pca=pca or PcaOptions(), track=track,
                                batch_wait=batch_wait)
        return Pipeline(source, self.backend, config, where=str(self.model),
                        on_stream_end=on_stream_end)

    def stream(self, source: str | int | os.PathLike | Source, *, max_frames: int | None = None,
               render: RenderOptions | None = None, live: bool | None = None,
               track: TrackConfig | None = None) -> Iterator[FrameResult]:
        """Results frame by frame, in order, from a camera index, path, glob, URL or Source
        (``track``: each result's ``track`` holds the tracked objects).

        The run's :class:`RunSummary` is in ``last_summary`` once the iteration ends.
        """
        if not hasattr(source, "frames"):
            source = open_source(SourceSpec(camera=source) if isinstance(source, int)
                                 else SourceSpec(path=str(source)))
        pipe = self.pipeline(source, max_frames=max_frames, render=render, live=live,
                             track=track)
        self.last_summary = pipe.summary
        yield from pipe.run()

    def require_patch(self, what: str) -> None:
        """:class:`UserError` unless the model outputs patch tokens (``what`` needs them)."""
        if "patch" not in self.metadata.outputs:
            raise UserError(f"{what} needs patch tokens, and {self.model} exports only "
                            f"{', '.join(self.metadata.outputs)}; re-export it with "
                            "dino-export ... --outputs cls,attn,patch")

    def streams(self, sources: Sequence[str | int | os.PathLike | Source], *,
                max_frames: int | None = None, render: RenderOptions | None = None,
                batch_wait: float | None = None,
                track: TrackConfig | Sequence[TrackConfig | None] | None = None
                ) -> Iterator[FrameResult]:
        """Results of several sources batched together into each model call, each source's
        in its order, interleaved; ``result.stream`` names the source (``NAME=SOURCE`` text
        names it, else it is named after what it reads). ``max_frames`` is per source.
        ``track``: one :class:`TrackConfig` for every source (each tracks on its own from the
        same seed), or one per source in order (None: that source is not tracked).

        The run's :class:`RunSummary` is in ``last_summary``, each stream's in
        ``last_streams[i].summary``, once the iteration ends.
        """
        per_source = (list(track) if isinstance(track, (list, tuple))
                      else [track] * len(sources))
        if len(per_source) != len(sources):
            raise ValueError(f"track: {len(per_source)} configs for {len(sources)} sources")
        texts = [("camera", str(s)) if isinstance(s, int) else ("source", str(s))
                 for s in sources if not hasattr(s, "frames")]
        specs = iter(stream_specs(texts))
        streams = []
        try:
            for i, source in enumerate(sources):
                if hasattr(source, "frames"):
                    streams.append(Stream(f"stream{i}", source))
                else:
                    spec = next(specs)
                    streams.append(Stream(spec.name, open_source(spec.source)))
        except BaseException:
            for stream in streams:
                stream.source.close()
            raise
        for stream, config in zip(streams, per_source):
            stream.track = config
        pipe = self.pipeline(streams, max_frames=max_frames, render=render,
                             batch_wait=batch_wait)
        self.last_summary, self.last_streams = pipe.summary, pipe.streams
        yield from pipe.run()

    def fit_pca(self, source: str | os.PathLike | Source, *, foreground: bool = False,
                threshold: float = 0.0, max_images: int = FIT_IMAGES) -> PcaBasis:
        """One PCA colour basis fitted on the patch tokens of up to ``max_images`` frames of
        ``source`` (a folder, glob, image or video), see :func:`dino_runtime.pca.fit_basis`.

        Needs a model with the ``patch`` output; :class:`UserError` otherwise or when the
        source yields no frame.
        """
        if "patch" not in self.metadata.outputs:
            raise UserError("fitting a PCA basis needs patch tokens; re-export the model with "
                            "--outputs cls,attn,patch")
        if not hasattr(source, "frames"):
            source = open_source(SourceSpec(path=str(source)))
        images = []
        try:
            for frame in source.frames():
                images.append(frame.image)
                if len(images) >= max_images:
                    break
        finally:
            source.close()
        if not images:
            raise UserError(f"{source.info.description}: no image to fit the PCA basis on")
        patch = np.concatenate([self(images[part]).patch
                                for part in chunks(len(images), self.batch_size)])
        try:
            return fit_basis(patch, self.metadata.grid, foreground, threshold)
        except ValueError as e:
            raise UserError(f"PCA basis: {e}") from None
