"""Every script in examples/ runs on small inputs and produces what it promises."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _run(*args: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """24 frames, 120x200: a bright square moving over a dark gradient, then a cut to noise."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12, (200, 120))
    rng = np.random.default_rng(0)
    for i in range(24):
        if i < 16:
            frame = np.tile(np.linspace(20, 80, 200, dtype=np.uint8), (120, 1))[..., None].repeat(3, 2)
            frame[30:80, 10 + 6 * i:60 + 6 * i] = (40, 200, 240)
        else:
            frame = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
        writer.write(frame)
    writer.release()
    return path


def test_attention_video(tmp_path, tiny_pretrained, clip):
    out = tmp_path / "attention.mp4"
    stdout = _run(str(EXAMPLES / "attention_video.py"), str(tiny_pretrained), str(clip), str(out),
                  "--size", "64", "112", cwd=tmp_path)
    assert "24 frames" in stdout
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (200, 120)
    ok, first = cap.read()
    raw = cv2.VideoCapture(str(clip)).read()[1]
    assert ok and np.abs(first.astype(int) - raw.astype(int)).mean() > 5  # overlay was drawn


def test_similarity_search_finds_the_query_frame(tmp_path, tiny_pretrained, clip):
    model = tmp_path / "m.onnx"
    subprocess.run([str(Path(sys.executable).parent / "dino-export"), str(tiny_pretrained), "-o",
                    str(model), "--img-size", "64", "112", "--no-verify"], check=True,
                   capture_output=True)
    cap = cv2.VideoCapture(str(clip))
    frames = [cap.read()[1] for _ in range(20)]
    cv2.imwrite(str(tmp_path / "query.png"), frames[19])  # a noise frame, after the cut
    stdout = _run(str(EXAMPLES / "similarity_search.py"), str(model), str(clip),
                  str(tmp_path / "query.png"), "--top", "3", cwd=tmp_path)
    assert stdout.splitlines()[0].startswith("1. frame 19 ")
    assert float(stdout.splitlines()[0].rsplit(" ", 1)[1]) > 0.999


def _write_class_folders(root: Path, per_class: int, seed: int) -> None:
    """Two visually distinct classes: bright-red squares vs dark-blue stripes, with noise."""
    rng = np.random.default_rng(seed)
    for name in ("red_square", "blue_stripes"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (64, 64, 3), dtype=np.uint8)
            if name == "red_square":
                y, x = rng.integers(0, 24, 2)
                img[y:y + 40, x:x + 40] = (30, 30, 230)
            else:
                img[:, ::8] = (220, 60, 20)
            cv2.imwrite(str(root / name / f"{i}.png"), img)


def test_knn_eval_separates_two_obvious_classes(tmp_path, tiny_pretrained):
    _write_class_folders(tmp_path / "train", 12, seed=1)
    _write_class_folders(tmp_path / "val", 6, seed=2)
    stdout = _run(str(EXAMPLES / "knn_eval.py"), str(tiny_pretrained), "--train-data",
                  str(tmp_path / "train"), "--val-data", str(tmp_path / "val"), "--k", "5",
                  "--image-size", "64", cwd=tmp_path)
    line = next(ln for ln in stdout.splitlines() if ln.startswith("k=5"))
    top1 = float(line.split("top-1")[1].split("%")[0])
    assert top1 >= 90.0, stdout  # even random ViT features separate these two classes


def test_knn_eval_bad_folder_is_one_line(tmp_path, tiny_pretrained):
    proc = subprocess.run([sys.executable, str(EXAMPLES / "knn_eval.py"), str(tiny_pretrained),
                           "--train-data", str(tmp_path / "nope"), "--val-data", str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "not a directory" in proc.stderr


def test_pca_parts_contact_sheet_with_one_basis(tmp_path):
    import torch

    from dino_export import ExportConfig, export_onnx
    from dino_models.archs import resolve_arch
    torch.manual_seed(5)
    model = tmp_path / "v3.onnx"   # a DINOv3 file, as the example's usage shows
    export_onnx(resolve_arch("dinov3_s16").build(depth=1, layerscale_init=1.0), model,
                ExportConfig(img_size=(96, 96), outputs=("cls", "attn", "patch")))
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):   # a bright object on a dark, noisy background, at different places
        img = rng.integers(0, 30, (120, 160, 3), dtype=np.uint8)
        img[20 + 5 * i:80 + 5 * i, 30 + 10 * i:90 + 10 * i] = (40, 180, 240)
        cv2.imwrite(str(photos / f"{i}.jpg"), img)
    sheet, basis = tmp_path / "parts.png", tmp_path / "parts.npz"
    stdout = _run(str(EXAMPLES / "pca_parts.py"), str(model), str(photos), str(sheet),
                  "--foreground", "--save-basis", str(basis), "--side", "64", cwd=tmp_path)
    assert "basis from 5 images; 5 images drawn" in stdout
    image = cv2.imread(str(sheet))
    assert image.shape == (2 * 64, 3 * 2 * 64, 3)                 # 5 tiles in 3 columns
    background = float(stdout.split("background ")[1].split("%")[0])
    assert 0 < background < 100                                     # the foreground split ran
    # The saved basis gives the same sheet: one basis for every image, reusable across runs.
    again = tmp_path / "again.png"
    _run(str(EXAMPLES / "pca_parts.py"), str(model), str(photos), str(again), "--basis",
         str(basis), "--side", "64", cwd=tmp_path)
    assert np.array_equal(cv2.imread(str(again)), image)


def test_track_object_follows_the_box(tmp_path, tiny_pretrained, clip):
    model = tmp_path / "m.onnx"
    subprocess.run([str(Path(sys.executable).parent / "dino-export"), str(tiny_pretrained), "-o",
                    str(model), "--img-size", "64", "112", "--outputs", "cls,attn,patch",
                    "--no-verify"], check=True, capture_output=True)
    out = tmp_path / "tracked.mp4"
    stdout = _run(str(EXAMPLES / "track_object.py"), str(model), str(clip), "--box",
                  "10,30,50,50", "--out", str(out), cwd=tmp_path)
    lines = stdout.splitlines()
    assert lines[0].startswith("frame 0: object 1: area ") and len(lines) == 25
    assert lines[-1].startswith(f"wrote {out}; ")
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12)          # the source's frame rate
    ok, first = cap.read()
    cap.release()
    # The overlay is drawn: the first frame differs from the clip's inside the seeded box.
    plain = cv2.VideoCapture(str(clip)).read()[1]
    assert ok and np.abs(first[30:80, 10:60].astype(int) - plain[30:80, 10:60]).mean() > 5
    # A box outside the frame: one line, a non-zero exit, and no output file.
    bad = subprocess.run([sys.executable, str(EXAMPLES / "track_object.py"), str(model), str(clip),
                          "--box", "500,500,20,20", "--out", str(tmp_path / "bad.mp4")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "outside" in bad.stderr
    assert not (tmp_path / "bad.mp4").exists()
