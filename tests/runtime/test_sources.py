"""Every source kind: video file, image, folder, glob, HTTP file and MJPEG stream URLs, and the
camera path through a stand-in capture device (no /dev/video* or v4l2loopback in containers or
CI: the stand-in replaces only ``cv2.VideoCapture(index)``, everything above it is the real code).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from dino_core.errors import OptionError, SourceError
from dino_runtime.sources import ReconnectPolicy, SourceSpec, open_source
from tests.limits import time_limit

from .conftest import CameraFactory, synthetic_frame, write_video

FAST = ReconnectPolicy(attempts=3, first_delay=0.01, factor=2.0)


def test_video_file_frames_in_order_with_container_timestamps(video_60):
    src = open_source(SourceSpec(path=str(video_60)))
    assert not src.info.live and src.info.fps == 25.0 and src.info.size == (160, 96)
    frames = list(src.frames())
    assert [f.index for f in frames] == list(range(60))
    np.testing.assert_allclose([f.timestamp for f in frames], np.arange(60) / 25.0, atol=1e-6)
    # mp4v is lossy: the decoded frame is close to what was written, not equal
    assert np.abs(frames[7].image.astype(int) - synthetic_frame(7)).mean() < 4
    assert src.stats.corrupt == 0


def test_corrupt_video_frame_is_skipped_and_counted(tmp_path):
    path = write_video(tmp_path / "mj.avi", 20, codec="MJPG")  # one JPEG per frame
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    assert len(starts) == 20
    data[starts[5]:starts[6] - 16] = bytes(starts[6] - 16 - starts[5])  # wipe frame 5's JPEG
    path.write_bytes(bytes(data))
    src = open_source(SourceSpec(path=str(path)))
    frames = list(src.frames())
    assert src.stats.corrupt == 1
    assert [f.index for f in frames] == [i for i in range(20) if i != 5]


def test_single_image_folder_and_glob(image_folder):
    one = open_source(SourceSpec(path=str(image_folder / "f03.jpg")))
    assert [f.name for f in one.frames()] == ["f03.jpg"]

    folder = open_source(SourceSpec(path=str(image_folder)))
    frames = list(folder.frames())
    assert [f.name for f in frames] == [f"f{i:02d}.jpg" for i in range(5)]
    assert folder.stats.corrupt == 1  # f02b.jpg only claims to be a JPEG
    assert [f.index for f in frames] == [0, 1, 2, 4, 5]  # the gap shows where it was

    glob = open_source(SourceSpec(path=str(image_folder / "f0[34].jpg")))
    assert [f.name for f in glob.frames()] == ["f03.jpg", "f04.jpg"]


@pytest.mark.parametrize("path, message", [
    ("/nonexistent/clip.mp4", "no such file or folder"),
    ("/nonexistent/*.jpg", "matches no image files"),
    ("ftp://host/x.mp4", "unsupported URL scheme"),
])
def test_unreadable_sources_fail_with_one_line(path, message):
    with pytest.raises(SourceError, match=message):
        open_source(SourceSpec(path=path))


def test_not_a_video_and_empty_folder(tmp_path):
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(SourceError, match="not a video file"):
        open_source(SourceSpec(path=str(tmp_path / "notes.mp4")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="folder has no images"):
        open_source(SourceSpec(path=str(tmp_path / "empty")))


def test_http_file_url_is_read_like_a_file(http_server):
    src = open_source(SourceSpec(path=f"{http_server}/clip.mp4", policy=FAST))
    assert not src.info.live  # it reports a length: every frame, no reconnects
    assert len(list(src.frames())) == 60 and src.stats.reconnects == 0


def test_mjpeg_stream_url_is_live_and_reconnects(http_server):
    src = open_source(SourceSpec(path=f"{http_server}/live.mjpg", policy=FAST))
    assert src.info.live
    frames = list(src.frames())
    # 30 frames, the server drops the connection, the first reconnect gets 30 more, then the
    # server answers 404: 3 more attempts with back-off, then the source ends, disconnected
    assert len(frames) == 60 and [f.index for f in frames] == list(range(60))
    assert src.stats.reconnects == 1 + 3 and src.stats.disconnected


def test_camera_reads_then_reconnects_with_backoff_then_gives_up():
    factory = CameraFactory([5, 3, None, None, None])  # 5 frames, drop, 3 frames, then gone
    src = open_source(SourceSpec(camera=2, policy=FAST, capture_factory=factory))
    assert src.info.live and src.info.kind == "camera" and src.info.fps == 30.0
    frames = list(src.frames())
    assert len(frames) == 8
    assert factory.calls == [2] * 5  # the first open and 4 reopen attempts
    assert src.stats.reconnects == 4 and src.stats.disconnected
    assert FAST.delays() == [0.01, 0.02, 0.04]


def test_camera_that_cannot_be_opened():
    with pytest.raises(SourceError, match="cannot open camera 4"):
        open_source(SourceSpec(camera=4, capture_factory=CameraFactory([None])))


def test_interrupt_cuts_a_reconnect_wait_short():
    slow = ReconnectPolicy(attempts=1, first_delay=30.0)
    src = open_source(SourceSpec(camera=0, policy=slow, capture_factory=CameraFactory([2])))
    frames = src.frames()
    next(frames), next(frames)
    src.interrupt.set()
    assert list(frames) == [] and src.stats.reconnects == 0


def test_video_file_via_cv2_index_style_target(video_60):
    """The capture factory receives exactly what the user gave (index or path)."""
    seen = []

    def factory(target):
        seen.append(target)
        return cv2.VideoCapture(target)
    src = open_source(SourceSpec(path=str(video_60), capture_factory=factory))
    assert seen == [str(video_60)] and sum(1 for _ in src.frames()) == 60


def _loop_tree(root):
    """root/a.jpg, root/sub/b.jpg, root/sub/c.png, with root/sub/up -> .. and root/self -> ."""
    (root / "sub").mkdir(parents=True)
    for name in ("a.jpg", "sub/b.jpg", "sub/c.png"):
        cv2.imwrite(str(root / name), synthetic_frame(len(name)))
    (root / "sub" / "up").symlink_to("..")
    return root


def test_recursive_glob_reads_each_real_file_once_through_a_link_to_the_parent(tmp_path):
    """One link back to the parent made a ``**`` glob count 3 images as dozens of frames."""
    root = _loop_tree(tmp_path / "frames")
    with time_limit(20, "expanding the glob"):
        src = open_source(SourceSpec(path=f"{root}/**/*.jpg"))
    assert [f.name for f in src.frames()] == ["a.jpg", "b.jpg"]


def test_recursive_glob_through_two_loops_ends_quickly(tmp_path):
    """Two loops (a link to the parent and one to the folder itself) made glob.glob's search
    grow exponentially: it ran for minutes. Each real folder is visited once."""
    root = _loop_tree(tmp_path / "frames")
    (root / "self").symlink_to(".")
    with time_limit(20, "expanding the glob"):
        src = open_source(SourceSpec(path=f"{root}/**/*"))
    assert sorted(p.name for p in src.paths) == ["a.jpg", "b.jpg", "c.png"]


def test_glob_keeps_the_first_name_of_a_file_linked_twice(tmp_path):
    root = tmp_path / "frames"
    root.mkdir()
    cv2.imwrite(str(root / "a.jpg"), synthetic_frame(1))
    (root / "b.jpg").symlink_to(root / "a.jpg")
    src = open_source(SourceSpec(path=f"{root}/*.jpg"))
    assert [p.name for p in src.paths] == ["a.jpg"]


def test_recursive_glob_matches_like_glob_module(tmp_path):
    """Without links, the loop-safe expansion gives exactly what glob.glob gives."""
    import glob as globmod
    root = tmp_path / "t"
    for name in ("a.jpg", "x/b.jpg", "x/y/c.jpg", "x/y/d.png", ".hidden/e.jpg", "x/.f.jpg",
                 "z [1]/g.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / name), synthetic_frame(1))
    for pattern in ("**/*.jpg", "x/**/*.jpg", "**/y/*", "*/*.jpg", "**", "x/**", "**/?.png",
                    "[ax]/**/*.jpg", "z [[]1]/*.jpg"):
        expected = sorted(p for p in globmod.glob(f"{root}/{pattern}", recursive=True)
                          if p.lower().endswith((".jpg", ".png")))
        try:
            got = [str(p) for p in open_source(SourceSpec(path=f"{root}/{pattern}")).paths]
        except SourceError:
            got = []
        assert got == expected, pattern


@pytest.mark.parametrize("index", [-1, 10_000, 99_999_999_999])
def test_camera_index_out_of_range_is_refused_before_opencv(index):
    """OpenCV segfaults on -1 and overflows on indices past int32."""
    opened = []
    with pytest.raises(OptionError, match=f"--camera {index}: expected a camera index 0..9999"):
        open_source(SourceSpec(camera=index, capture_factory=opened.append))
    assert opened == []
