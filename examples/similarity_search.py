"""Frame embeddings to a similarity search: index a video's frames, query with an image.

    python examples/similarity_search.py model.onnx clip.mp4 query.jpg --top 5

Each frame's CLS embedding (L2-normalised) goes into a matrix; the query's nearest frames by
cosine similarity are printed with their timestamps. No torch needed: ONNX Runtime only.
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from dino_runtime import Runtime


def index_video(runtime: Runtime, video: str, max_frames: int | None) -> tuple[np.ndarray, list]:
    """(N, D) normalised embeddings and the (index, timestamp) of each frame."""
    vectors, stamps = [], []
    for result in runtime.stream(video, max_frames=max_frames):
        vectors.append(result.cls)
        stamps.append((result.index, result.timestamp))
    emb = np.stack(vectors).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), stamps


def search(index: np.ndarray, query: np.ndarray, top: int) -> list[tuple[int, float]]:
    """Rows of ``index`` (N, D) nearest to ``query`` (D,), as (row, cosine), best first."""
    q = query / np.linalg.norm(query)
    scores = index @ q
    best = np.argsort(-scores)[:top]
    return [(int(i), float(scores[i])) for i in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help=".onnx (or .engine/.pth) model")
    parser.add_argument("video")
    parser.add_argument("query", help="an image file")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args()

    runtime = Runtime(args.model, threshold=None)
    index, stamps = index_video(runtime, args.video, args.max_frames)
    image = cv2.imread(args.query)
    if image is None:
        raise SystemExit(f"{args.query}: not a readable image")
    query = runtime(image[None]).cls[0]
    for rank, (row, score) in enumerate(search(index, query, args.top), 1):
        frame, t = stamps[row]
        print(f"{rank}. frame {frame} at {t:.2f}s  cosine {score:.4f}")


if __name__ == "__main__":
    main()
