"""The naive, official-style video loop: the baseline bench_runtime.py runs as a whole process.

    python benchmarks/naive_loop.py --weights vit.pth --arch vit_small --patch-size 16 \
        --video clip.mp4 --frames 120 --resize 224 --out work/ [--official-code dino/]

It mirrors facebookresearch/dino's ``video_generation.py`` (run, not copied): every frame
written to a JPEG file first; then per frame PIL open + torchvision ToTensor/Resize/Normalize,
a crop to the patch grid, PyTorch fp32 at batch 1 with ``get_last_selfattention``, the official
per-head mass-threshold loop, the head-mean map upsampled (nearest) and written through
``plt.imsave(cmap="inferno")`` as a JPEG; finally the JPEGs are read back into an mp4. With
``--official-code DIR`` the model is the official ``vision_transformer.py`` class from DIR,
holding the same weights (strict load); otherwise this toolkit's ViT.

It imports what the official script imports and nothing of the toolkit's runtime, so its
start-up is what a user of the official script waits for. Prints ``loop_seconds S`` (from the
first frame read to the video written) for the steady-state comparison; the caller times the
whole process.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def build_model(arch: str, patch_size: int, weights: str, official_code: str | None):
    """The ViT with ``weights`` (a plain state dict), in eval mode."""
    if official_code:
        sys.path.insert(0, official_code)
        import vision_transformer as vits
        model = vits.__dict__[arch](patch_size=patch_size, num_classes=0)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from dino_models.archs import resolve_arch
        model = resolve_arch(arch, patch_size).build()
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


def official_style_mask(attn: torch.Tensor, threshold: float, h: int, w: int) -> torch.Tensor:
    """The per-head sort / cumsum / unsort loop of the official scripts (our own writing)."""
    val, idx = torch.sort(attn)
    val = val / val.sum(dim=1, keepdim=True)
    keep = torch.cumsum(val, dim=1) > (1 - threshold)
    unsort = torch.argsort(idx)
    for head in range(attn.shape[0]):
        keep[head] = keep[head][unsort[head]]
    return keep.reshape(-1, h, w)


def extract_frames(video: str, frames: int, folder: Path) -> float:
    """Step 1: every frame to a JPEG file; returns the video's frame rate."""
    cap = cv2.VideoCapture(video)
    fps = cap.get(cv2.CAP_PROP_FPS)
    for i in range(frames):
        ok, image = cap.read()
        if not ok:
            break
        cv2.imwrite(str(folder / f"frame-{i:04}.jpg"), image)
    return fps


def attention_images(model, patch: int, resize: int | tuple[int, int], frames: Path,
                     out: Path) -> None:
    """Step 2: one frame at a time through the model, the attention map written as a JPEG."""
    transform = transforms.Compose([
        transforms.ToTensor(), transforms.Resize(resize),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for path in sorted(glob.glob(str(frames / "*.jpg"))):
        with open(path, "rb") as f:
            img = transform(Image.open(f).convert("RGB"))
        h, w = img.shape[1] - img.shape[1] % patch, img.shape[2] - img.shape[2] % patch
        img = img[:, :h, :w].unsqueeze(0)
        with torch.no_grad():
            attn = model.get_last_selfattention(img)
        heads = attn.shape[1]
        attn = attn[0, :, 0, 1:].reshape(heads, -1)
        official_style_mask(attn, 0.6, h // patch, w // patch)
        maps = torch.nn.functional.interpolate(attn.reshape(1, heads, h // patch, w // patch),
                                               scale_factor=patch, mode="nearest")[0].numpy()
        plt.imsave(fname=str(out / f"attn-{Path(path).name}"), arr=maps.mean(0),
                   cmap="inferno", format="jpg")


def write_video(folder: Path, fps: float, path: Path) -> None:
    """Step 3: the attention JPEGs read back into an mp4."""
    names = sorted(glob.glob(str(folder / "attn-*.jpg")))
    images = [cv2.cvtColor(np.array(Image.open(n).convert("RGB")), cv2.COLOR_RGB2BGR)
              for n in names]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                             (images[0].shape[1], images[0].shape[0]))
    for image in images:
        writer.write(image)
    writer.release()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--resize", type=int, nargs="+", default=[224],
                        help="short side, or H W (torchvision Resize)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--official-code")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = build_model(args.arch, args.patch_size, args.weights, args.official_code)
    out = Path(args.out)
    frame_dir, attn_dir = out / "frames", out / "attention"
    frame_dir.mkdir(parents=True)
    attn_dir.mkdir()
    start = time.perf_counter()
    fps = extract_frames(args.video, args.frames, frame_dir)
    resize = args.resize[0] if len(args.resize) == 1 else tuple(args.resize)
    attention_images(model, args.patch_size, resize, frame_dir, attn_dir)
    write_video(attn_dir, fps, out / "naive.mp4")
    print(f"loop_seconds {time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
