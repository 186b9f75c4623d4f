"""``make demo``: the whole toolkit on one real video, with no GPU and no internet needed.

Stages, each a real command of the toolkit, timed:
  1. weights   official DINO ViT-S/16 from the torch hub cache (or downloaded); when neither is
               possible, a small ViT trained for a few minutes with ``dino-train`` on real photos
               (Imagenette from ../shared/data when present, else scikit-image's bundled photos);
  2. export    ``dino-export`` to ONNX with cls, attention and patch outputs, verified;
  3. run       ``dino-run`` on a real video (../shared/data/videos when present, else a clip made
               from the bundled photos with camera motion): attention video, masks, embeddings;
  4. track     ``dino-run --track`` from the first frame's attention mask (what the model finds
               salient in frame 0): label propagation over the patch features of every frame;
  5. retrieval nearest frames by CLS embedding (cosine), written as a contact sheet;
  6. report    ``runs/demo/report.md`` with every stage's time and throughput.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
BIN = Path(sys.executable).parent
HUB_NAME = "dino_vits16"
EXPORT_SIZE = (224, 384)   # 14 x 24 patches: close to 16:9 at short side 224


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str
    throughput: str = ""


@dataclass
class Demo:
    out: Path
    train_minutes: float
    max_frames: int
    stages: list[Stage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def timed(self, name: str, cmd: list[str], detail: str, log: str) -> float:
        print(f"[demo] {name}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        with open(self.out / log, "w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        took = time.perf_counter() - start
        if proc.returncode != 0:
            tail = (self.out / log).read_text().strip().splitlines()[-5:]
            sys.exit(f"[demo] {name} failed (exit {proc.returncode}); see {self.out / log}:\n"
                     + "\n".join(tail))
        self.stages.append(Stage(name, took, detail))
        return took


def hub_weights() -> tuple[str | None, str]:
    """The official ViT-S/16 if cached or downloadable now; else None and the reason."""
    sys.path.insert(0, str(ROOT))
    from dino_core.errors import CheckpointError
    from dino_models.checkpoint import hub_cache_path, resolve_source
    cached = hub_cache_path(HUB_NAME)
    if cached.exists():
        return HUB_NAME, f"official DINO ViT-S/16 found in the torch hub cache ({cached})"
    try:
        resolve_source(HUB_NAME, download=True)
    except CheckpointError as e:
        return None, f"official weights unavailable: {e}"
    return HUB_NAME, "official DINO ViT-S/16 downloaded into the torch hub cache"


def training_photos(tmp: Path) -> tuple[Path, str]:
    """A folder of real photographs to train on, and where they came from."""
    dest = tmp / "photos"
    dest.mkdir()
    tar_path = SHARED / "imagenette-val.tar"
    if tar_path.exists():
        with tarfile.open(tar_path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".JPEG")]
            for m in members[::4]:  # every 4th photo: ~1,000 images across the 10 classes
                m.name = Path(m.name).name
                tar.extract(m, dest, filter="data")
        return dest, f"{len(list(dest.iterdir()))} Imagenette photos from {tar_path}"
    import skimage.data
    for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "horse",
                 "hubble_deep_field", "retina", "immunohistochemistry", "cat"):
        if hasattr(skimage.data, name):
            img = np.asarray(getattr(skimage.data, name)())
            if img.dtype != np.uint8:  # e.g. "horse" is a boolean mask, some are 16-bit
                img = (img.astype(np.float64) * (255 / max(float(img.max()), 1.0))).astype(np.uint8)
            if img.ndim == 2:
                img = np.stack([img] * 3, -1)
            cv2.imwrite(str(dest / f"{name}.png"), cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2BGR))
    return dest, f"{len(list(dest.iterdir()))} photos bundled with scikit-image"


def demo_video(tmp: Path) -> tuple[Path, str]:
    """A real video, or a clip panned and zoomed over bundled photos."""
    real = SHARED / "videos" / "01_dog.mp4"
    if real.exists():
        return real, f"real video {real}"
    import skimage.data
    clip = tmp / "photos_clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 24, (640, 360))
    for photo in (skimage.data.chelsea(), skimage.data.astronaut(), skimage.data.coffee()):
        img = cv2.cvtColor(np.asarray(photo), cv2.COLOR_RGB2BGR)
        h, w = img.shape[:2]
        for t in np.linspace(0, 1, 48):  # slow zoom-and-pan: a moving camera over a still scene
            zoom = 1.0 - 0.35 * t
            ch, cw = int(h * zoom), int(w * zoom)
            y, x = int((h - ch) * t), int((w - cw) * (1 - t) / 2)
            writer.write(cv2.resize(img[y:y + ch, x:x + cw], (640, 360)))
    writer.release()
    return clip, "clip made from scikit-image photos with camera motion (no real video found)"


def stage_weights(demo: Demo, tmp: Path) -> str:
    source, why = hub_weights()
    demo.notes.append(why)
    if source is not None:
        demo.stages.append(Stage("weights", 0.0, why))
        return source
    photos, origin = training_photos(tmp)
    demo.notes.append(f"so a ViT-Tiny/16 was trained for {demo.train_minutes:g} min on {origin}; "
                      "its attention is far weaker than the official model's")
    train_dir = demo.out / "train"
    batch = min(32, len(list(photos.iterdir())))  # the fallback has only ~10 photos
    cmd = [str(BIN / "dino-train"), "--arch", "vit_t16", "--data-path", str(photos),
           "--output-dir", str(train_dir), "--epochs", "15", "--warmup-epochs", "2",
           "--batch-size-per-gpu", str(batch), "--global-crop-size", "128",
           "--local-crop-size", "64",
           "--local-crops-number", "4", "--out-dim", "4096", "--num-workers", "1",
           "--no-resume", "--no-progress", "--max-minutes", str(demo.train_minutes)]
    took = demo.timed("train", cmd, f"dino-train vit_t16 on {origin}", "train.log")
    steps = _last_log_record(train_dir / "log.jsonl")
    if steps:
        demo.stages[-1].throughput = (f"{steps.get('step', '?')} steps, final loss "
                                      f"{steps.get('loss', float('nan')):.3f}, "
                                      f"{steps.get('images_per_s', 0):.1f} img/s")
    del took
    return str(train_dir / "checkpoint.pth")


def _last_log_record(path: Path) -> dict:
    if not path.exists():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def stage_export(demo: Demo, checkpoint: str) -> Path:
    onnx_path = demo.out / "model.onnx"
    cmd = [str(BIN / "dino-export"), checkpoint, "-o", str(onnx_path), "--img-size",
           *map(str, EXPORT_SIZE), "--dynamic-batch", "1", "4", "8",
           "--outputs", "cls", "--outputs", "attn", "--outputs", "patch"]
    demo.timed("export", cmd, f"dino-export to ONNX {EXPORT_SIZE[0]}x{EXPORT_SIZE[1]}, verified",
               "export.log")
    demo.stages[-1].throughput = f"{onnx_path.stat().st_size / 1e6:.1f} MB"
    return onnx_path


def stage_run(demo: Demo, model: Path, video: Path) -> Path:
    emb = demo.out / "embeddings.npy"
    cmd = [str(BIN / "dino-run"), "--model", str(model), "--source", str(video),
           "--show-attention", "--mask", "--save", str(demo.out / "attention.mp4"),
           "--embeddings", str(emb), "--masks-dir", str(demo.out / "masks"),
           "--batch", "4", "--max-frames", str(demo.max_frames), "--no-display"]
    took = demo.timed("run", cmd, f"dino-run on {video.name}", "run.log")
    frames = len(np.load(emb))
    demo.stages[-1].throughput = f"{frames} frames, {frames / took:.1f} frames/s end to end"
    return emb


def stage_track(demo: Demo, model: Path, video: Path) -> None:
    """Track what the model attends to in frame 0 (its mass-threshold mask, the seed) through
    the clip: palette masks, live JSON lines of the object's box, and the overlay video."""
    cmd = [str(BIN / "dino-run"), "--model", str(model), "--source", str(video),
           "--track", str(demo.out / "masks" / "000000.png"), "--save",
           str(demo.out / "tracking.mp4"), "--masks-dir", str(demo.out / "track_masks"),
           "--track-json", str(demo.out / "objects.jsonl"), "--batch", "4", "--max-frames",
           str(demo.max_frames), "--no-display"]
    took = demo.timed("track", cmd, f"dino-run --track on {video.name} from frame 0's "
                      "attention mask", "track.log")
    records = [json.loads(line) for line in (demo.out / "objects.jsonl").read_text().splitlines()]
    found = sum(1 for r in records if r["objects"])
    demo.stages[-1].throughput = (f"{len(records)} frames, {len(records) / took:.1f} frames/s "
                                  f"end to end; object found in {found}")


def stage_retrieval(demo: Demo, emb_path: Path, video: Path) -> None:
    start = time.perf_counter()
    emb = np.load(emb_path)["cls"].astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
    sim = emb @ emb.T
    queries = np.linspace(0, len(emb) - 1, 3).astype(int)
    rows, lines = [], []
    frames = _read_frames(video, len(emb))
    for q in queries:
        gap = min(5, len(emb) // 10)  # skip the query's immediate neighbours (near-duplicates)
        order = [i for i in np.argsort(-sim[q]) if abs(i - q) > gap][:4]
        lines.append(f"| {q} | " + ", ".join(f"{i} ({sim[q, i]:.4f})" for i in order) + " |")
        rows.append(np.hstack([_thumb(frames[q], (0, 0, 255))] + [_thumb(frames[i]) for i in order]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    _write_image(demo.out / "retrieval.png", np.vstack(rows))
    # How spread the embeddings are: a briefly trained model maps every frame nearly alike.
    lines.append(f"\nPairwise cosine over all frames: min {sim.min():.4f}, median "
                 f"{np.median(sim):.4f}. Close to 1 means the embeddings barely tell frames apart "
                 "(expected from minutes of CPU training; the official weights separate them).")
    demo.retrieval_table = lines
    demo.stages.append(Stage("retrieval", time.perf_counter() - start,
                             "cosine nearest frames by CLS embedding", f"{len(emb)} frames"))


def _read_frames(video: Path, count: int) -> list[np.ndarray]:
    cap, frames = cv2.VideoCapture(str(video)), []
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def _thumb(frame: np.ndarray, border=(255, 255, 255)) -> np.ndarray:
    t = cv2.resize(frame, (240, int(240 * frame.shape[0] / frame.shape[1])))
    return cv2.copyMakeBorder(t, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=border)


def _write_image(path: Path, img: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    cv2.imwrite(str(tmp), img)
    os.replace(tmp, path)


def write_report(demo: Demo, video_origin: str) -> Path:
    lines = ["# dino-edge demo", "", f"Date: {time.strftime('%Y-%m-%d %H:%M:%S')}; machine: "
             f"{os.cpu_count()} CPU cores, no GPU used.", "", "## Weights", ""]
    lines += [f"- {n}" for n in demo.notes]
    lines += ["", f"Video: {video_origin}.", "", "## Stages", "",
              "| stage | seconds | what | throughput |", "|---|---|---|---|"]
    lines += [f"| {s.name} | {s.seconds:.1f} | {s.detail} | {s.throughput} |" for s in demo.stages]
    lines += ["", "## Outputs", "", "- `attention.mp4`: attention heat map and mask contours over "
              "every frame, at the source's resolution and frame rate",
              "- `masks/`: one PNG mask per frame (official mass threshold 0.6)",
              "- `embeddings.npy`: one CLS embedding per frame",
              "- `tracking.mp4`, `track_masks/`, `objects.jsonl`: the object of frame 0's "
              "attention mask tracked by label propagation (overlay, DAVIS palette masks, "
              "area/box/centroid per frame)",
              "- `retrieval.png`: each row a query frame (red) and its nearest frames",
              "- `model.onnx`: the exported model; logs: `*.log`", "", "## Retrieval", "",
              "| query frame | nearest frames (cosine) |", "|---|---|"]
    lines += getattr(demo, "retrieval_table", [])
    path = demo.out / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "demo")
    parser.add_argument("--train-minutes", type=float, default=4.0)
    parser.add_argument("--max-frames", type=int, default=120)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    demo = Demo(args.out, args.train_minutes, args.max_frames)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = stage_weights(demo, tmp)
        model = stage_export(demo, checkpoint)
        video, video_origin = demo_video(tmp)
        emb = stage_run(demo, model, video)
        stage_track(demo, model, video)
        stage_retrieval(demo, emb, video)
        report = write_report(demo, video_origin)
    print(report.read_text())
    print(f"[demo] done: {args.out}")


if __name__ == "__main__":
    main()
