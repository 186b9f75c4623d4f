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

from dino_core.errors import UserError
from dino_runtime import RenderOptions, Runtime, SourceSpec, open_source
from dino_runtime.tracking import LabelImageError, Seed, TrackConfig, parse_box, read_labels
from dino_runtime.writers import VideoSink


def track(args: argparse.Namespace) -> None:
    seed = (Seed(box=parse_box(args.box)) if args.box
            else Seed(labels=read_labels(args.mask)[0], origin=args.mask))
    runtime = Runtime(args.model, batch_size=4, threshold=None)
    source = open_source(SourceSpec(path=args.video))
    # RenderOptions() with tracking: the pipeline draws each object in its DAVIS colour in its
    # post-processing stage (r.rendered). The sink writes a temporary name, renamed at the end,
    # so a failed run never leaves a half-written --out.
    with VideoSink(args.out, source.info.fps) as sink:
        for r in runtime.stream(source, render=RenderOptions(), track=TrackConfig(seed=seed)):
            sink.write(r)
            seen = ", ".join(f"object {o.id}: area {o.area} px, box {o.box}, centroid "
                             f"({o.centroid[0]:.0f}, {o.centroid[1]:.0f})"
                             for o in r.track.objects)
            print(f"frame {r.index}: {seen or 'nothing found'}")
    print(f"wrote {args.out}; {runtime.last_summary.format().splitlines()[0]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="an .onnx exported with --outputs cls,attn,patch")
    parser.add_argument("video", help="a video file, a folder of frames or a glob")
    parser.add_argument("--box", help="X,Y,W,H around the object in the first frame")
    parser.add_argument("--mask", help="or the first frame's mask (palette or 0/255 PNG)")
    parser.add_argument("--out", default="tracked.mp4", help=".mp4 or .avi")
    args = parser.parse_args()
    if (args.box is None) == (args.mask is None):
        parser.error("give one of --box and --mask")
    try:
        track(args)
    except (UserError, LabelImageError) as e:  # a bad box, mask, model or video: one line
        raise SystemExit(f"track_object.py: {e}") from None


if __name__ == "__main__":
    main()
