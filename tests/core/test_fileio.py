"""Atomic file output: a reader never sees half a file, and a failed write leaves the old one."""
from __future__ import annotations

import os

import pytest

from dino_core.fileio import atomic_output, atomic_write_bytes, atomic_write_text, partial_path


def test_atomic_output_gives_normal_permissions_and_cleans_up(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_output(target) as f:
        f.write(b"complete")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_bytes() == b"complete"
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete"  # the previous file survives an interrupted write
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_write_helpers_and_partial_names(tmp_path):
    assert atomic_write_text("a\n", tmp_path / "t.txt").read_text() == "a\n"
    assert atomic_write_bytes(b"b", tmp_path / "b.bin").read_bytes() == b"b"
    assert partial_path(tmp_path / "out.mp4") == tmp_path / ".out.partial.mp4"
    assert partial_path("m.fp16.engine").name == ".m.fp16.partial.engine"
