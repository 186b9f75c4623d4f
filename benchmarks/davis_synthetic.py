"""A DAVIS-layout set whose ground truth is exact: real textured objects moved over real videos.

    python benchmarks/davis_synthetic.py OUT [--size 480 854] [--frames 25]

DAVIS itself is not on this machine. Each sequence here is consecutive frames of one real video
(``../shared/data/videos``), cut to the DAVIS size, with one to three objects cut from real
photos (Imagenette from ``../shared/data``; an ellipse of the photo each, edges feathered)
moving over it in a fixed depth order. A frame's annotation holds each object's visible pixels
(the pixels where its opacity is at least 0.5 once the objects in front of it are drawn), so
the J and F of any result against it are exact. Scenarios:

* ``cross``: two objects cross; the front one hides part of the other;
* ``exit``: an object leaves the frame, stays out, and comes back near where it left;
* ``three``: three objects; the second passes in front of the first and hides all of it for a
  few frames, the third leaves through the bottom edge.

Written as DAVIS is: ``JPEGImages/480p/<seq>/00000.jpg``, ``Annotations/480p/<seq>/00000.png``
(palette PNGs, every frame annotated), ``ImageSets/2017/val.txt`` and ``ImageSets/2016/val.txt``.
Without ``../shared/data`` it falls back to scikit-image's bundled photos (panned for the
background) and says so.
"""
from __future__ import annotations

import argparse
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
VIDEOS = ("01_dog.mp4", "03_blocks.mp4", "04_coffee.mp4", "02_cups.mp4", "bedroom.mp4")
# Imagenette photos with a textured subject filling the frame (tench, springer, church, ...).
PHOTO_CLASSES = ("n01440764", "n02102040", "n03028079", "n03394916", "n03425413", "n03888257")


@dataclass(frozen=True)
class Motion:
    """One object: its photo, size (fraction of the frame's height and width) and its centre
    at key times (0..1 over the sequence; fractions of the frame, outside 0..1 is off-frame)."""

    photo: int
    size: tuple[float, float]
    keys: tuple[tuple[float, float, float], ...]   # (t, x, y)

    def centre(self, t: float) -> tuple[float, float]:
        ts = [k[0] for k in self.keys]
        return (float(np.interp(t, ts, [k[1] for k in self.keys])),
                float(np.interp(t, ts, [k[2] for k in self.keys])))


SCENARIOS: dict[str, tuple[Motion, ...]] = {
    "cross": (Motion(0, (0.42, 0.26), ((0, 0.22, 0.5), (1, 0.70, 0.45))),
              Motion(1, (0.36, 0.22), ((0, 0.80, 0.55), (1, 0.32, 0.6)))),
    "exit": (Motion(2, (0.40, 0.24), ((0, 0.62, 0.5), (0.35, 1.25, 0.5), (0.55, 1.25, 0.5),
                                      (1, 0.70, 0.5))),
             Motion(3, (0.30, 0.18), ((0, 0.2, 0.35), (1, 0.28, 0.6)))),
    "three": (Motion(4, (0.30, 0.17), ((0, 0.45, 0.45), (1, 0.5, 0.5))),
              Motion(5, (0.55, 0.34), ((0, 0.05, 0.5), (0.45, 0.48, 0.48), (0.6, 0.52, 0.48),
                                       (1, 0.95, 0.5))),
              Motion(0, (0.28, 0.16), ((0, 0.82, 0.3), (0.6, 0.82, 0.8), (1, 0.82, 1.3)))),
}


def _cover(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to cover (H, W) and cut the middle: no stretching."""
    h, w = size
    scale = max(h / image.shape[0], w / image.shape[1])
    big = cv2.resize(image, (max(w, round(image.shape[1] * scale)),
                             max(h, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return big[y:y + h, x:x + w]


def real_photos(count: int) -> tuple[list[np.ndarray], str]:
    """``count`` photos (BGR): Imagenette's first photo of each listed class, else
    scikit-image's bundled photos."""
    tar_path = SHARED / "imagenette-val.tar"
    if tar_path.is_file():
        photos = []
        with tarfile.open(tar_path) as tar:
            names = sorted(m.name for m in tar.getmembers() if m.isfile())
            for cls in PHOTO_CLASSES[:count]:
                name = next(n for n in names if f"/{cls}/" in n)
                data = np.frombuffer(tar.extractfile(name).read(), np.uint8)
                photos.append(cv2.imdecode(data, cv2.IMREAD_COLOR))
        return photos, f"Imagenette photos from {tar_path}"
    import skimage.data
    names = ("chelsea", "astronaut", "coffee", "rocket", "motorcycle_left", "cat")
    photos = [cv2.cvtColor(np.asarray(getattr(skimage.data, n)())[..., :3], cv2.COLOR_RGB2BGR)
              for n in names[:count]]
    return photos, "scikit-image's bundled photos (no ../shared/data)"


def background_frames(index: int, frames: int, size: tuple[int, int], step: int = 2
                      ) -> tuple[list[np.ndarray], str]:
    """``frames`` consecutive frames (every ``step``-th) of a real video, cut to ``size``; else
    a pan over a bundled photo."""
    path = SHARED / "videos" / VIDEOS[index % len(VIDEOS)]
    if path.is_file():
        cap = cv2.VideoCapture(str(path))
        out = []
        while len(out) < frames:
            ok, frame = cap.read()
            if not ok:
                break
            if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) % step == 0:
                out.append(_cover(frame, size))
        cap.release()
        if len(out) == frames:
            return out, f"real video {path}"
    import skimage.data
    photo = cv2.cvtColor(np.asarray(skimage.data.coffee()), cv2.COLOR_RGB2BGR)
    big = _cover(photo, (size[0] * 5 // 4, size[1] * 5 // 4))
    dy, dx = big.shape[0] - size[0], big.shape[1] - size[1]
    return [big[int(dy * t):int(dy * t) + size[0], int(dx * t):int(dx * t) + size[1]]
            for t in np.linspace(0, 1, frames)], "a pan over a bundled photo (no real video)"


def sprite(photo: np.ndarray, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(texture (h, w, 3) uint8, opacity (h, w) float32): an ellipse of the photo, feathered."""
    h, w = hw
    texture = _cover(photo, (h, w))
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (w // 2, h // 2), (max(1, w // 2 - 2), max(1, h // 2 - 2)), 0, 0, 360,
                1.0, -1, cv2.LINE_AA)
    return texture, cv2.GaussianBlur(alpha, (0, 0), max(0.8, min(h, w) / 80))


def compose(background: np.ndarray, objects: list[tuple[np.ndarray, np.ndarray]],
            centres: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Draw the sprites back to front at their centres (pixels) -> (frame, ids)."""
    frame = background.astype(np.float32)
    ids = np.zeros(background.shape[:2], np.uint8)
    H, W = ids.shape
    for i, ((texture, alpha), (cx, cy)) in enumerate(zip(objects, centres), start=1):
        h, w = alpha.shape
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        fx0, fy0, fx1, fy1 = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
        if fx0 >= fx1 or fy0 >= fy1:
            continue                                       # wholly off-frame
        a = alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0, None]
        t = texture[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0].astype(np.float32)
        region = frame[fy0:fy1, fx0:fx1]
        frame[fy0:fy1, fx0:fx1] = region * (1 - a) + t * a
        ids[fy0:fy1, fx0:fx1][a[:, :, 0] >= 0.5] = i
    return np.clip(frame + 0.5, 0, 255).astype(np.uint8), ids


def make_sequence(out: Path, name: str, index: int, scenario: str, size: tuple[int, int],
                  frames: int, photos: list[np.ndarray]) -> str:
    from dino_runtime.tracking.palette import encode_palette_png
    backgrounds, origin = background_frames(index, frames, size)
    motions = SCENARIOS[scenario]
    H, W = size
    sprites = [sprite(photos[m.photo % len(photos)], (int(m.size[0] * H), int(m.size[1] * W)))
               for m in motions]
    images = out / "JPEGImages" / "480p" / name
    annotations = out / "Annotations" / "480p" / name
    images.mkdir(parents=True, exist_ok=True)
    annotations.mkdir(parents=True, exist_ok=True)
    for f, background in enumerate(backgrounds):
        t = f / max(1, frames - 1)
        centres = [(m.centre(t)[0] * W, m.centre(t)[1] * H) for m in motions]
        frame, ids = compose(background, sprites, centres)
        cv2.imwrite(str(images / f"{f:05d}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        (annotations / f"{f:05d}.png").write_bytes(encode_palette_png(ids))
    return origin


def make_set(out: str | Path, size: tuple[int, int] = (480, 854), frames: int = 25,
             scenarios: tuple[str, ...] = tuple(SCENARIOS)) -> list[str]:
    """Write the set into ``out``; returns one line per sequence saying what it is made of."""
    out = Path(out)
    photos, photo_origin = real_photos(6)
    names, lines = [], []
    for i, scenario in enumerate(scenarios):
        name = f"{scenario}-{i}"
        origin = make_sequence(out, name, i, scenario, size, frames, photos)
        names.append(name)
        lines.append(f"{name}: {frames} frames {size[1]}x{size[0]}, {len(SCENARIOS[scenario])} "
                     f"objects ({scenario}) over {origin}; objects from {photo_origin}")
    for year in ("2017", "2016"):
        (out / "ImageSets" / year).mkdir(parents=True, exist_ok=True)
        (out / "ImageSets" / year / "val.txt").write_text("".join(f"{n}\n" for n in names))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--size", type=int, nargs=2, default=(480, 854), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    for line in make_set(args.out, tuple(args.size), args.frames, tuple(args.scenarios)):
        print(line)


if __name__ == "__main__":
    main()
