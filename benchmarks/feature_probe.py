"""What do a checkpoint's k-NN features encode? A diagnosis for short pretraining runs.

For each checkpoint (teacher backbone, [CLS] features as in ``dino-eval knn``):
  * k-NN top-1 on the features as they are (the official protocol);
  * k-NN top-1 after removing the top 2 / 5 / 10 principal components of the training
    features, and on the 64 leading whitened components: content that is in the features but
    outweighed, in cosine similarity, by a few high-variance directions;
  * R^2 of a linear fit, from the features, of simple image statistics (brightness, contrast,
    saturation, blue-minus-red, edge energy, top-minus-bottom brightness), measured on held-out
    training images: how much of the features is global colour;
  * the effective rank of the features (exp of the entropy of the normalised spectrum);
  * the standard deviations of the patch embeddings (of the training images) and of the
    position embedding.

    python benchmarks/feature_probe.py --train-data D --val-data D --image-size 32 CKPT...
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from dino_core.errors import UserError
from dino_core.fileio import atomic_write_text
from dino_models.checkpoint import load_backbone
from dino_train.knn import eval_transform, extract_features, knn_classify, labelled_folder


def eval_views(paths: list[str], image_size: int) -> torch.Tensor:
    """The normalised eval views (N, 3, S, S) that ``dino-eval knn`` feeds the backbone."""
    from PIL import Image
    t = eval_transform(image_size)
    views = []
    for p in paths:
        try:
            views.append(t(Image.open(p).convert("RGB")))
        except (OSError, ValueError, SyntaxError) as e:  # what PIL raises on bad bytes
            raise UserError(f"{p}: unreadable image ({type(e).__name__})") from None
    return torch.stack(views)


def image_statistics(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image statistics of eval views (N, 3, S, S), each a (N,) tensor."""
    gray = x.mean(1)
    edges = ((gray[:, 1:] - gray[:, :-1]).abs().mean((1, 2))
             + (gray[:, :, 1:] - gray[:, :, :-1]).abs().mean((1, 2)))
    half = gray.shape[1] // 2
    return {
        "brightness": x.mean((1, 2, 3)),
        "contrast": x.std((1, 2, 3)),
        "saturation": (x.max(1).values - x.min(1).values).mean((1, 2)),
        "blue-red": x[:, 2].mean((1, 2)) - x[:, 0].mean((1, 2)),
        "edges": edges,
        "top-bottom": gray[:, :half].mean((1, 2)) - gray[:, half:].mean((1, 2)),
    }


def held_out_r2(features: torch.Tensor, target: torch.Tensor, fit_share: float = 0.75) -> float:
    """R^2 on the last quarter of a least-squares fit on the first three quarters."""
    f = (features - features.mean(0)) / (features.std(0) + 1e-6)
    a = torch.cat([f, torch.ones(len(f), 1)], 1).double()
    y = ((target - target.mean()) / target.std()).double()
    n = int(len(y) * fit_share)
    w = torch.linalg.lstsq(a[:n], y[:n, None]).solution
    residual = (a[n:] @ w)[:, 0] - y[n:]
    return float(1 - residual.pow(2).mean() / y[n:].var())


def effective_rank(features: torch.Tensor) -> float:
    s = torch.linalg.svdvals(features - features.mean(0)).double()
    p = s ** 2 / (s ** 2).sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def patch_embedding_std(model: torch.nn.Module, views: torch.Tensor) -> float:
    return model.patch_embed(views).std().item()


def knn_variants(tr: torch.Tensor, tr_y: torch.Tensor, va: torch.Tensor, va_y: torch.Tensor,
                 k: int, classes: int) -> dict[str, float]:
    def acc(a: torch.Tensor, b: torch.Tensor) -> float:
        return round(knn_classify(F.normalize(a, dim=1), tr_y, F.normalize(b, dim=1), va_y, k,
                                  0.07, classes)[0], 2)
    mu = tr.mean(0)
    _, s, v = torch.linalg.svd(tr - mu, full_matrices=False)
    out = {"as is": acc(tr, va)}
    for drop in (2, 5, 10):
        out[f"top {drop} PCs removed"] = acc((tr - mu) @ v[drop:].T, (va - mu) @ v[drop:].T)
    keep = min(64, len(s))
    whiten = v[:keep].T / s[:keep]
    out["64 PCs whitened"] = acc((tr - mu) @ whiten, (va - mu) @ whiten)
    return out


def probe(args: argparse.Namespace) -> list[dict]:
    """One result row per checkpoint, printed as it is ready."""
    train = labelled_folder(args.train_data, max_per_class=args.max_per_class)
    val = labelled_folder(args.val_data, train.classes, args.val_max_per_class)
    tr_y, va_y = torch.tensor(train.labels), torch.tensor(val.labels)
    views = eval_views(train.paths, args.image_size)
    stats = image_statistics(views)
    # A fixed shuffle so that the held-out quarter of the R^2 fit holds every class.
    order = torch.randperm(len(train.paths), generator=torch.Generator().manual_seed(0))
    results = []
    for ck in args.checkpoints:
        model, _ = load_backbone(ck, checkpoint_key="teacher")
        tr, tr_ok = extract_features(model, train.paths, args.image_size, 256, "cpu", 1)
        va, va_ok = extract_features(model, val.paths, args.image_size, 256, "cpu", 1)
        if not (tr_ok.all() and va_ok.all()):
            raise UserError("unreadable images in the labelled folders")
        row = {"checkpoint": ck,
               "knn_top1": knn_variants(tr, tr_y, va, va_y, args.k, len(train.classes)),
               "r2": {name: round(held_out_r2(tr[order], s[order]), 2)
                      for name, s in stats.items()},
               "effective_rank": round(effective_rank(tr), 1),
               # How much the position embedding can weigh against the patch contents.
               "std": {"patch_embedding": round(patch_embedding_std(model, views[:256]), 3),
                       "position_embedding": round(model.pos_embed[:, 1:].std().item(), 3)}}
        results.append(row)
        print(json.dumps(row), flush=True)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--train-data", required=True)
    p.add_argument("--val-data", required=True)
    p.add_argument("--max-per-class", type=int, default=None)
    p.add_argument("--val-max-per-class", type=int, default=200)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--json", default=None, help="also write the rows here (written whole)")
    args = p.parse_args()
    try:
        results = probe(args)
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted; nothing written")
    if args.json:
        atomic_write_text(json.dumps(results, indent=2) + "\n", args.json)


if __name__ == "__main__":
    main()
