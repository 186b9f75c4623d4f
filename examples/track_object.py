"""Follow an object through a video from a box on its first frame, in Python (no torch needed).

    dino-export dino_vits16 --img-size 480 832 --outputs cls,attn,patch -o vits16.onnx
    python examples/track_object.py vits16.onnx clip.mp4 --box 120,80,200,150 --out tracked.mp4

Label propagation over the model's patch features (the official DINO video segmentation,
``dino_runtime.tracking``) runs in the pipeline's post-processing stage; each result carries
the tracked object's mask (``r.track.labels``) and its area, box and centroid
(``r.track.objects``). Prints one line per frame and writes the overlay video. With
``--mask first.png`` it starts from a mask instead (a DAVIS palette PNG for several objects).
"""
from __future__ import annotations

import argparse

import cv2

from dino_runtime import Runtime
from dino_runtime.tracking import Seed, TrackConfig, draw_tracking, parse_box, read_labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an .onnx exported with --outputs cls,attn,patch")
    parser.add_argument("video")
    parser.add_argument("--box", help="X,Y,W,H around the object in the first frame")
    parser.add_argument("--mask", help="or the first frame's mask (palette or 0/255 PNG)")
    parser.add_argument("--out", default="tracked.mp4")
    args = parser.parse_args()
    if (args.box is None) == (args.mask is None):
        raise SystemExit("give one of --box and --mask")
    seed = (Seed(box=parse_box(args.box)) if args.box
            else Seed(labels=read_labels(args.mask)[0], origin=args.mask))
    runtime = Runtime(args.model, batch_size=4, threshold=None)
    writer = None
    for r in runtime.stream(args.video, track=TrackConfig(seed=seed)):
        if writer is None:
            h, w = r.frame.image.shape[:2]
            writer = cv2.VideoWriter(args.out, cv2.VideoWriter_fourcc(*"mp4v"), 25, (w, h))
        writer.write(draw_tracking(r.frame.image, r.track))
        seen = ", ".join(f"object {o.id}: area {o.area} px, box {o.box}, centroid "
                         f"({o.centroid[0]:.0f}, {o.centroid[1]:.0f})" for o in r.track.objects)
        print(f"frame {r.index}: {seen or 'nothing found'}")
    if writer is not None:
        writer.release()
    print(f"wrote {args.out}; {runtime.last_summary.format().splitlines()[0]}")


if __name__ == "__main__":
    main()
