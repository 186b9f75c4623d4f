"""The threaded pipeline and the Python API: same numbers as a direct call, every file frame in
order, stale live frames dropped and counted, bounded queues, errors surfaced, stop honoured."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dino_runtime import RenderOptions, Runtime
from dino_runtime.pipeline import Pipeline, PipelineConfig
from dino_runtime.preprocess import aspect_warning, fit_size
from dino_runtime.sources import ReconnectPolicy, SourceSpec, open_source

from .conftest import CameraFactory


class SlowBackend:
    """The real backend with a fixed delay per call, and a record of batch sizes."""

    def __init__(self, inner, delay: float, fail_on_call: int | None = None):
        self.inner, self.delay, self.fail_on_call = inner, delay, fail_on_call
        self.name, self.metadata, self.device = inner.name, inner.metadata, inner.device
        self.precision, self.runs_on_host = inner.precision, inner.runs_on_host
        self.batches: list[int] = []

    def run(self, images):
        if self.fail_on_call is not None and len(self.batches) == self.fail_on_call:
            raise RuntimeError("device lost")
        self.batches.append(len(images))
        time.sleep(self.delay)
        return self.inner.run(images)


@pytest.fixture(scope="module")
def runtime(tiny_onnx):
    return Runtime(tiny_onnx, batch_size=4)


def test_stream_gives_the_direct_call_results_in_order(runtime, video_60):
    results = list(runtime.stream(video_60))
    assert [r.index for r in results] == list(range(60))
    images = [r.frame.image for r in results]
    direct = runtime(images)
    np.testing.assert_allclose(np.stack([r.cls for r in results]), direct.cls, atol=1e-5)
    np.testing.assert_allclose(np.stack([r.attn for r in results]), direct.attn, atol=1e-6)
    np.testing.assert_array_equal(np.stack([r.masks for r in results]), direct.masks)
    summary = runtime.last_summary
    assert summary.frames == 60 and summary.batches == 15 and summary.stop_reason == "end of source"
    assert summary.dropped == {"corrupt": 0, "stale": 0} and len(summary.latencies) == 60


def test_files_keep_every_frame_behind_a_slow_model(runtime, video_60):
    slow = SlowBackend(runtime.backend, 0.01)
    pipe = Pipeline(open_source(SourceSpec(path=str(video_60))), slow, PipelineConfig(batch=4))
    indices = [r.index for r in pipe.run()]
    assert indices == list(range(60)) and pipe.summary.dropped["stale"] == 0
    assert slow.batches == [4] * 15  # files wait for full batches


def test_live_source_drops_stale_frames_and_counts_them(runtime):
    # 200 frames at about 1 ms each from the "camera", a model that takes 20 ms per batch
    camera = CameraFactory([200, None], delay=0.001)
    source = open_source(SourceSpec(camera=0, capture_factory=camera,
                                    policy=ReconnectPolicy(attempts=1, first_delay=0.01)))
    slow = SlowBackend(runtime.backend, 0.02)
    pipe = Pipeline(source, slow, PipelineConfig(batch=4))
    results = list(pipe.run())
    summary = pipe.summary
    assert summary.dropped["stale"] > 50
    assert len(results) + summary.dropped["stale"] == 200  # every frame processed or counted
    indices = [r.index for r in results]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    assert "disconnected" in summary.stop_reason and summary.reconnects == 1
    assert max(slow.batches) <= 4


def test_max_frames_and_stop(runtime, video_60):
    assert len(list(runtime.stream(video_60, max_frames=7))) == 7
    assert runtime.last_summary.stop_reason == "max-frames reached"
    pipe = runtime.pipeline(open_source(SourceSpec(path=str(video_60))))
    seen = 0
    for _ in pipe.run():
        seen += 1
        if seen == 3:
            pipe.stop("q pressed")
    assert seen <= 3 + 16 and pipe.summary.stop_reason == "q pressed"  # at most what was queued


def test_a_failing_stage_surfaces_its_error_and_stops_the_threads(runtime, video_60):
    before = threading.active_count()
    failing = SlowBackend(runtime.backend, 0.0, fail_on_call=2)
    pipe = Pipeline(open_source(SourceSpec(path=str(video_60))), failing, PipelineConfig(batch=4))
    with pytest.raises(RuntimeError, match="device lost"):
        list(pipe.run())
    assert "error in dino-run-infer" in pipe.summary.stop_reason
    time.sleep(0.2)
    assert threading.active_count() <= before


def test_queues_stay_bounded(runtime, tmp_path):
    # a source much faster than the consumer: what is in flight never exceeds the queue bounds
    from .conftest import write_video
    video = write_video(tmp_path / "long.mp4", 300)
    pipe = runtime.pipeline(open_source(SourceSpec(path=str(video))))
    peak = 0
    for _ in pipe.run():
        time.sleep(0.001)
        peak = max(peak, sum(q.qsize() for q in (pipe._decoded, pipe._ready, pipe._inferred,
                                                  pipe._results)))
    assert pipe.summary.frames == 300
    bound = pipe._decoded.maxsize + pipe._ready.maxsize + pipe._inferred.maxsize + pipe._results.maxsize
    assert peak <= bound <= 40


def test_rendered_results_and_patch_tokens(runtime, video_60):
    results = list(runtime.stream(video_60, max_frames=4,
                                  render=RenderOptions(attention=True, mask=True, pca=True)))
    r = results[0]
    assert r.rendered.shape == r.frame.image.shape and not np.array_equal(r.rendered, r.frame.image)
    assert r.patch.shape == (24, 192) and r.maps.shape == (1, 4, 6) and r.masks.dtype == bool


def test_chunks_and_input_checks(runtime):
    many = runtime([np.zeros((50, 70, 3), np.uint8)] * 9)  # more than one chunk of 4
    assert many.cls.shape == (9, 192)
    with pytest.raises(ValueError, match="uint8 BGR"):
        runtime(np.zeros((1, 10, 10), np.float32))


def test_size_helpers():
    assert fit_size((720, 1280), 224, 16) == (224, 400)
    assert fit_size((480, 640), 480, 8) == (480, 640)
    assert aspect_warning((720, 1280), (224, 400), 16) is None
    hint = aspect_warning((720, 1280), (224, 224), 16)
    assert "stretched" in hint and "--img-size 224 400" in hint


def test_preprocess_matches_the_reference_formula():
    import cv2

    from dino_runtime.preprocess import InputSpec, Preprocessor
    pre = Preprocessor(InputSpec((224, 400)))
    frame = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (720, 1280, 3), np.uint8),
                             (9, 9), 3)
    x = pre(frame)
    area = cv2.resize(frame, (400, 224), interpolation=cv2.INTER_AREA)
    assert np.abs(pre.resize(frame).astype(int) - area).mean() < 1.0  # the fast two-step shrink
    rgb = pre.resize(frame)[..., ::-1] / 255.0
    ref = ((rgb - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)).transpose(2, 0, 1)
    assert x.shape == (3, 224, 400) and x.dtype == np.float32
    np.testing.assert_allclose(x, ref, atol=1e-5)
