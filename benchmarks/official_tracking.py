"""The official DINO video segmentation run on the CPU, as a new user would: the baseline that
bench_tracking.py times as a whole process.

    python benchmarks/official_tracking.py --official-code /tmp/dino_ref --weights vits16.pth \
        --data-path DAVIS/ --output-dir out/ [--arch vit_small --patch-size 16]

It runs facebookresearch/dino's ``eval_video_segmentation.py`` (imported from a checkout, not
copied) the way its ``__main__`` does: the official ViT with the weights, each sequence of
``ImageSets/2017/val.txt`` through ``eval_video_tracking_davis`` with the official defaults
(7 last frames, neighbourhood 12, top 5). Only what keeps it off CUDA and off the network
differs: ``.cuda()`` returns the tensor or module itself, and the palette (the official script
downloads UVC's ``palette.txt``) is DAVIS's colour map, computed here. Prints
``loop_seconds S`` (first sequence read to last mask written).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch


def voc_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC / DAVIS colour map."""
    ids = np.arange(256)
    palette = np.zeros((256, 3), np.int64)
    for shift in range(8):
        for channel in range(3):
            palette[:, channel] |= ((ids >> (3 * shift + channel)) & 1) << (7 - shift)
    return palette.astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--official-code", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--data-path", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--n-last-frames", type=int, default=7)
    parser.add_argument("--size-mask-neighborhood", type=int, default=12)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, args.official_code)
    torch.Tensor.cuda = lambda self, *a, **k: self          # .cuda() removed
    torch.nn.Module.cuda = lambda self, *a, **k: self
    import eval_video_segmentation as evs
    import vision_transformer as vits
    official = argparse.Namespace(n_last_frames=args.n_last_frames,
                                  size_mask_neighborhood=args.size_mask_neighborhood,
                                  topk=args.topk, patch_size=args.patch_size,
                                  output_dir=args.output_dir)
    evs.args = official            # restrict_neighborhood reads the module's global args
    model = vits.__dict__[args.arch](patch_size=args.patch_size, num_classes=0)
    model.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    for param in model.parameters():
        param.requires_grad = False
    model.eval()
    palette = voc_palette()
    start = time.perf_counter()
    with open(os.path.join(args.data_path, "ImageSets/2017/val.txt")) as f:
        videos = [line.strip() for line in f if line.strip()]
    for video_name in videos:
        video_dir = os.path.join(args.data_path, "JPEGImages/480p/", video_name)
        frame_list = evs.read_frame_list(video_dir)
        seg_path = frame_list[0].replace("JPEGImages", "Annotations").replace("jpg", "png")
        first_seg, seg_ori = evs.read_seg(seg_path, args.patch_size)
        evs.eval_video_tracking_davis(official, model, frame_list, video_dir, first_seg,
                                      seg_ori, palette)
    print(f"loop_seconds {time.perf_counter() - start:.3f}")


if __name__ == "__main__":
    main()
