"""Attention video from a checkpoint: export it to ONNX, then overlay its attention on a video.

    python examples/attention_video.py dino_deitsmall16_pretrain.pth clip.mp4 attention.mp4
    python examples/attention_video.py dino_vits16 clip.mp4 attention.mp4 --size 224 384

The same as ``dino-export CKPT -o m.onnx && dino-run --model m.onnx --source clip.mp4
--show-attention --mask --save attention.mp4 --no-display``, written with the Python APIs.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dino_export import ExportConfig, export_onnx
from dino_runtime import RenderOptions, Runtime, SourceSpec, open_source
from dino_runtime.writers import VideoSink


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="any checkpoint dino-export accepts, or a hub name")
    parser.add_argument("video")
    parser.add_argument("output", help="output .mp4, at the video's resolution and frame rate")
    parser.add_argument("--size", nargs=2, type=int, default=(224, 384), metavar=("H", "W"))
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = export_onnx(args.checkpoint, Path(tmp) / "model.onnx",
                                ExportConfig(img_size=tuple(args.size), dynamic_batch=(1, 4, 8)))
        runtime = Runtime(onnx_path, batch_size=4, threshold=0.6)
        source = open_source(SourceSpec(path=args.video))
        frames = 0
        # Written to a temporary name; renamed to the output when the loop ends (or on Ctrl-C),
        # kept as OUTPUT.partial.mp4 when it fails, so an earlier output is never lost.
        with VideoSink(args.output, source.info.fps) as sink:
            for result in runtime.stream(source, max_frames=args.max_frames,
                                         render=RenderOptions(attention=True, mask=True)):
                sink.write(result)
                frames += 1
    summary = runtime.last_summary
    print(f"{frames} frames -> {args.output}" + (f" ({summary.fps:.1f} frames/s)" if summary else ""))


if __name__ == "__main__":
    main()
