"""The HighGUI window under a virtual X server: the overlay is on screen, and q quits cleanly.

Needs the Debian packages ``xvfb`` (the X server) and ``xdotool`` (window lookup, key presses);
the screenshot is read straight from Xvfb's framebuffer file (``-fbdir``, XWD format), so no
screenshot tool is needed.
"""
from __future__ import annotations

import os
import select
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from dino_runtime import RenderOptions, Runtime
from dino_runtime.postprocess import normalize_maps
from dino_runtime.render import render

from .conftest import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("Xvfb") is None or shutil.which("xdotool") is None,
    reason="display test needs Xvfb and xdotool: apt-get install -y xvfb xdotool")

GRAY = (128, 128, 128)


def read_xwd(path: Path) -> np.ndarray:
    """Xvfb's framebuffer file (XWD, 24-bit TrueColor, 32 bits per pixel) -> (H, W, 3) BGR."""
    data = path.read_bytes()
    fields = struct.unpack(">25I", data[:100])
    header_size, width, height = fields[0], fields[4], fields[5]
    bits_per_pixel, bytes_per_line, ncolors = fields[11], fields[12], fields[19]
    assert bits_per_pixel == 32, "expected a 24-bit screen stored as 32 bits per pixel"
    offset = header_size + 12 * ncolors
    pixels = np.frombuffer(data, np.uint8, count=bytes_per_line * height, offset=offset)
    return pixels.reshape(height, bytes_per_line // 4, 4)[:, :width, :3]  # BGRX, little-endian


@pytest.fixture
def xvfb(tmp_path):
    """A virtual screen; yields (DISPLAY, framebuffer file).

    Xvfb picks a free display number itself and writes it to ``-displayfd`` once it accepts
    connections, so neither a stale socket of an earlier server nor a number taken by a parallel
    run can hand the test a display that is not (yet) there. ``-noreset``: by default the server
    resets when its last client leaves (here: the first ``xdotool search``), and a reset writes
    the number again; the pipe stays open until the end all the same.
    """
    fbdir = tmp_path / "fb"
    fbdir.mkdir()
    log = tmp_path / "xvfb.log"
    read_end, write_end = os.pipe()
    with open(log, "wb") as stderr:
        server = subprocess.Popen(["Xvfb", "-displayfd", str(write_end), "-noreset", "-screen", "0",
                                   "640x480x24", "-fbdir", str(fbdir), "-nolisten", "tcp"],
                                  pass_fds=(write_end,), stderr=stderr)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        number = os.read(read_end, 16).decode().strip() if ready else ""
        if not number.isdigit():
            server.kill()
            server.wait(10)
            pytest.fail(f"Xvfb did not start (exit code {server.returncode}): {log.read_text()}")
        yield f":{number}", fbdir / "Xvfb_screen0"
        assert server.poll() is None, f"Xvfb died during the test: {log.read_text()}"
    finally:
        server.terminate()
        server.wait(10)
        os.close(read_end)


def xdotool(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True,
                          timeout=20).stdout.strip()


def gray_video(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 96))
    for _ in range(frames):
        writer.write(np.full((96, 160, 3), GRAY, np.uint8))
    writer.release()
    return path


def window_view(display: str, framebuffer, window_id: str):
    """((width, height), pixels) of a window on the virtual screen; None once it is gone."""
    geometry = xdotool(display, "getwindowgeometry", "--shell", window_id)
    geo = dict(line.split("=", 1) for line in geometry.splitlines() if "=" in line)
    if not all(k in geo for k in ("X", "Y", "WIDTH", "HEIGHT")):
        return None
    x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    return (w, h), read_xwd(framebuffer)[y:y + h, x:x + w].astype(int)


def test_window_shows_the_overlay_and_q_quits(tiny_onnx, xvfb, tmp_path):
    display, framebuffer = xvfb
    # dino-run reads a file as fast as it can (287 frames/s measured here with the CPU loaded, and
    # it then read 3,000 frames before the test looked): at that rate 30,000 frames outlast the
    # waits below, so the video cannot end before the window is checked.
    video = gray_video(tmp_path / "gray.avi", 30000)
    proc = subprocess.Popen([sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx),
                             "--source", str(video), "--show-attention", "--batch", "1"],
                            cwd=ROOT, env={**os.environ, "DISPLAY": display},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = ""
        deadline = time.time() + 60
        while not window and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            window = xdotool(display, "search", "--name", "^dino-run$")
        assert window, f"no dino-run window appeared: {proc.stderr.read() if proc.poll() else ''}"
        # What the window should hold: the gray frame with the model's heat map blended in.
        raw = np.full((96, 160, 3), GRAY, np.uint8)
        result = Runtime(tiny_onnx)([cv2.imdecode(cv2.imencode(".jpg", raw)[1], 1)])
        expected = render(raw, normalize_maps(result.attn.mean(1, keepdims=True))[0], None,
                          None, RenderOptions(attention=True)).astype(int)
        # A window of that name can be found before the one that shows the frames exists (it
        # may be replaced, placed, and drawn later on a loaded machine): look at every window of
        # the name until one holds the overlay, or 30 s pass, then check the last one seen.
        deadline = time.time() + 30
        while True:
            views = [(wid, window_view(display, framebuffer, wid)) for wid in
                     xdotool(display, "search", "--name", "^dino-run$").split()]
            views = [(wid, v) for wid, v in views if v is not None]
            matching = [(wid, v) for wid, v in views if v[1].shape == expected.shape
                        and np.abs(v[1] - expected).mean() < 4]
            if matching or proc.poll() is not None or time.time() > deadline:
                break
            time.sleep(0.2)
        exited = (f"; dino-run exited {proc.returncode}: {proc.stdout.read()} {proc.stderr.read()}"
                  if proc.poll() is not None else "")
        assert views, "the dino-run window disappeared" + exited
        shown_id, ((w, h), shown) = (matching or views)[-1]
        assert (w, h) == (160, 96)
        assert np.abs(shown - raw.astype(int)).mean() > 15, "the window shows the bare frame"
        assert np.abs(shown - expected).mean() < 4, "the window does not show the overlay"
        saturation = shown.max(axis=2) - shown.min(axis=2)
        assert (saturation > 30).mean() > 0.3  # inferno colours over a colourless frame

        xdotool(display, "windowfocus", "--sync", shown_id, "key", "q")
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "stopped: q pressed" in stdout
