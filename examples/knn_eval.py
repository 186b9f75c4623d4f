"""k-NN evaluation of a checkpoint on a labelled image folder, as the official eval_knn.py.

    python examples/knn_eval.py dino_deitsmall16_pretrain.pth --train-data imagenette/train \
        --val-data imagenette/val --k 10 20

Features: the backbone's [CLS] token, L2-normalised; each validation image takes the votes of
its k nearest training images weighted by exp(cosine / 0.07). Folders: <root>/<class>/<images>.
"""
from __future__ import annotations

import argparse
import sys

from dino_core.errors import UserError
from dino_models.checkpoint import load_backbone
from dino_train.knn import knn_evaluate, labelled_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="any checkpoint load_backbone accepts, or a hub name")
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--val-data", required=True)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 100, 200])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--max-per-class", type=int, default=None)
    args = parser.parse_args()
    try:
        model, info = load_backbone(args.checkpoint)
        train = labelled_folder(args.train_data, max_per_class=args.max_per_class)
        val = labelled_folder(args.val_data, classes=train.classes,
                              max_per_class=args.max_per_class)
        results = knn_evaluate(model, train, val, ks=tuple(args.k), image_size=args.image_size,
                               num_workers=0)
    except UserError as e:
        sys.exit(f"knn_eval: {e}")
    print(f"{info.short_name} ({info.format}), {len(train.paths)} train / {len(val.paths)} val "
          f"images, {len(train.classes)} classes")
    for r in results:
        print(f"k={r.k:<4d} top-1 {r.top1:6.2f}%  top-5 {r.top5:6.2f}%")


if __name__ == "__main__":
    main()
