"""The DINOv2/DINOv3 parts view across a folder of images: one PCA basis, the same colour for
the same part.

    dino-export dinov3_vits16 --img-size 448 448 --outputs cls,attn,patch -o v3.onnx
    python examples/pca_parts.py v3.onnx photos/ parts.png --foreground --save-basis parts.npz

Any file with the patch output works: a DINOv2 one (``dino-export dinov2_vits14_reg ...``) or a
DINOv3 ConvNeXt (``dino-export dinov3_convnext_tiny --img-size 448 448``, whose default outputs
are cls and patch; its grid is 14x14 at stride 32). The DINOv3 weights are Meta's, under the
DINOv3 License: see the README's DINOv3 section for where to put them.

The patch tokens of every image (up to 64) are fitted with one PCA; each image is drawn beside
its first three components as RGB, in a contact sheet. With ``--foreground`` the background is
dropped as in the DINOv2 paper (a first PCA's first component thresholded, a second PCA on the
foreground). ``--basis FILE`` reuses a basis saved with ``--save-basis`` (or ``dino-run
--pca-save``), so other folders get the same colours. No torch needed: ONNX Runtime only.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import cv2
import numpy as np

from dino_core.constants import IMAGE_SUFFIXES
from dino_runtime import Runtime
from dino_runtime.pca import PcaBasis, PcaColors


def image_paths(folder: Path, limit: int) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SystemExit(f"{folder}: no images")
    return paths[:limit]


def parts_tiles(runtime: Runtime, colors: PcaColors, images: list[np.ndarray], side: int
                ) -> tuple[list[np.ndarray], float]:
    """One tile per image: the image and its parts colours side by side (side x 2*side), and
    the fraction of patches drawn as background."""
    grid = runtime.metadata.grid
    tiles, background = [], []
    for image in images:
        patch = runtime(image[None]).patch                     # (1, h*w, D)
        parts = colors(patch, grid)[0]                          # (h, w, 3) BGR
        background.append(float((parts.max(-1) == 0).mean()))
        left = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
        right = cv2.resize(parts, (side, side), interpolation=cv2.INTER_NEAREST)
        tiles.append(np.hstack([left, right]))
    return tiles, float(np.mean(background))


def contact_sheet(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    rows = math.ceil(len(tiles) / columns)
    h, w = tiles[0].shape[:2]
    sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".onnx exported with the patch output")
    parser.add_argument("folder", type=Path, help="a folder of images")
    parser.add_argument("out", help="the contact sheet to write (.png, .jpg)")
    parser.add_argument("--foreground", action="store_true", help="drop the background")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="background threshold on the first component (standard deviations)")
    parser.add_argument("--basis", help="a saved basis (.npz) instead of fitting on the folder")
    parser.add_argument("--save-basis", help="write the basis used (.npz)")
    parser.add_argument("--limit", type=int, default=64, help="images to use at most")
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--side", type=int, default=160, help="tile side in pixels")
    args = parser.parse_args()

    runtime = Runtime(args.model, threshold=None)
    paths = image_paths(args.folder, args.limit)
    images = [img for img in (cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths)
              if img is not None]
    if args.basis:
        basis = PcaBasis.load(args.basis, runtime.metadata.embed_dim)
    else:
        basis = runtime.fit_pca(args.folder, foreground=args.foreground,
                                threshold=args.threshold, max_images=args.limit)
    if args.save_basis:
        basis.save(args.save_basis)
    tiles, background = parts_tiles(runtime, PcaColors(basis), images, args.side)
    if not cv2.imwrite(args.out, contact_sheet(tiles, args.columns)):
        raise SystemExit(f"{args.out}: could not write the image")
    source = args.basis or f"{len(images)} images"
    print(f"basis from {source}; {len(images)} images drawn; background "
          f"{100 * background:.0f}% of patches; wrote {args.out}")


if __name__ == "__main__":
    main()
