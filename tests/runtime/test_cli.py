"""``dino-run`` end to end in subprocesses: every output kind, one-line errors, and Ctrl-C
leaving a finalised, readable video and embeddings file."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from dino_runtime import Runtime

from .conftest import ROOT, assert_one_line_error, run_cli, write_video


def read_video(path) -> tuple[int, float, tuple[int, int], list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    return len(frames), fps, (frames[0].shape[1], frames[0].shape[0]), frames


def test_every_output_kind(tiny_onnx, video_60, tmp_path):
    out, emb, masks = tmp_path / "out.mp4", tmp_path / "cls.npy", tmp_path / "masks"
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", video_60, "--show-attention",
                                "--mask", "--pca", "--save", out, "--embeddings", emb,
                                "--masks-dir", masks, "--batch", "4", "--no-display")
    assert code == 0, err
    assert "frames 60 in" in stdout and "p50" in stdout and "p99" in stdout
    assert "dropped 0 (corrupt 0, stale 0)" in stdout and "stopped: end of source" in stdout
    n, fps, size, frames = read_video(out)
    assert (n, fps, size) == (60, 25.0, (160, 96))  # source resolution and frame rate
    raw = read_video(video_60)[3]
    assert np.abs(frames[10].astype(int) - raw[10]).mean() > 10  # the overlay is in the video
    records = np.load(emb)
    assert records["cls"].shape == (60, 192) and list(records["frame"]) == list(range(60))
    np.testing.assert_allclose(records["timestamp"], np.arange(60) / 25.0, atol=1e-6)
    direct = Runtime(tiny_onnx)(raw[:3])
    np.testing.assert_allclose(records["cls"][:3], direct.cls, atol=1e-5)
    pngs = sorted(masks.glob("*.png"))
    assert [p.name for p in pngs[:2]] == ["000000.png", "000001.png"] and len(pngs) == 60
    mask = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (96, 160) and set(np.unique(mask)) <= {0, 255} and mask.max() == 255
    assert not list(tmp_path.glob(".*partial*")) and not list(masks.glob(".*"))


def test_jsonl_embeddings_all_heads_and_image_folder(tiny_onnx, image_folder, tmp_path):
    emb, masks, out = tmp_path / "cls.jsonl", tmp_path / "m", tmp_path / "o.avi"
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", image_folder, "--heads", "all",
                                "--show-attention", "--masks-dir", masks, "--embeddings", emb,
                                "--save", out, "--no-display")
    assert code == 0, err
    assert "corrupt 1" in stdout
    lines = [json.loads(line) for line in emb.read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 4, 5] and len(lines[0]["cls"]) == 192
    assert len(list(masks.glob("000004_head*.png"))) == 3  # one per head with --heads all
    assert read_video(out)[0] == 5


def test_checkpoint_runs_through_torch(tiny_checkpoint, video_60, tmp_path):
    emb = tmp_path / "e.npy"
    code, stdout, err = run_cli("--model", tiny_checkpoint, "--source", video_60, "--precision",
                                "fp32", "--max-frames", "5", "--embeddings", emb, "--no-display")
    assert code == 0, err
    assert "torch" in err and "stopped: max-frames reached" in stdout
    assert np.load(emb).shape == (5,)


@pytest.mark.parametrize("args, needle, status", [
    (["--source", "/nonexistent.mp4"], "no such file or folder", 1),
    (["--camera", "9"], "cannot open camera 9", 1),
    (["--camera", "-1"], "--camera -1: expected a camera index 0..9999", 2),  # was a segfault
    (["--camera", "99999999999"], "expected a camera index 0..9999", 2),      # was a traceback
    (["--source", "{video}", "--save", "/nonexistent/out.mp4"], "does not exist", 1),
    (["--source", "{video}", "--save", "{tmp}/out.gif"], "unsupported video type", 1),
    (["--source", "{video}", "--embeddings", "{tmp}/e.csv"], ".npy or .jsonl", 1),
    (["--source", "{video}", "--heads", "5"], "the model has 3 heads", 2),
    (["--source", "{video}", "--threshold", "2"], "mass fraction", 2),
    (["--source", "{video}", "--input-size", "100000x100000"], "each side 1..8192", 2),
    (["--source", "{video}", "--device", "cuda"], "use --device cpu", 1),
    (["--source", "{video}", "--backend", "onnxruntime", "--precision", "bf16"], "exported in", 2),
    ([], "exactly one of --camera", 2),
])
def test_bad_input_is_one_line_and_exit_status(tiny_onnx, video_60, tmp_path, args, needle,
                                               status):
    args = [a.format(video=video_60, tmp=tmp_path) for a in args]
    code, _, err = run_cli("--model", tiny_onnx, *args, "--no-display")
    assert_one_line_error(code, err, needle, status=status)


def test_bad_models_and_pca_without_patch_tokens(tiny_onnx_bgr, video_60, tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert_one_line_error(*run_cli("--model", tmp_path / "junk.onnx", "--source", video_60,
                                   "--no-display")[::2], "not a readable ONNX model")
    assert_one_line_error(*run_cli("--model", tmp_path / "none.onnx", "--source", video_60,
                                   "--no-display")[::2], "no such model file")
    assert_one_line_error(*run_cli("--model", tiny_onnx_bgr, "--source", video_60, "--pca",
                                   "--no-display")[::2], "--pca needs patch tokens")


def test_window_needs_a_display(tiny_onnx, video_60, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert_one_line_error(*run_cli("--model", tiny_onnx, "--source", video_60)[::2],
                          "run with --no-display")



def test_window_needs_a_listening_x_server(tiny_onnx, video_60, monkeypatch):
    """DISPLAY names a display no server serves: one line, not Qt's abort with plugin errors."""
    from dino_runtime.display import _x_server_listening
    number = next(n for n in range(4000, 4100) if not _x_server_listening(n))
    monkeypatch.setenv("DISPLAY", f":{number}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60)
    assert_one_line_error(code, err, f"cannot connect to the X display :{number}")


def test_window_needs_an_x_display_name(tiny_onnx, video_60, monkeypatch):
    """A DISPLAY that is not [host]:N[.screen] (a typo) is named, not left to Qt's abort."""
    monkeypatch.setenv("DISPLAY", ":abc")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60)
    assert_one_line_error(code, err, "DISPLAY=':abc' is not an X display name")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stopping_signal_finalises_video_and_embeddings(tiny_onnx, tmp_path, signum):
    """Ctrl-C, docker stop/systemd (SIGTERM) and a closed SSH session (SIGHUP) alike."""
    video = write_video(tmp_path / "long.mp4", 3000)
    out, emb = tmp_path / "out.mp4", tmp_path / "cls.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx), "--source",
         str(video), "--show-attention", "--save", str(out), "--embeddings", str(emb),
         "--batch", "1", "--no-display"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    partial = tmp_path / ".out.partial.mp4"
    deadline = time.time() + 60
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    assert proc.poll() is None, "finished before the interrupt; make the video longer"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, stderr
    name = signal.Signals(signum).name
    assert f"stopped: interrupted ({name})" in stdout and "Traceback" not in stderr
    n_video = read_video(out)[0]
    records = np.load(emb)
    assert 0 < n_video < 3000 and len(records) == n_video
    assert list(records["frame"]) == list(range(n_video))
    assert not partial.exists()


def test_undecodable_video_is_one_line_without_ffmpeg_noise(tiny_onnx, tmp_path):
    # A file named .mp4 with no moov atom: FFmpeg would log its own line unless silenced.
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"garbage, not an mp4")
    proc = subprocess.run([sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx),
                           "--source", str(bad), "--no-display"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"dino-run: {bad}: not a video file that OpenCV/FFmpeg can decode"]


def test_a_window_not_yet_mapped_is_not_taken_for_a_closed_one(monkeypatch):
    """On a loaded machine the window is invisible for the first frames; only a window that was
    visible and no longer is counts as closed by the user."""
    import dino_runtime.display as display_module

    visibility = iter([0.0, 0.0, 1.0, 1.0, 0.0])
    cv2_calls = {"namedWindow": lambda *a: None, "imshow": lambda *a: None,
                 "waitKey": lambda *a: -1,
                 "getWindowProperty": lambda *a: next(visibility)}
    for name, fn in cv2_calls.items():
        monkeypatch.setattr(display_module.cv2, name, fn)
    window = display_module.Display()
    frame = np.zeros((4, 4, 3), np.uint8)
    assert [window.show(frame) for _ in range(5)] == [True, True, True, True, False]
