"""Weighted k-NN: the official voting rule, and dino-eval knn on a tiny labelled set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dino_core.cli import run
from dino_train.cli import eval_group
from dino_train.knn import knn_classify


def official_rule(train_f, train_l, test_f, test_l, k, T, num_classes):
    """The voting of the official eval_knn.knn_classifier, written out for one chunk."""
    sim = test_f @ train_f.T
    dist, idx = sim.topk(k, largest=True, sorted=True)
    one_hot = torch.zeros(len(test_l) * k, num_classes)
    one_hot.scatter_(1, train_l[idx].view(-1, 1), 1)
    probs = (one_hot.view(len(test_l), k, num_classes) * dist.div(T).exp().view(-1, k, 1)).sum(1)
    _, pred = probs.sort(1, True)
    correct = pred.eq(test_l.view(-1, 1))
    return (100.0 * correct[:, :1].sum().item() / len(test_l),
            100.0 * correct[:, :min(5, k)].sum().item() / len(test_l))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_knn_classify_matches_official_rule(k):
    torch.manual_seed(0)
    centers = torch.randn(7, 16)
    train_l, test_l = torch.randint(0, 7, (300,)), torch.randint(0, 7, (120,))
    train_f = F.normalize(centers[train_l] + 1.5 * torch.randn(300, 16), dim=1)
    test_f = F.normalize(centers[test_l] + 1.5 * torch.randn(120, 16), dim=1)
    ours = knn_classify(train_f, train_l, test_f, test_l, k, 0.07, 7, chunk=50)
    assert ours == pytest.approx(official_rule(train_f, train_l, test_f, test_l, k, 0.07, 7))
    assert 20 < ours[0] < 100  # a non-trivial case: neither all right nor chance


def _colour_set(root, per_class: int, seed: int):
    """3 classes of noisy red / green / blue images: separable even by a random ViT."""
    rs = np.random.RandomState(seed)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rs.randint(0, 90, (40, 40, 3))
            img[..., c] += 160
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")


def test_dino_eval_knn_end_to_end(tmp_path, capsys, tiny_training_checkpoint):
    _colour_set(tmp_path / "train", 8, 0)
    _colour_set(tmp_path / "val", 4, 1)
    out = tmp_path / "knn.json"
    code = run(eval_group, "dino-eval", ["knn", "--checkpoint", str(tiny_training_checkpoint),
                             "--train-data", str(tmp_path / "train"), "--val-data",
                             str(tmp_path / "val"), "--nb-knn", "3,5", "--image-size", "32",
                             "--num-workers", "0", "--device", "cpu", "--json", str(out)])
    text = capsys.readouterr()
    assert code == 0, text.err
    assert "3-NN classifier result: Top1:" in text.out
    results = json.loads(out.read_text())["results"]
    assert [r["k"] for r in results] == [3, 5]
    assert results[0]["top1"] >= 90.0, results
    code = run(eval_group, "dino-eval", ["knn", "--checkpoint", str(tiny_training_checkpoint),
                             "--train-data", str(tmp_path / "train"), "--val-data",
                             str(tmp_path / "val"), "--nb-knn", "200", "--image-size", "32"])
    assert code == 1 and "more than the 24 training images" in capsys.readouterr().err


def test_periodic_knn_monitoring_is_logged_and_plotted(tmp_path):
    from dino_train.cli import train_command

    from .conftest import TINY_ARGS, losses

    _colour_set(tmp_path / "train", 4, 0)
    _colour_set(tmp_path / "val", 2, 1)
    out = tmp_path / "out"
    code = run(train_command, "dino-train", [*TINY_ARGS, "--data_path", str(tmp_path / "train"),
                                "--output_dir", str(out), "--max-steps", "2",
                                "--knn-train-data", str(tmp_path / "train"),
                                "--knn-val-data", str(tmp_path / "val"), "--knn-every-steps", "2"])
    assert code == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    knn = [r for r in records if "knn_top1" in r]
    assert len(knn) == 1 and knn[0]["step"] == 2 and knn[0]["knn_k"] == 12
    assert knn[0]["knn_top1"] >= 90.0 and sorted(losses(out)) == [1, 2]  # colours separate
    assert (out / "training.png").exists()
