"""``dino-run --track``: outputs, every kind of source and backend, one-line errors for bad seeds.

The tiny exported ViT (64x96, 4x6 patches, random weights) checks the plumbing, not tracking
quality: that is the official-parity test's (test_tracking.py) and the DAVIS evaluation's.
"""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dino_core.cli import run as run_command
from dino_runtime import Runtime
from dino_runtime.cli import command
from dino_runtime.display import Display
from dino_runtime.sources import ReconnectPolicy, SourceSpec, open_source
from dino_runtime.tracking import Seed, TrackConfig, encode_palette_png, read_labels

from .conftest import CameraFactory, assert_one_line_error, run_cli, synthetic_frame, write_video


def disc_mask(path, size=(96, 160)) -> np.ndarray:
    """The disc of ``synthetic_frame(0)`` (the fixtures' videos) as a 0/255 mask file."""
    frame = synthetic_frame(0, size)
    mask = ((frame == (0, 200, 255)).all(axis=2) * 255).astype(np.uint8)
    cv2.imwrite(str(path), mask)
    return mask > 0


def dino_run(capsys, *args) -> tuple[int, str]:
    """``dino-run ARGS`` in this process (no interpreter start-up): (exit code, stderr)."""
    code = run_command(command, "dino-run", [str(a) for a in args])
    return code, capsys.readouterr().err


def test_track_writes_palette_pngs_the_overlay_and_live_json(tiny_onnx, video_60, tmp_path):
    mask = disc_mask(tmp_path / "first.png")
    out, masks, lines = tmp_path / "out.mp4", tmp_path / "masks", tmp_path / "objects.jsonl"
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", video_60, "--track",
                                tmp_path / "first.png", "--masks-dir", masks, "--track-json",
                                lines, "--save", out, "--no-display")
    assert code == 0, err
    pngs = sorted(masks.glob("*.png"))
    assert len(pngs) == 60 and pngs[0].name == "000000.png"
    first, is_palette = read_labels(pngs[0])
    assert is_palette and np.array_equal(first, mask)        # frame 0: the mask itself
    later = [read_labels(p)[0] for p in pngs[1:]]
    assert all(ids.shape == (96, 160) and set(np.unique(ids)) <= {0, 1} for ids in later)
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(60))
    assert records[0]["started"] and not records[1]["started"]
    assert all(r["tracking"] for r in records)
    for record, ids in zip(records[1:], later):
        objects = {o["id"]: o for o in record["objects"]}
        assert set(objects) == ({1} if ids.any() else set())
        if ids.any():
            ys, xs = np.nonzero(ids)
            assert objects[1]["area"] == len(xs)
            assert objects[1]["box"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                         ys.max() - ys.min() + 1]
            assert objects[1]["centroid"] == pytest.approx([xs.mean(), ys.mean()], abs=0.01)
    video = cv2.VideoCapture(str(out))
    ok, frame0 = video.read()
    assert ok and np.abs(frame0.astype(int) - synthetic_frame(0)).mean() > 2   # the overlay


def test_track_box_on_an_image_folder(tiny_onnx, image_folder, tmp_path):
    masks = tmp_path / "m"
    code, _, err = run_cli("--model", tiny_onnx, "--source", image_folder, "--track-box",
                           "20,30,60,40", "--masks-dir", masks, "--no-display")
    assert code == 0, err
    pngs = sorted(masks.glob("*.png"))
    assert len(pngs) == 5                          # the corrupt file is skipped
    assert read_labels(pngs[0])[0].any()


@pytest.mark.parametrize("make,args,needle,status", [
    ("small", [], "is 100x50 and the first frame 160x96", 1),
    ("empty", [], "holds no object", 1),
    ("many", [], "300 objects; at most 255", 1),
    ("junk", [], "not an image", 1),
    (None, ["--track-box", "10,10,0,5"], "an empty box", 2),
    (None, ["--track-box", "500,10,20,20"], "lies outside the 160x96 frame", 1),
    ("small", ["--track-box", "1,1,5,5"], "one of --track MASK.png and --track-box", 2),
    (None, ["--track-json", "{tmp}/t.jsonl"], "add --track MASK.png or --track-box", 2),
    (None, ["--track-box", "1,1,9,9", "--track-radius", "-1"], "--track-radius -1", 2),
])
def test_bad_seeds_are_one_line(tiny_onnx, video_60, tmp_path, capsys, make, args, needle,
                                status):
    mask = tmp_path / "mask.png"
    if make == "small":
        cv2.imwrite(str(mask), np.full((50, 100), 255, np.uint8))
    elif make == "empty":         # a DAVIS palette PNG whose every pixel is background
        mask.write_bytes(encode_palette_png(np.zeros((96, 160), np.uint8)))
    elif make == "many":          # a 16-bit instance map with 300 ids
        cv2.imwrite(str(mask), np.arange(96 * 160, dtype=np.uint16).reshape(96, 160) % 300 + 1)
    elif make == "junk":
        mask.write_bytes(b"not a png")
    track = ["--track", mask] if make else []
    code, err = dino_run(capsys, "--model", tiny_onnx, "--source", video_60, *track,
                         *[a.format(tmp=tmp_path) for a in args], "--no-display")
    assert_one_line_error(code, err, needle, status=status)


def test_track_needs_patch_tokens(tiny_onnx_bgr, video_60, capsys):
    code, err = dino_run(capsys, "--model", tiny_onnx_bgr, "--source", video_60, "--track-box",
                         "10,10,30,30", "--no-display")
    assert_one_line_error(code, err, "--track needs patch tokens", "--outputs cls,attn,patch")


def test_tracking_on_live_sources(tiny_onnx, http_server):
    """A camera (frames dropped when stale) and an MJPEG stream over HTTP."""
    runtime = Runtime(tiny_onnx, batch_size=4)
    camera = open_source(SourceSpec(camera=0, capture_factory=CameraFactory([40, None]),
                                    policy=ReconnectPolicy(attempts=1, first_delay=0.01)))
    track = TrackConfig(seed=Seed(box=(10, 10, 30, 20)))
    results = list(runtime.pipeline(camera, track=track).run())
    assert results and results[0].track.started and all(r.track for r in results)
    assert results[0].track.labels.shape == (48, 64)
    streamed = list(runtime.stream(f"{http_server}/live.mjpg", max_frames=12, track=track))
    assert len(streamed) == 12 and all(r.track is not None for r in streamed)


def test_every_cpu_backend_tracks_alike(tiny_onnx, tiny_checkpoint, video_60):
    """ONNX Runtime, OpenVINO (fp32) and PyTorch on the same frames give the same labels."""
    mask = np.zeros((96, 160), np.uint8)
    mask[30:70, 10:50] = 1
    labels = {}
    for name, model in (("onnxruntime", tiny_onnx), ("openvino", tiny_onnx),
                        ("torch", tiny_checkpoint)):
        runtime = Runtime(model, backend=name, batch_size=4, input_size=(64, 96),
                          precision="auto" if name == "onnxruntime" else "fp32")
        results = runtime.stream(video_60, max_frames=10,
                                 track=TrackConfig(seed=Seed(labels=mask)))
        labels[name] = np.stack([r.track.labels for r in results])
    for name in ("openvino", "torch"):
        agree = (labels[name] == labels["onnxruntime"]).mean()
        assert agree > 0.99, f"{name}: {agree:.4f} of the pixels agree with onnxruntime"


def test_the_mouse_draws_a_box_and_c_clears(monkeypatch):
    boxes, cleared = [], []
    display = Display(on_box=boxes.append, keys={ord("c"): lambda: cleared.append(True)})
    display._mouse(cv2.EVENT_LBUTTONDOWN, 50, 40, 0, None)
    display._mouse(cv2.EVENT_MOUSEMOVE, 20, 90, cv2.EVENT_FLAG_LBUTTON, None)
    assert display.drag == (50, 40, 20, 90)          # drawn while the button is held
    display._mouse(cv2.EVENT_LBUTTONUP, 20, 90, 0, None)
    display._mouse(cv2.EVENT_LBUTTONDOWN, 5, 5, 0, None)
    display._mouse(cv2.EVENT_LBUTTONUP, 6, 5, 0, None)   # a click is no box
    assert boxes == [(20, 40, 30, 50)] and display.drag is None
    monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(cv2, "setMouseCallback", lambda *a: None)
    monkeypatch.setattr(cv2, "imshow", lambda *a: None)
    monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1)
    monkeypatch.setattr(cv2, "waitKey", lambda delay: ord("c"))
    assert display.show(np.zeros((8, 8, 3), np.uint8)) and cleared == [True]


@pytest.fixture(scope="module")
def video_40(tmp_path_factory):
    """40 frames at another resolution (120x200) than video_60."""
    return write_video(tmp_path_factory.mktemp("track_streams") / "other.mp4", 40, size=(120, 200))


def test_several_streams_each_track_their_own_seed_as_alone(tiny_onnx, video_60, video_40,
                                                             tmp_path):
    """Two streams batched together, one seeded by a mask and one by a box: each stream's masks
    and JSON lines are what a run of that stream alone gives (its own tracker, its own state)."""
    disc_mask(tmp_path / "first.png")
    code, _, err = run_cli("--model", tiny_onnx, "--source", f"a={video_60}", "--source",
                           f"b={video_40}", "--track", f"a={tmp_path / 'first.png'}",
                           "--track-box", "b=20,30,60,40", "--masks-dir", tmp_path / "both",
                           "--track-json", tmp_path / "objects_{stream}.jsonl", "--no-display")
    assert code == 0, err
    alone = {"a": ("--track", tmp_path / "first.png", video_60),
             "b": ("--track-box", "20,30,60,40", video_40)}
    for name, (option, seed, video) in alone.items():
        code, _, err = run_cli("--model", tiny_onnx, "--source", video, option, seed,
                               "--masks-dir", tmp_path / f"alone_{name}", "--no-display")
        assert code == 0, err
        together = sorted((tmp_path / "both" / name).glob("*.png"))
        single = sorted((tmp_path / f"alone_{name}").glob("*.png"))
        assert [p.name for p in together] == [p.name for p in single] and len(single) > 30
        for p, q in zip(together, single):
            a, b = read_labels(p)[0], read_labels(q)[0]
            assert a.any() or b.any()
            # the frames share model calls with the other stream's: fp32 sums may differ in
            # the last bits, which can move a pixel on an object's border, nothing more
            assert (a != b).mean() <= 0.01, p.name
        records = (tmp_path / f"objects_{name}.jsonl").read_text().splitlines()
        assert len(records) == len(single) and json.loads(records[0])["started"]


@pytest.mark.parametrize("args,needle", [
    (["--track-box", "20,30,60,40"], "with several streams, name the stream it seeds"),
    (["--track-box", "c=20,30,60,40"], "no stream is named 'c' (streams: a, b)"),
    (["--track-box", "a=20,30,60,40", "--track-box", "a=1,1,9,9"], "stream a: one seed"),
])
def test_several_streams_bad_seeds_are_one_line(tiny_onnx, video_60, video_40, capsys, args,
                                                needle):
    code, err = dino_run(capsys, "--model", tiny_onnx, "--source", f"a={video_60}", "--source",
                         f"b={video_40}", *args, "--no-display")
    assert_one_line_error(code, err, needle, status=2)


def test_runtime_streams_tracks_each_source_with_its_config(tiny_onnx, video_60, video_40):
    runtime = Runtime(tiny_onnx, backend="onnxruntime", batch_size=4)
    seed = TrackConfig(seed=Seed(box=(20, 30, 60, 40)))
    results = list(runtime.streams([video_60, video_40], track=[seed, None], max_frames=6))
    first = [r for r in results if r.frame.stream == "clip"]
    second = [r for r in results if r.frame.stream == "other"]
    assert len(first) == len(second) == 6
    assert all(r.track is not None for r in first) and first[0].track.labels.any()
    assert all(r.track is None for r in second)
    with pytest.raises(ValueError, match="2 configs for 1 sources"):
        next(runtime.streams([video_60], track=[seed, None]))
