"""Data: folder scan (images, videos, junk), unreadable files, deterministic views, sampler."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dino_core.cli import configure_logging
from dino_core.errors import UserError
from dino_train.data import (
    CropConfig,
    EpochSampler,
    GaussianBlur,
    MultiCropAugmentation,
    MultiCropDataset,
    scan_folder,
    steps_per_epoch,
)

from .conftest import write_images

SMALL = CropConfig(global_crop_size=32, local_crop_size=16, local_crops_number=3)


def test_scan_finds_images_in_nested_and_flat_layouts_and_counts_junk(tmp_path):
    write_images(tmp_path / "d", 6, classes=2)
    write_images(tmp_path / "d", 2, seed=1)  # flat files next to the class folders
    (tmp_path / "d" / "notes.txt").write_text("not an image")
    (tmp_path / "d" / ".hidden.jpg").write_bytes(b"ignored")
    scan = scan_folder(tmp_path / "d")
    assert len(scan.samples) == 8  # 6 in class folders + 2 flat
    assert [Path(p).name for p, _ in scan.skipped] == ["notes.txt"]


def test_video_frames_are_samples(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "v" / "clip.avi"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 40))
    for i in range(20):
        writer.write(np.full((40, 48, 3), i * 10, np.uint8))
    writer.release()
    scan = scan_folder(path.parent, video_stride=5)
    assert [s.frame for s in scan.samples] == [0, 5, 10, 15]
    ds = MultiCropDataset(scan.samples, MultiCropAugmentation(SMALL), seed=0)
    crops, skipped = ds[(0, 2)]
    assert skipped == 0 and crops[0].shape == (3, 32, 32)


def test_empty_or_missing_folder_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images or videos found"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(UserError, match="not a directory"):
        scan_folder(tmp_path / "missing")


def test_a_link_back_to_a_parent_folder_is_followed_once(tmp_path):
    """8 images and a link to their own folder: 8 samples (the walk counted 328, 8 per level
    until the path was too long)."""
    folder = write_images(tmp_path / "d" / "images", 8)
    (folder / "up").symlink_to("..", target_is_directory=True)
    assert len(scan_folder(folder).samples) == 8


def test_a_folder_reached_by_two_links_is_listed_once_under_the_first_name(tmp_path):
    write_images(tmp_path / "d" / "real", 3)
    (tmp_path / "d" / "b_link").symlink_to("real", target_is_directory=True)
    (tmp_path / "d" / "a_link").symlink_to("real", target_is_directory=True)
    samples = scan_folder(tmp_path / "d").samples
    assert sorted({Path(s.path).parent.name for s in samples}) == ["a_link"]
    assert len(samples) == 3


def test_symlink_loops_do_not_hang_the_scan(tmp_path):
    """Two links back to the top make 2**depth paths for a walk that follows links blindly
    (it ran for hours); entered once each, the scan is instant."""
    folder = write_images(tmp_path / "d", 4)
    for name in ("x", "y"):
        (folder / name).symlink_to(folder, target_is_directory=True)
    code = "import sys; from dino_train.data import scan_folder; " \
           "print(len(scan_folder(sys.argv[1]).samples))"
    try:
        out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True,
                             text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("the scan of a folder with two links back to itself did not end in 60 s")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4"]


def test_corrupt_files_are_skipped_and_counted(tmp_path, capfd):
    configure_logging("dino-train")  # warnings go through logging, printed as by the command
    folder = write_images(tmp_path / "d", 4)
    (folder / "img001.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    (folder / "img002.jpg").write_bytes(b"")
    ds = MultiCropDataset(scan_folder(folder).samples, MultiCropAugmentation(SMALL), seed=0)
    crops, skipped = ds[(0, 1)]
    assert skipped == 2 and len(crops) == 5  # 001 and 002 unreadable: 003 is used instead
    assert ds[(0, 0)][1] == 0
    err = capfd.readouterr().err
    assert "dino-train: warning: skipping" in err and "img001.jpg" in err and "img002.jpg" in err


def test_views_depend_only_on_seed_epoch_and_index(image_folder):
    samples = scan_folder(image_folder).samples
    ds = MultiCropDataset(samples, MultiCropAugmentation(SMALL), seed=3)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = ds[(1, 5)][0]
    assert torch.equal(torch.rand(1), before)  # the caller's RNG is not consumed
    b = ds[(1, 5)][0]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = ds[(2, 5)][0]
    assert not torch.equal(a[0], c[0])
    shapes = [tuple(x.shape) for x in a]
    assert shapes == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3


def test_deterministic_views_are_resized_images(image_folder):
    cfg = CropConfig(global_crop_size=32, local_crop_size=16, local_crops_number=1, random=False)
    ds = MultiCropDataset(scan_folder(image_folder).samples, MultiCropAugmentation(cfg), seed=0)
    (g1, g2, loc), _ = ds[(0, 0)]
    assert torch.equal(g1, g2) and loc.shape == (3, 16, 16)
    assert torch.equal(ds[(5, 0)][0][0], g1)


def test_sampler_splits_between_processes_and_resumes_mid_epoch():
    data = list(range(10))
    ranks = [EpochSampler(data, 2, r, seed=0, batch_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    parts = [list(s) for s in ranks]
    assert sorted(i for p in parts for _, i in p) == data
    assert all(e == 3 for p in parts for e, _ in p)
    ranks[0].start_batch = 1
    assert list(ranks[0]) == parts[0][2:] and len(ranks[0]) == 3
    assert steps_per_epoch(10, batch_size=2, world_size=2) == 2


def _blurs(aug):
    return {name: [t for t in getattr(aug, name).transforms if isinstance(t, GaussianBlur)][0]
            for name in ("global1", "global2", "local")}


def test_official_blur_at_224_and_scaled_with_smaller_crops():
    official = _blurs(MultiCropAugmentation(CropConfig()))
    assert {n: (b.p, b.radius_min, b.radius_max) for n, b in official.items()} == {
        "global1": (1.0, 0.1, 2.0), "global2": (0.1, 0.1, 2.0), "local": (0.5, 0.1, 2.0)}
    small = _blurs(MultiCropAugmentation(CropConfig(global_crop_size=32, local_crop_size=16)))
    for name, b in small.items():
        assert b.p == official[name].p
        assert (b.radius_min, b.radius_max) == pytest.approx((0.1 * 32 / 224, 2.0 * 32 / 224))


def _jitters(aug):
    from torchvision import transforms
    found = []
    for name in ("global1", "global2", "local"):
        for t in getattr(aug, name).transforms:
            if isinstance(t, transforms.Compose):  # flip_and_jitter
                for u in t.transforms:
                    if isinstance(u, transforms.RandomApply):
                        found.append((u.p, u.transforms[0]))
    assert len(found) == 3
    return found


def _ranges(jitter):
    ranges = (jitter.brightness, jitter.contrast, jitter.saturation, jitter.hue)
    return [v for r in ranges for v in r]


def test_colour_jitter_is_official_by_default_and_scales_with_its_strength():
    for p, jitter in _jitters(MultiCropAugmentation(CropConfig())):
        assert p == 0.8
        assert _ranges(jitter) == pytest.approx([0.6, 1.4, 0.6, 1.4, 0.8, 1.2, -0.1, 0.1])
    for p, jitter in _jitters(MultiCropAugmentation(CropConfig(color_jitter=2.0))):
        assert p == 0.8
        assert _ranges(jitter) == pytest.approx([0.2, 1.8, 0.2, 1.8, 0.6, 1.4, -0.2, 0.2])


class _SignalHandlers(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        import signal
        return [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM)]


def test_loader_workers_leave_ctrl_c_and_sighup_to_the_trainer():
    """Ctrl-C reaches the workers too (one process group); the trainer finishes its step and
    checkpoints, which needs the workers alive for the batch it may be waiting for. SIGTERM
    stays: it is how the loader and multiprocessing end workers."""
    import signal

    from dino_train.data import build_loader
    loader = build_loader(_SignalHandlers(), torch.utils.data.SequentialSampler(range(1)), 1,
                          num_workers=1, pin_memory=False)
    handlers = [int(v) for v in next(iter(loader))]
    assert handlers == [signal.SIG_IGN, signal.SIG_IGN, signal.SIG_DFL]
