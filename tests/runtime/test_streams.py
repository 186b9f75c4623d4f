"""Several sources in one run: frames of every stream batched into one model call, each stream
in its own order with its own counters, outputs and end; the batch-closing rule; overload on live
streams; names, the sources file and per-stream output paths; the CLI end to end."""
from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from dino_core.cli import run as run_command
from dino_core.errors import OptionError, SourceError
from dino_runtime import Runtime
from dino_runtime import cli as run_cli_module
from dino_runtime.outputs import OutputRequest
from dino_runtime.pipeline import Pipeline, PipelineConfig
from dino_runtime.sources import ReconnectPolicy, SourceSpec, open_source
from dino_runtime.streams import (
    Stream,
    default_name,
    read_sources_file,
    split_name,
    stream_specs,
)

from .conftest import CameraFactory, assert_one_line_error, run_cli, write_video
from .test_pipeline import SlowBackend

ONCE = ReconnectPolicy(attempts=1, first_delay=0.01)


@pytest.fixture(scope="module")
def runtime(tiny_onnx):
    return Runtime(tiny_onnx, batch_size=4)


@pytest.fixture(scope="module")
def video_40(tmp_path_factory):
    """40 frames at another resolution (120x200) than video_60."""
    return write_video(tmp_path_factory.mktemp("streams") / "other.mp4", 40, size=(120, 200))


def camera(frames: int, delay: float, then=None) -> Stream:
    """A live stand-in camera of ``frames`` frames, ``delay`` s apart, that then dies."""
    factory = CameraFactory([frames, then], delay=delay)
    return open_source(SourceSpec(camera=0, capture_factory=factory, policy=ONCE))


class RecordingPipeline(Pipeline):
    """Records which streams each batch held."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_streams: list[list[str]] = []

    def _post_batch(self, frames, outputs):
        self.batch_streams.append([stream.name for stream, _ in frames])
        return super()._post_batch(frames, outputs)


def test_streams_are_batched_together_each_in_order_with_the_single_stream_numbers(
        runtime, video_60, video_40, image_folder):
    streams = [Stream("a", open_source(SourceSpec(path=str(video_60)))),
               Stream("b", open_source(SourceSpec(path=str(video_40)))),
               Stream("c", open_source(SourceSpec(path=str(image_folder))))]
    ended = []
    pipe = RecordingPipeline(streams, runtime.backend, PipelineConfig(batch=4, threshold=0.6),
                             on_stream_end=lambda s: ended.append((s.name, s.summary.frames)))
    results = list(pipe.run())
    by_stream = {name: [r for r in results if r.stream == name] for name in "abc"}
    assert [r.index for r in by_stream["a"]] == list(range(60))
    assert [r.index for r in by_stream["b"]] == list(range(40))
    assert [r.index for r in by_stream["c"]] == [0, 1, 2, 4, 5]  # f02b.jpg is corrupt
    assert by_stream["b"][0].frame.image.shape == (120, 200, 3)  # each at its own resolution
    for name, items in by_stream.items():  # the same numbers as the stream alone
        direct = runtime([r.frame.image for r in items])
        np.testing.assert_allclose(np.stack([r.cls for r in items]), direct.cls, atol=1e-5)
        np.testing.assert_array_equal(np.stack([r.masks for r in items]), direct.masks)
    assert any(len(set(batch)) > 1 for batch in pipe.batch_streams)  # one call, many streams
    assert all(len(batch) == 4 for batch in pipe.batch_streams[:-1])  # files: full batches
    assert sorted(ended) == [("a", 60), ("b", 40), ("c", 5)]
    summaries = {s.name: s.summary for s in pipe.streams}
    assert summaries["c"].dropped == {"corrupt": 1, "stale": 0}
    assert summaries["a"].stop_reason == "end of source" and len(summaries["b"].latencies) == 40
    assert pipe.summary.frames == 105 and pipe.summary.dropped["corrupt"] == 1
    assert pipe.summary.stop_reason == "every stream ended"
    assert pipe.summary.batches == len(pipe.batch_streams)


def test_a_stream_that_dies_ends_alone_and_the_others_go_on(runtime, video_60):
    dying = camera(20, 0.002)                  # 20 frames, then gone for good
    steady = camera(400, 0.004)                # still delivering long after
    streams = [Stream("file", open_source(SourceSpec(path=str(video_60)))),
               Stream("dying", dying), Stream("steady", steady)]
    ends = []
    pipe = Pipeline(streams, runtime.backend, PipelineConfig(batch=4),
                    on_stream_end=lambda s: ends.append((s.name, time.perf_counter())))
    frames_after = {"steady": 0}
    for result in pipe.run():
        if result.stream == "steady" and len(ends) >= 2:
            frames_after["steady"] += 1
    names = [name for name, _ in ends]
    assert names[-1] == "steady" and set(names) == {"file", "dying", "steady"}
    assert frames_after["steady"] > 10  # it went on after the other two had ended
    summaries = {s.name: s.summary for s in pipe.streams}
    assert summaries["file"].frames == 60 and summaries["file"].stop_reason == "end of source"
    assert summaries["dying"].stop_reason == ("source disconnected; gave up after 1 reconnect "
                                              "attempts")
    assert summaries["dying"].reconnects == 1 and 0 < summaries["dying"].frames <= 20
    processed_or_dropped = summaries["steady"].frames + summaries["steady"].dropped["stale"]
    assert processed_or_dropped == 400


def test_overload_drops_each_live_stream_s_oldest_frames_and_counts_them_per_stream(runtime):
    """Two cameras at about 1000 frames/s, a model at 4 frames per 20 ms: most frames are
    dropped, each counted against its own stream, and none is lost or reordered."""
    streams = [Stream("left", camera(200, 0.001)), Stream("right", camera(150, 0.001))]
    slow = SlowBackend(runtime.backend, 0.02)
    pipe = Pipeline(streams, slow, PipelineConfig(batch=4))
    results = list(pipe.run())
    for stream, total in zip(pipe.streams, (200, 150)):
        mine = [r.index for r in results if r.stream == stream.name]
        assert stream.summary.dropped["stale"] > total // 4
        assert len(mine) + stream.summary.dropped["stale"] == total
        assert mine == sorted(mine) and len(set(mine)) == len(mine)
    assert pipe.summary.dropped["stale"] == sum(s.summary.dropped["stale"] for s in pipe.streams)
    assert max(slow.batches) <= 4


def test_a_slow_stream_never_stalls_the_others(runtime):
    """A camera at 3 frames/s beside one at 100: batches close after the wait, so the fast
    camera's frames do not wait for the slow one's."""
    streams = [Stream("slow", camera(6, 0.3)), Stream("fast", camera(150, 0.01))]
    pipe = Pipeline(streams, runtime.backend, PipelineConfig(batch=8, batch_wait=0.02))
    assert pipe.wait == 0.02
    results = list(pipe.run())
    fast = pipe.streams[1].summary
    assert fast.frames + fast.dropped["stale"] == 150
    assert fast.latency_ms(50) < 150  # far below the slow camera's 300 ms between frames
    assert sum(r.stream == "slow" for r in results) >= 3


def test_the_default_batch_wait(runtime, video_60):
    files = [Stream("a", open_source(SourceSpec(path=str(video_60))))]
    assert Pipeline(files, runtime.backend, PipelineConfig()).wait is None
    assert Pipeline([camera(1, 0)], runtime.backend, PipelineConfig()).wait == 0.0
    several = Pipeline([camera(1, 0), Stream("a", open_source(SourceSpec(path=str(video_60))))],
                       runtime.backend, PipelineConfig())
    assert several.wait == pytest.approx(0.5 / 30)  # half a frame of the 30 fps camera


def test_max_frames_is_per_stream(runtime, video_60, video_40):
    results = list(runtime.streams([f"x={video_60}", str(video_40)], max_frames=7))
    assert sorted(r.stream for r in results) == ["other"] * 7 + ["x"] * 7
    assert [s.summary.stop_reason for s in runtime.last_streams] == ["max-frames reached"] * 2
    assert runtime.last_summary.frames == 14


def test_names_and_the_sources_file(tmp_path, video_60):
    assert split_name("front=rtsp://cam/1") == ("front", "rtsp://cam/1")
    assert split_name("rtsp://cam/s?a=b") == (None, "rtsp://cam/s?a=b")
    assert split_name(str(video_60)) == (None, str(video_60))
    odd = tmp_path / "a=b.mp4"
    odd.write_bytes(b"")
    assert split_name(str(odd)) == (None, str(odd))  # an existing path is a path
    assert default_name(SourceSpec(path="clips/01_dog.mp4")) == "01_dog"
    assert default_name(SourceSpec(path="rtsp://10.0.0.5:8554/front")) == "front"
    assert default_name(SourceSpec(path="rtsp://10.0.0.5")) == "10.0.0.5"
    assert default_name(SourceSpec(path="shots/**/*.jpg")) == "shots"
    assert default_name(SourceSpec(camera=2)) == "camera2"
    listing = tmp_path / "cams.txt"
    listing.write_text("# the shop\nfront=rtsp://h/a\n\n  2  \nback=3\nclips/a.mp4\nx/a.mp4\n")
    specs = stream_specs(read_sources_file(str(listing)))
    assert [s.name for s in specs] == ["front", "camera2", "back", "a", "a-2"]
    assert specs[1].source.camera == 2 and specs[2].source.camera == 3
    with pytest.raises(OptionError, match="'cam' is given to more than one source"):
        stream_specs([("source", "cam=a.mp4"), ("camera", "cam=1")])
    with pytest.raises(OptionError, match="--camera 1x: expected a camera index"):
        stream_specs([("camera", "1x")])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    for path, needle in ((tmp_path / "empty.txt", "lists no source"),
                         (tmp_path / "none.txt", "no such file")):
        with pytest.raises(SourceError, match=needle):
            read_sources_file(str(path))


def test_per_stream_output_paths(tmp_path):
    request = OutputRequest(f"{tmp_path}/{{stream}}.mp4", f"{tmp_path}/", str(tmp_path / "m"))
    one = request.for_stream("cam", several=True)
    assert one.save == f"{tmp_path}/cam.mp4" and one.embeddings == str(tmp_path / "cam.npy")
    assert one.masks_dir == str(tmp_path / "m" / "cam")
    alone = OutputRequest("out.mp4", "e.jsonl", "masks").for_stream("cam", several=False)
    assert (alone.save, alone.embeddings, alone.masks_dir) == ("out.mp4", "e.jsonl", "masks")
    with pytest.raises(OptionError, match="several streams cannot write one file"):
        OutputRequest(save="out.mp4").for_stream("cam", several=True)
    with pytest.raises(OptionError, match="unknown field {name}"):
        OutputRequest(save="out_{name}.mp4").check_fields()


def test_cli_runs_several_streams_with_per_stream_outputs(tiny_onnx, video_60, video_40,
                                                          image_folder, tmp_path):
    listing = tmp_path / "more.txt"
    listing.write_text(f"# one more\nstills={image_folder}\n")
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli(
        "--model", tiny_onnx, "--source", f"a={video_60}", "--source", video_40,
        "--sources", listing, "--show-attention", "--save", f"{out}/{{stream}}.avi",
        "--embeddings", f"{out}/", "--masks-dir", out / "masks", "--batch", "4",
        "--no-display")
    assert code == 0, err
    assert "3 streams: a = video" in err and "stills = folder" in err
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("stream a (video") and "frames 60 in" in lines[0]
    assert "stream other (video" in lines[1] and "200x120" in lines[1]
    assert "stream stills (folder" in lines[2] and "corrupt 1" in lines[2]
    assert lines[3].startswith("all 3 streams: frames 105 in") and "every stream ended" in lines[3]
    for name, count, size in (("a", 60, (96, 160)), ("other", 40, (120, 200)),
                              ("stills", 5, (96, 160))):
        records = np.load(out / f"{name}.npy")
        assert len(records) == count and list(records["frame"]) == sorted(records["frame"])
        cap = cv2.VideoCapture(str(out / f"{name}.avi"))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == count
        assert (cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == size
        assert len(list((out / "masks" / name).glob("*.png"))) == count
    raw = [cv2.VideoCapture(str(video_40)).read()[1]]
    direct = Runtime(tiny_onnx)(raw)
    np.testing.assert_allclose(np.load(out / "other.npy")["cls"][:1], direct.cls, atol=1e-5)
    assert not list(out.rglob(".*"))  # nothing temporary left


@pytest.mark.parametrize("args, needle, status", [
    (["--source", "{video}", "--source", "{video}", "--save", "{tmp}/out.mp4"],
     "several streams cannot write one file; put {stream} in the name", 2),
    (["--source", "{video}", "--save", "{tmp}/out_{name}.mp4"], "unknown field {name}", 2),
    (["--source", "c={video}", "--source", "c={video}"], "'c' is given to more than one", 2),
    (["--sources", "{tmp}/none.txt"], "--sources {tmp}/none.txt: no such file", 1),
    (["--source", "{video}", "--source", "/nonexistent.mp4"], "no such file or folder", 1),
    (["--source", "a={video}", "--source", "{tmp}/a.mp4", "--save", "{tmp}/{stream}.mp4"],
     "--save {tmp}/a.mp4 is also the --source", 1),
    (["--source", "{video}", "--serve-token", "x"], "--serve-token is an option of the live", 2),
    (["--source", "{video}", "--serve", "99999"], "--serve 99999: expected PORT or HOST:PORT", 2),
])
def test_bad_stream_options_are_one_line(tiny_onnx, video_60, tmp_path, capsys, args, needle,
                                        status):
    """In process (each fails before the model loads): the CLI runner's exit status and
    stderr, as a subprocess would see them."""
    (tmp_path / "a.mp4").write_bytes(video_60.read_bytes())  # another stream's input
    args = [a.replace("{video}", str(video_60)).replace("{tmp}", str(tmp_path)) for a in args]
    code = run_command(run_cli_module.command, "dino-run",
                       ["--model", str(tiny_onnx), *args, "--no-display"])
    assert_one_line_error(code, capsys.readouterr().err, needle.replace("{tmp}", str(tmp_path)),
                          status=status)


def test_a_stream_with_no_frame_fails_the_run_after_the_others_are_written(
        tiny_onnx, video_60, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", video_60, "--source", broken,
                                "--embeddings", f"{tmp_path}/{{stream}}.npy", "--no-display")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"dino-run: no frame could be decoded from 1 of 2 streams: broken (folder {broken}: "
        "1 corrupt, end of source); the other streams' outputs were written")
    assert len(np.load(tmp_path / "clip.npy")) == 60 and not (tmp_path / "broken.npy").exists()
    assert "all 2 streams: frames 60" in stdout


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "torch", "tensorrt"])
def test_every_backend_runs_several_streams(backend, tiny_onnx, tiny_checkpoint, tiny_onnx_b3,
                                            video_60, video_40, tmp_path, monkeypatch):
    """The same per-stream numbers as a direct call, on each backend; TensorRT through the
    fake bindings (tests/fake_tensorrt.py) with a fixed batch of 3, so mixed batches are
    padded."""
    if backend == "torch":
        rt = Runtime(tiny_checkpoint, backend="torch", batch_size=4, precision="fp32",
                     input_size=(64, 96))
    elif backend == "tensorrt":
        from tests.fake_tensorrt import install

        from .test_trt_backend import engine_for
        install(monkeypatch, "11.x")
        rt = Runtime(engine_for(tiny_onnx_b3, tmp_path), backend="tensorrt", device="cuda",
                     batch_size=3)
    else:
        rt = Runtime(tiny_onnx, backend=backend, batch_size=4, precision="auto")
    results = list(rt.streams([video_60, video_40], max_frames=9))
    for name in ("clip", "other"):
        mine = [r for r in results if r.stream == name]
        assert [r.index for r in mine] == list(range(9))
        direct = rt([r.frame.image for r in mine])
        np.testing.assert_allclose(np.stack([r.cls for r in mine]), direct.cls, atol=1e-4)
