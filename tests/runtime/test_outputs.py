"""dino-run's outputs: a failed run never replaces earlier files (its partial output is kept
under a name it gives), an output that is also an input is refused before anything runs,
existing outputs need --overwrite (and then no earlier mask stays mixed in), an unwritable folder
is one line with the real reason, and a source that gives no frame is an error, not exit 0."""
from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from dino_core.cli import run as run_command
from dino_core.errors import ModelError
from dino_runtime import cli as run_cli_module
from tests.limits import unwritable_folder

from .conftest import ROOT, assert_one_line_error, run_cli, synthetic_frame, write_video

EARLIER = b"the output of an earlier run"


def assert_run_failed(code: int, err: str, *needles: str) -> None:
    """Exit 1 and a one-line reason as the last line, after the run's banner, no traceback."""
    assert code == 1 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dino-run: "), err
    for needle in needles:
        assert needle in last, err


def test_a_run_that_fails_part_way_leaves_earlier_outputs_untouched(tiny_onnx, tmp_path):
    """The embeddings file hits the file-size limit (as on a full disk) after about 40 frames.
    Before: out.mp4 and cls.jsonl were replaced by the partial output, with a traceback and a
    summary saying 'stopped: end of source'."""
    video = write_video(tmp_path / "clip.mp4", 250)
    out, emb, masks = tmp_path / "out.mp4", tmp_path / "cls.jsonl", tmp_path / "masks"
    out.write_bytes(EARLIER)
    emb.write_bytes(EARLIER)
    masks.mkdir()
    (masks / "000000.png").write_bytes(EARLIER)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    proc = subprocess.run(
        [sys.executable, "-m", "dino_runtime.cli", "--model", str(tiny_onnx), "--source",
         str(video), "--show-attention", "--save", str(out), "--embeddings", str(emb),
         "--masks-dir", str(masks), "--batch", "4", "--overwrite", "--no-display"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert_run_failed(proc.returncode, proc.stderr, f"--embeddings {emb}: cannot write",
                          "File too large", f"nothing was written to {out}, {emb}, {masks}",
                          "partial output kept as", "out.partial.mp4", "cls.partial.jsonl",
                          "masks.partial")
    assert "stopped: failed" in proc.stdout
    assert out.read_bytes() == EARLIER and emb.read_bytes() == EARLIER
    assert sorted(p.name for p in masks.iterdir()) == ["000000.png"]
    assert (masks / "000000.png").read_bytes() == EARLIER
    rows = [json.loads(line) for line in
            (tmp_path / "cls.partial.jsonl").read_text().splitlines()[:-1]]
    assert rows[0]["frame"] == 0 and 10 < len(rows) < 250
    assert 10 < len(list((tmp_path / "masks.partial").glob("*.png"))) < 250
    assert not list(tmp_path.glob(".*"))  # no hidden temporary file is left behind


class FailingBackend:
    """The real backend, failing with a model error on its third call."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        for name in ("name", "metadata", "device", "precision", "runs_on_host"):
            setattr(self, name, getattr(inner, name))

    def run(self, images):
        self.calls += 1
        if self.calls == 4:  # the warm-up is call 1
            raise ModelError("model.onnx: ONNX Runtime cannot run this model (device lost)")
        return self.inner.run(images)


def test_a_failed_run_in_process_keeps_partial_output_and_names_it(tiny_onnx, video_60,
                                                                    tmp_path, monkeypatch,
                                                                    capsys):
    real = run_cli_module.Runtime

    def failing_runtime(*args, **kwargs):
        runtime = real(*args, **kwargs)
        runtime.backend = FailingBackend(runtime.backend)
        return runtime

    monkeypatch.setattr(run_cli_module, "Runtime", failing_runtime)
    out, emb = tmp_path / "out.mp4", tmp_path / "cls.npy"
    out.write_bytes(EARLIER)
    code = run_command(run_cli_module.command, "dino-run",
                       ["--model", str(tiny_onnx), "--source", str(video_60), "--batch", "4",
                        "--save", str(out), "--embeddings", str(emb), "--overwrite",
                        "--no-display"])
    captured = capsys.readouterr()
    assert_run_failed(code, captured.err, "device lost", f"nothing was written to {out}",
                          "partial output kept as", "cls.partial.npy")
    assert out.read_bytes() == EARLIER and not emb.exists()
    partial = np.load(tmp_path / "cls.partial.npy")  # a complete, readable file
    assert list(partial["frame"]) == list(range(len(partial))) and 0 < len(partial) < 60
    cap = cv2.VideoCapture(str(tmp_path / "out.partial.mp4"))
    assert cap.isOpened() and cap.read()[0]
    assert "stopped: failed: model.onnx: ONNX Runtime cannot run this model" in captured.out


def test_existing_outputs_need_overwrite(tiny_onnx, video_60, tmp_path):
    out, emb = tmp_path / "out.avi", tmp_path / "cls.npy"
    out.write_bytes(EARLIER)
    emb.write_bytes(EARLIER)
    for args, needle in (
            (["--save", out], f"--save {out} exists; add --overwrite"),
            (["--embeddings", emb], f"--embeddings {emb} exists; add --overwrite")):
        code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, *args, "--no-display")
        assert_one_line_error(code, err, needle)
    assert out.read_bytes() == EARLIER and emb.read_bytes() == EARLIER
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--save", out,
                           "--embeddings", emb, "--max-frames", "3", "--overwrite",
                           "--no-display")
    assert code == 0, err
    assert len(np.load(emb)) == 3 and out.read_bytes() != EARLIER


def test_a_reused_masks_dir_needs_overwrite_and_then_holds_only_the_new_masks(
        tiny_onnx, video_60, tmp_path):
    """Before: a second run with fewer frames left the first run's masks mixed in."""
    masks = tmp_path / "masks"
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--masks-dir", masks,
                           "--max-frames", "12", "--no-display")
    assert code == 0, err
    (masks / "notes.txt").write_text("the user's own file")
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--masks-dir", masks,
                           "--max-frames", "5", "--no-display")
    assert_one_line_error(code, err, f"--masks-dir {masks} holds 12 masks of an earlier run",
                          "add --overwrite")
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, "--masks-dir", masks,
                           "--max-frames", "5", "--heads", "all", "--overwrite", "--no-display")
    assert code == 0, err
    names = sorted(p.name for p in masks.iterdir())
    assert names == sorted([f"{i:06d}_head{k}.png" for i in range(5) for k in range(3)]
                           + ["notes.txt"])


def test_an_output_that_is_also_an_input_is_refused_before_anything_runs(
        tiny_onnx, video_60, image_folder, tmp_path):
    """Before: --save equal to --source overwrote the video it was reading and exited 0."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(video_60.read_bytes())
    before = video.read_bytes()
    (tmp_path / "pngs").mkdir()
    (tmp_path / "out").mkdir()
    cv2.imwrite(str(tmp_path / "pngs" / "a.png"), synthetic_frame(1))
    for args, needle in (
            (["--source", video, "--save", video, "--overwrite"],
             f"--save {video} is also the --source"),
            (["--source", image_folder, "--masks-dir", image_folder, "--overwrite"],
             f"--masks-dir {image_folder} is the --source folder"),
            (["--source", f"{tmp_path}/**/*.png", "--masks-dir", tmp_path / "out" / "masks"],
             "would be read as frames by --source")):
        code, _, err = run_cli("--model", tiny_onnx, *args, "--no-display")
        assert_one_line_error(code, err, needle)
    assert video.read_bytes() == before
    assert sorted(p.name for p in image_folder.iterdir()) == [
        "f00.jpg", "f01.jpg", "f02.jpg", "f02b.jpg", "f03.jpg", "f04.jpg"]


@pytest.mark.parametrize("option, name", [("--save", "out.mp4"), ("--embeddings", "cls.npy"),
                                          ("--masks-dir", "masks")])
def test_an_unwritable_output_folder_is_one_line_with_the_reason(tiny_onnx, video_60, tmp_path,
                                                                 option, name):
    """Before: a traceback (--embeddings, --masks-dir), or for --save a wrong 'cannot write
    this video type' message hidden behind a cleanup error."""
    folder = unwritable_folder(tmp_path)
    code, _, err = run_cli("--model", tiny_onnx, "--source", video_60, option, folder / name,
                           "--no-display")
    assert_one_line_error(code, err, f"{option} {folder / name}: cannot write in {folder}",
                          "Permission denied")


def test_a_source_where_no_frame_decodes_is_an_error(tiny_onnx, tmp_path):
    """Before: exit 0 with no outputs."""
    folder = tmp_path / "broken"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    emb = tmp_path / "cls.npy"
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", folder, "--embeddings", emb,
                                "--no-display")
    assert_run_failed(code, err, f"folder {folder}: no frame could be decoded (3 corrupt)")
    assert not emb.exists() and "frames 0" in stdout


def test_an_image_folder_with_one_good_frame_still_runs(tiny_onnx, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), synthetic_frame(1))
    (folder / "b.jpg").write_bytes(b"broken")
    code, stdout, err = run_cli("--model", tiny_onnx, "--source", folder, "--embeddings",
                                tmp_path / "e.npy", "--no-display")
    assert code == 0 and "corrupt 1" in stdout, err
