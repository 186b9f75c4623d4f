"""dino-eval linear: the probe's features on every backbone surface, its optimisation against a
reference solution, and the command end to end (dino_train.linear)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from sklearn import linear_model

from dino_core.cli import run
from dino_models import build_dinov2
from dino_train.cli import eval_group
from dino_train.linear import (
    LinearConfig,
    accuracy,
    cached_batches,
    default_pooling,
    epoch_order,
    last_blocks,
    probe_features,
    train_probe,
)

from ..conftest import tiny_vit
from .conftest import write_images


def _images(batch: int = 2, side: int = 28) -> torch.Tensor:
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def test_dino_features_are_the_official_expression():
    """eval_linear.py: cat of the last n blocks' x[:, 0]; with avgpool (n = 1),
    cat((out.unsqueeze(-1), x[:, 1:].mean(1).unsqueeze(-1)), -1).reshape(B, -1)."""
    model, x = tiny_vit(depth=3, patch_size=14), _images()
    inter = model.get_intermediate_layers(x, 2)
    torch.testing.assert_close(probe_features(model, x, 2, False),
                               torch.cat([t[:, 0] for t in inter], dim=-1))
    (last,) = model.get_intermediate_layers(x, 1)
    official = torch.cat((last[:, 0].unsqueeze(-1), last[:, 1:].mean(1).unsqueeze(-1)), dim=-1)
    torch.testing.assert_close(probe_features(model, x, 1, True),
                               official.reshape(len(x), -1))
    torch.testing.assert_close(probe_features(model, x, 1, False), model(x))  # [CLS] output
    assert probe_features(model, x, 2, True).shape == (2, 3 * model.embed_dim)


@torch.no_grad()
def test_dinov2_features_leave_the_registers_out():
    model = build_dinov2("vit_small", num_register_tokens=4, depth=2).eval()
    x = _images()
    out = model.forward_features(x)
    ((cls, patches),) = last_blocks(model, x, 1)
    torch.testing.assert_close(cls, out["x_norm_clstoken"])
    torch.testing.assert_close(patches, out["x_norm_patchtokens"])
    assert patches.shape[1] == (28 // 14) ** 2


class V3Surface(nn.Module):
    """DINOv3's get_intermediate_layers signature (n keyword-only; [CLS], 4 storage tokens and
    the patches), wrapped around a DINO ViT: what the dinov3 backbones will present."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = tiny_vit(depth=2, patch_size=14)

    def get_intermediate_layers(self, x, *, n=1, reshape=False, return_class_token=False,
                                return_extra_tokens=False, norm=True):
        outs = self.vit.get_intermediate_layers(x, n)
        storage = [torch.zeros(len(x), 4, o.shape[-1]) for o in outs]
        tokens = [torch.cat((o[:, :1], s, o[:, 1:]), dim=1) for o, s in zip(outs, storage)]
        patches = [t[:, 5:] for t in tokens]
        if return_class_token:
            return tuple(zip(patches, [t[:, 0] for t in tokens]))
        return tuple(patches)


@torch.no_grad()
def test_a_dinov3_style_surface_gives_the_same_features():
    model, x = V3Surface().eval(), _images()
    torch.testing.assert_close(probe_features(model, x, 2, True),
                               probe_features(model.vit, x, 2, True))


def test_official_pooling_by_width_and_training_order():
    assert default_pooling(384) == (4, False) and default_pooling(768) == (1, True)
    # DistributedSampler(shuffle=True, seed=0) on one process, epoch 3
    g = torch.Generator().manual_seed(3)
    assert epoch_order(10, 0, 3) == torch.randperm(10, generator=g).tolist()


def _gaussians(n_per_class: int, centers: np.ndarray, scale: float, seed: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + scale * rng.standard_normal((n_per_class, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per_class)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y)


def test_the_probe_separates_a_linearly_separable_set():
    centers = np.eye(6)[:5] * 6.0  # 5 classes, far apart in 6 dimensions
    train, val = _gaussians(40, centers, 0.5, 0), _gaussians(20, centers, 0.5, 1)
    cfg = LinearConfig(epochs=20, lr=0.5, batch_size=32)
    classifier, history = train_probe(cached_batches(*train, cfg), 6, 5, val, cfg)
    assert history[-1].top1 == 100.0 and history[-1].top5 == 100.0
    assert accuracy(classifier, *train)[0] == 100.0
    assert history[-1].train_loss < history[0].train_loss


def test_the_probe_reaches_the_logistic_regression_optimum():
    """On fixed, overlapping features the unregularised multinomial logistic regression has one
    optimum; scikit-learn's (lbfgs to 1e-10) is the reference. Full-batch SGD with momentum and
    the cosine schedule must end within 0.005 of its probabilities and 1e-4 of its mean loss
    (measured: 5e-4 and 0)."""
    centers = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    (x, y), (xv, yv) = _gaussians(60, centers, 0.6, 2), _gaussians(60, centers, 0.6, 3)
    ref = linear_model.LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(
        x.numpy(), y.numpy())  # C = inf: no penalty, as the probe (no weight decay)
    # full batch (240), so lr 256 per 256 images is 240; validated once, at the end
    cfg = LinearConfig(epochs=1000, lr=256.0, batch_size=len(y), val_freq=1000)
    classifier, _ = train_probe(cached_batches(x, y, cfg), 3, 4, (xv, yv), cfg)
    with torch.no_grad():
        ours = torch.softmax(classifier(xv), dim=-1).numpy()
        loss = nn.functional.cross_entropy(classifier(x), y).item()
    theirs = ref.predict_proba(xv.numpy())
    ref_loss = -np.log(ref.predict_proba(x.numpy())[np.arange(len(y)), y.numpy()]).mean()
    assert np.abs(ours - theirs).max() < 0.005
    assert loss == pytest.approx(ref_loss, abs=1e-4)
    assert accuracy(classifier, xv, yv)[0] == pytest.approx(
        100.0 * (theirs.argmax(1) == yv.numpy()).mean(), abs=1.0)


def test_linear_command_end_to_end(capsys, tmp_path, tiny_training_checkpoint):
    train = write_images(tmp_path / "train", 12, size=(36, 40), classes=3)
    val = write_images(tmp_path / "val", 6, size=(36, 40), seed=1, classes=3)
    common = ["linear", "--checkpoint", str(tiny_training_checkpoint), "--train-data",
              str(train), "--val-data", str(val), "--image-size", "32", "--num-workers", "0",
              "--batch-size", "4"]
    out = tmp_path / "res.json"
    code = run(eval_group, "dino-eval", [*common, "--mode", "cached", "--epochs", "3", "--json",
                                         str(out), "--save-classifier", str(tmp_path / "l.pth")])
    text = capsys.readouterr()
    assert code == 0, text.err
    res = json.loads(out.read_text())
    assert (res["mode"], res["n_last_blocks"], res["avgpool_patchtokens"]) == ("cached", 2, False)
    assert res["feature_dim"] == 2 * 192 and res["train_images"] == 12 and res["val_images"] == 6
    assert res["top5"] is None and 0 <= res["top1"] <= 100  # 3 classes: no top-5
    assert [h["epoch"] for h in res["history"]] == [0, 1, 2]
    assert res["best_top1"] == max(h["top1"] for h in res["history"])
    assert f"Top1: {res['top1']:.2f}" in text.out
    state = torch.load(tmp_path / "l.pth", weights_only=True)["state_dict"]
    assert state["module.linear.weight"].shape == (3, 2 * 192)

    code = run(eval_group, "dino-eval", [*common, "--epochs", "1", "--n-last-blocks", "1",
                                         "--avgpool-patchtokens", "true"])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "augmented, [CLS] of the last 1 block(s) + pooled patches" in text.out

    code = run(eval_group, "dino-eval", [*common, "--n-last-blocks", "3"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--n-last-blocks 3: the backbone has 2 blocks" in err
