"""Two real RTSP cameras (GStreamer's RTSP server, Debian's gir1.2-gst-rtsp-server-1.0, serving
a real clip from ../shared/data/videos): one server is killed and restarted during the run and
the stream reconnects; killed again for good, that stream ends alone after its reconnects while
the other goes on; SIGTERM then ends the run with every stream's outputs committed."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import ROOT
from .live_client import Run
from .webdriver import free_port

SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's, with PyGObject (python3-gi)
SERVER = Path(__file__).with_name("rtsp_server.py")
CLIP = "bikes.mp4"                   # 640x272, 25 frames/s, 10 s of H.264


def gstreamer_missing() -> str | None:
    """Why the RTSP server cannot run here, or None."""
    if not Path(SYSTEM_PYTHON).exists():
        return f"no {SYSTEM_PYTHON}"
    check = subprocess.run([SYSTEM_PYTHON, str(SERVER), "--check"], capture_output=True,
                           text=True, timeout=60)
    if check.returncode != 0:
        return (check.stderr.strip().splitlines() or ["?"])[-1]
    return None


MISSING = gstreamer_missing()
pytestmark = pytest.mark.skipif(
    MISSING is not None,
    reason=f"the RTSP test needs GStreamer's RTSP server ({MISSING}): apt-get install -y "
           "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base "
           "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad")


class RtspServer:
    """``rtsp://127.0.0.1:PORT/clip`` in a process of its own, until :meth:`kill`."""

    def __init__(self, clip: Path, port: int) -> None:
        self.clip, self.port = clip, port
        self.url = f"rtsp://127.0.0.1:{port}/clip"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RtspServer":
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(SERVER), str(self.clip),
                                      str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", self.proc.stderr.read()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # as a camera losing power: no goodbye to the clients
            self.proc.wait()


def wait_for(run: Run, check, what: str, timeout: float = 30):
    deadline = time.time() + timeout
    while True:
        status = run.status()
        streams = {s["name"]: s for s in status["streams"]}
        if check(streams):
            return streams
        assert time.time() < deadline, f"{what}: {streams}"
        time.sleep(0.2)


def test_a_camera_that_restarts_reconnects_and_one_that_dies_ends_alone(
        tiny_onnx, shared_data, tmp_path):
    clip = shared_data / "videos" / CLIP
    servers = [RtspServer(clip, free_port()).start(), RtspServer(clip, free_port()).start()]
    out = tmp_path / "out"
    out.mkdir()
    run = Run("--model", tiny_onnx, "--source", f"door={servers[0].url}", "--source",
              f"yard={servers[1].url}", "--embeddings", f"{out}/", "--reconnects", "3",
              "--serve", "0", "--batch", "4")
    try:
        wait_for(run, lambda s: all(v["frames"] >= 10 for v in s.values()), "frames from both")
        servers[0].kill()
        time.sleep(1.0)
        servers[0].start()                          # the camera comes back
        at = run.status()["streams"][0]["frames"]
        streams = wait_for(run, lambda s: s["door"]["frames"] >= at + 15
                           and s["door"]["reconnects"] >= 1, "door reconnected")
        assert streams["door"]["state"] == "running"
        servers[0].kill()                           # gone for good: 3 attempts, 0.5 + 1 + 2 s
        streams = wait_for(run, lambda s: s["door"]["state"] == "ended", "door ended")
        yard_at = streams["yard"]["frames"]
        assert streams["yard"]["state"] == "running"
        wait_for(run, lambda s: s["yard"]["frames"] >= yard_at + 10, "yard went on alone")
        assert (out / "door.npy").exists() and not (out / "yard.npy").exists()  # committed at
        code, stdout, err = run.finish(signal.SIGTERM)                       # its own end
    finally:
        if run.proc.poll() is None:  # a failed check above: do not leave it running
            run.proc.kill()
            run.proc.wait()
        for server in servers:
            server.kill()
    assert code == 143, err
    lines = {line.split()[1]: line for line in stdout.splitlines() if line.startswith("stream ")}
    assert "stream rtsp://" in lines["door"] and ", live" in lines["door"]
    assert lines["door"].endswith("stopped: source disconnected; gave up after "
                                  f"{reconnects(lines['door'])} reconnect attempts")
    assert reconnects(lines["door"]) >= 4      # one that worked, then three that did not
    assert lines["yard"].endswith("stopped: interrupted (SIGTERM)")
    for name in ("door", "yard"):
        records = np.load(out / f"{name}.npy")
        frames = int(lines[name].split("frames ")[1].split()[0])
        assert len(records) == frames > 20
        assert np.all(np.diff(records["frame"]) > 0)  # in order; gaps are stale frames
    assert "Traceback" not in err


def reconnects(line: str) -> int:
    return int(line.split("reconnects ")[1].split(";")[0])
