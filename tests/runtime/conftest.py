"""Runtime fixtures: a tiny exported model (ViT-Tiny/16, depth 2, 64x96), synthetic videos and
images, a stand-in camera, an HTTP server for stream URLs, and a CLI runner."""
from __future__ import annotations

import http.server
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dino_export import ExportConfig, export_onnx
from tests.conftest import tiny_vit

ROOT = Path(__file__).resolve().parents[2]
MODEL_HW = (64, 96)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Official-format backbone file (plain state dict) of a ViT-Tiny/16 with 2 blocks."""
    path = tmp_path_factory.mktemp("rt_ckpt") / "tiny16.pth"
    torch.save(tiny_vit(seed=3).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """dino-export ONNX of ``tiny_checkpoint`` at 64x96, dynamic batch 1..16, cls/attn/patch."""
    out = tmp_path_factory.mktemp("rt_onnx") / "tiny16.onnx"
    return export_onnx(tiny_checkpoint, out, ExportConfig(
        img_size=MODEL_HW, dynamic_batch=(1, 4, 16), outputs=("cls", "attn", "patch")))


@pytest.fixture(scope="session")
def tiny_onnx_b3(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same model with a fixed batch of 3 (cls and attn): calls are padded to 3 frames."""
    out = tmp_path_factory.mktemp("rt_onnx") / "b3.onnx"
    return export_onnx(tiny_checkpoint, out, ExportConfig(img_size=MODEL_HW, batch=3))


@pytest.fixture(scope="session")
def tiny_onnx_bgr(tiny_checkpoint, tmp_path_factory) -> Path:
    """The same model with uint8 BGR preprocessing in the graph and no patch output."""
    out = tmp_path_factory.mktemp("rt_onnx") / "tiny16_bgr.onnx"
    return export_onnx(tiny_checkpoint, out, ExportConfig(
        img_size=MODEL_HW, dynamic_batch=(1, 4, 16), outputs=("cls", "attn"), preprocess=True))


def synthetic_frame(i: int, size: tuple[int, int] = (96, 160)) -> np.ndarray:
    """(H, W, 3) uint8 BGR: a flat background and a moving disc, different for every ``i``."""
    h, w = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (40 + i % 50, 60, 80)
    cv2.circle(img, (10 + (5 * i) % (w - 20), h // 2), h // 5, (0, 200, 255), -1)
    return img


def write_video(path: Path, frames: int, size: tuple[int, int] = (96, 160), fps: float = 25.0,
                codec: str = "mp4v") -> Path:
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    for i in range(frames):
        writer.write(synthetic_frame(i, size))
    writer.release()
    return path


@pytest.fixture(scope="session")
def video_60(tmp_path_factory) -> Path:
    """60 frames, 160x96, 25 fps, mp4v."""
    return write_video(tmp_path_factory.mktemp("rt_video") / "clip.mp4", 60)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """5 JPEGs and one corrupt file that only claims to be a JPEG."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"f{i:02d}.jpg"), synthetic_frame(i))
    (folder / "f02b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


class FakeCapture:
    """A stand-in for ``cv2.VideoCapture(index)``: ``frames`` frames, then reads fail.

    ``opens`` counts how often a device was opened; ``open_ok`` decides per open.
    """

    def __init__(self, frames: int, fps: float = 30.0, size=(48, 64), delay: float = 0.0,
                 opened: bool = True):
        self.left, self.fps, self.size, self.delay, self.opened = frames, fps, size, delay, opened
        self.count = 0

    def isOpened(self) -> bool:
        return self.opened

    def read(self):
        if self.left <= 0 or not self.opened:
            return False, None
        if self.delay:
            time.sleep(self.delay)
        self.left -= 1
        self.count += 1
        return True, synthetic_frame(self.count, self.size)

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_WIDTH: self.size[1],
                cv2.CAP_PROP_FRAME_HEIGHT: self.size[0], cv2.CAP_PROP_FRAME_COUNT: -1}.get(prop, 0.0)

    def release(self) -> None:
        self.opened = False


class CameraFactory:
    """Opens a :class:`FakeCapture` per call; ``plan`` gives the frames of each open (None = fail)."""

    def __init__(self, plan: list[int | None], **kwargs):
        self.plan, self.kwargs, self.calls = list(plan), kwargs, []

    def __call__(self, target):
        self.calls.append(target)
        frames = self.plan.pop(0) if self.plan else None
        return FakeCapture(frames or 0, opened=frames is not None, **self.kwargs)


class _StreamHandler(http.server.BaseHTTPRequestHandler):
    """``/clip.mp4`` serves a file; ``/live.mjpg`` an MJPEG stream of 30 frames (a typical
    IP-camera URL), then the connection ends as if the camera went away; it answers
    ``live_connections`` times, then 404 (the camera is gone for good)."""

    video: bytes = b""
    live_connections = 1  # how many more times /live.mjpg answers; then 404 (camera gone)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.endswith(".mp4"):
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(len(self.video)))
            self.end_headers()
            self.wfile.write(self.video)
            return
        if type(self).live_connections <= 0:
            self.send_error(404)
            return
        type(self).live_connections -= 1
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        for i in range(30):
            jpg = cv2.imencode(".jpg", synthetic_frame(i, (48, 64)))[1].tobytes()
            try:
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                 % len(jpg) + jpg + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                return
            time.sleep(0.005)


@pytest.fixture
def http_server(video_60):
    _StreamHandler.video = video_60.read_bytes()
    _StreamHandler.live_connections = 2
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _StreamHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run_cli(*args: str) -> tuple[int, str, str]:
    """``dino-run ARGS`` in a subprocess: (exit code, stdout, stderr)."""
    out = subprocess.run([sys.executable, "-m", "dino_runtime.cli", *map(str, args)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout, out.stderr


def assert_one_line_error(code: int, err: str, *needles: str, status: int = 1) -> None:
    """One ``dino-run:`` line and ``status`` (1 a user error, 2 a usage error)."""
    assert code == status, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("dino-run: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], err
