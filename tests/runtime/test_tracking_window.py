"""The live window under a virtual X server: a box dragged with the mouse starts tracking, ``c``
clears it, ``q`` quits; seen through ``--track-json``, which is written while the run goes on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import cv2

from .conftest import ROOT, synthetic_frame
from .test_display import pytestmark, xdotool, xvfb  # noqa: F401  (the Xvfb fixture and skip)


def records(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def wait_for(condition, seconds: float, proc) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def test_a_mouse_box_starts_tracking_and_c_clears_it(tiny_onnx, xvfb, tmp_path):  # noqa: F811
    display, _ = xvfb
    video = tmp_path / "disc.avi"     # long enough to outlast the test at any reading speed
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (160, 96))
    frame = synthetic_frame(0)
    for _ in range(20000):
        writer.write(frame)
    writer.release()
    lines = tmp_path / "objects.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx),
                             "--source", str(video), "--track-json", str(lines), "--batch", "1"],
                            cwd=ROOT, env={**os.environ, "DISPLAY": display},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        window = ""

        def found() -> bool:
            nonlocal window
            window = xdotool(display, "search", "--name", "^dino-run$").split("\n")[-1]
            return bool(window) and bool(records(lines))
        assert wait_for(found, 60, proc), "no dino-run window or no JSON line appeared"
        assert not any(r["tracking"] for r in records(lines))    # nothing until a box
        xdotool(display, "mousemove", "--window", window, "5", "30", "mousedown", "1",
                "mousemove", "--window", window, "40", "60", "sleep", "0.2",
                "mousemove", "--window", window, "45", "66", "mouseup", "1")
        assert wait_for(lambda: any(r["started"] for r in records(lines)), 30, proc), \
            "the mouse box did not start tracking"
        started = next(i for i, r in enumerate(records(lines)) if r["started"])
        assert records(lines)[started]["objects"][0]["id"] == 1
        xdotool(display, "windowfocus", "--sync", window, "key", "c")
        assert wait_for(lambda: not records(lines)[-1]["tracking"], 30, proc), "c did not clear"
        xdotool(display, "windowfocus", "--sync", window, "key", "q")
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "stopped: q pressed" in stdout
