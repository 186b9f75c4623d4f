"""Produce ``tracking_reference.npz``: the official DINO video segmentation on fixed features.

Usage (the official repository is NOT part of this project; fetch it separately):

    git clone https://github.com/facebookresearch/dino /tmp/dino_ref
    python tests/runtime/tracking_vectors/make_tracking_reference.py /tmp/dino_ref

It runs facebookresearch/dino's ``eval_video_segmentation.py`` functions on the CPU (the
official code calls ``.cuda()`` on tensors: ``torch.Tensor.cuda`` returns the tensor itself
here; ``restrict_neighborhood`` reads the module's global ``args``, which is set) on three
clips of ``benchmarks/davis_synthetic.py`` (real video, real photos moved over it; 854x480, the
DAVIS size): ``cross`` (2 objects), ``exit`` (2), ``three`` (3).

Features: the official ``extract_feature`` (``get_intermediate_layers(n=1)``, [CLS] dropped) of
the official ``VisionTransformer`` (random weights, ``torch.manual_seed(0)``, 32 wide, 1 block,
2 heads) on the official ``read_frame`` input, at patch 16 (30x52 patches) for ``cross`` and
``exit`` and patch 32 (15x26) for ``three``. They are L2-normalised and rounded to int8
(x 127) to keep the file small; the official tracking then runs on exactly those stored values
(its ``extract_feature`` returns them), so both implementations see the same features.

Stored per clip: ``features`` (T, h*w, 32) int8, ``first`` (480, 854) uint8 (the first
annotation), ``patch``; per case (clip and official options n_last_frames / size_mask_
neighborhood / topk): ``labels`` (T, 480, 854) uint8, the official output PNGs read back
(frame 0 is the first annotation, as the official script writes it).
"""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
FRAMES = 10
CLIPS = {"cross": 16, "exit": 16, "three": 32}          # scenario -> patch size
# (clip, n_last_frames, size_mask_neighborhood, topk): the defaults on every clip, then others
CASES = [("cross", 7, 12, 5), ("exit", 7, 12, 5), ("three", 7, 12, 5),
         ("cross", 2, 4, 3), ("exit", 3, 1, 8), ("three", 7, 0, 5)]


def official_module(repo: str):
    sys.path.insert(0, repo)
    module = importlib.import_module("eval_video_segmentation")
    torch.Tensor.cuda = lambda self, *args, **kwargs: self   # the official code, on the CPU
    return module, importlib.import_module("vision_transformer")


def make_clips(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT))
    from davis_synthetic import make_set
    for line in make_set(out, (480, 854), FRAMES, tuple(CLIPS)):
        print(line)
    return out


def features_of(evs, vits, frames: list[str], patch: int) -> np.ndarray:
    """(T, h*w, 32) int8: the official features, normalised, x127, rounded."""
    torch.manual_seed(0)
    model = vits.VisionTransformer(patch_size=patch, embed_dim=32, depth=1, num_heads=2,
                                   mlp_ratio=2, qkv_bias=True).eval()
    out = []
    with torch.no_grad():
        for path in frames:
            feat = evs.extract_feature(model, evs.read_frame(path)[0])
            feat = torch.nn.functional.normalize(feat, dim=1, p=2)
            out.append(torch.round(feat * 127).to(torch.int8).numpy())
    return np.stack(out)


def official_labels(evs, frames: list[str], first_png: str, features: np.ndarray, patch: int,
                    n: int, r: int, k: int, palette: np.ndarray) -> np.ndarray:
    """Run the official eval_video_tracking_davis on ``features`` -> (T, H, W) uint8."""
    table = {path: torch.from_numpy(features[i].astype(np.float32)) for i, path in
             enumerate(frames)}
    h, w = 480 // patch, 832 // patch
    with tempfile.TemporaryDirectory() as tmp:
        args = argparse.Namespace(n_last_frames=n, size_mask_neighborhood=r, topk=k,
                                  patch_size=patch, output_dir=tmp)
        evs.args = args
        read, extract = evs.read_frame, evs.extract_feature
        # Frames stand for themselves (their path), and their features are the stored ones.
        evs.read_frame = lambda path, scale_size=[480]: (path, *read(path)[1:])
        evs.extract_feature = (lambda model, frame, return_h_w=False:
                               (table[frame], h, w) if return_h_w else table[frame])
        try:
            first_seg, seg_ori = evs.read_seg(first_png, patch)
            evs.eval_video_tracking_davis(args, None, frames, "clip", first_seg, seg_ori,
                                          palette)
        finally:
            evs.read_frame, evs.extract_feature = read, extract
        outputs = sorted(Path(tmp, "clip").glob("*.png"))
        return np.stack([np.array(Image.open(p)) for p in outputs]).astype(np.uint8)


def main(repo: str) -> None:
    evs, vits = official_module(repo)
    from dino_runtime.tracking import DAVIS_PALETTE
    commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    arrays: dict[str, np.ndarray] = {"official_commit": np.array(commit)}
    with tempfile.TemporaryDirectory() as tmp:
        davis = make_clips(Path(tmp))
        for i, (clip, patch) in enumerate(CLIPS.items()):
            name = f"{clip}-{i}"
            frames = sorted(str(p) for p in (davis / "JPEGImages/480p" / name).glob("*.jpg"))
            first_png = str(davis / "Annotations/480p" / name / "00000.png")
            feats = features_of(evs, vits, frames, patch)
            arrays[f"{clip}/features"], arrays[f"{clip}/patch"] = feats, np.array(patch)
            arrays[f"{clip}/first"] = np.array(Image.open(first_png)).astype(np.uint8)
            for case, n, r, k in CASES:
                if case != clip:
                    continue
                labels = official_labels(evs, frames, first_png, feats, patch, n, r, k,
                                         DAVIS_PALETTE)
                arrays[f"{clip}/n{n}_r{r}_k{k}"] = labels
                print(f"{clip} n={n} r={r} k={k}: {labels.shape}, ids {np.unique(labels)}")
    out = HERE / "tracking_reference.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
