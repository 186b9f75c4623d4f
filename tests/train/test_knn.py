"""Weighted k-NN: the official voting rule, and dino-eval knn on a tiny labelled set."""
from __future__ import annotations

import json
from pathlib import Path

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


def _knn_args(checkpoint, root, *extra) -> list[str]:
    return ["knn", "--checkpoint", str(checkpoint), "--train-data", str(root / "train"),
            "--val-data", str(root / "val"), "--nb-knn", "3", "--image-size", "32",
            "--num-workers", "0", "--device", "cpu", *extra]


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_json_that_cannot_be_written_is_one_line(tmp_path, capsys, tiny_training_checkpoint,
                                                  where):
    """A folder that is a file is refused before the evaluation; one the system refuses
    (``/proc``, whatever the user's rights) when the result is written."""
    if where == "proc" and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc")
    _colour_set(tmp_path / "train", 4, 0)
    _colour_set(tmp_path / "val", 2, 1)
    (tmp_path / "file.txt").write_text("a file, not a folder")
    json_path = tmp_path / "file.txt" / "knn.json" if where == "under_a_file" \
        else Path("/proc/dino-eval-test/knn.json")
    code = run(eval_group, "dino-eval", _knn_args(tiny_training_checkpoint, tmp_path, "--json",
                                                  str(json_path)))
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1 and err.startswith(f"dino-eval: --json {json_path}: "), err
    assert not json_path.exists()


def test_nan_weights_stop_with_a_reason_instead_of_chance_accuracy(tmp_path, capsys):
    """NaN features vote at random: the k-NN accuracy was chance level and the status 0."""
    from tests.conftest import tiny_vit
    _colour_set(tmp_path / "train", 4, 0)
    _colour_set(tmp_path / "val", 2, 1)
    model = tiny_vit()
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.fill_(float("nan"))
    checkpoint = tmp_path / "nan.pth"
    torch.save(model.state_dict(), checkpoint)
    code = run(eval_group, "dino-eval", _knn_args(checkpoint, tmp_path))
    out = capsys.readouterr()
    assert code == 1, out.out
    assert out.err.strip().splitlines() == [
        f"dino-eval: {checkpoint} (teacher): the backbone's features are NaN or infinite on the "
        "first batch of images: its weights are damaged or come from a diverged run; evaluate "
        "an earlier checkpoint"]
    assert "classifier result" not in out.out


@pytest.mark.parametrize("option, value, message", [
    ("--batch-size", "0", "'--batch-size' / '--batch_size_per_gpu': 0 is not in the range x>=1"),
    ("--num-workers", "-1", "'--num-workers' / '--num_workers': -1 is not in the range x>=0"),
    ("--temperature", "0", "'--temperature': 0.0 is not in the range x>0"),
    ("--max-per-class", "0", "'--max-per-class': 0 is not in the range x>=1"),
    ("--image-size", "17", "--image-size 17: must be a multiple of the patch size 16 (vit_t16)"),
])
def test_eval_option_out_of_range_is_one_line(tmp_path, capsys, tiny_training_checkpoint, option,
                                              value, message):
    _colour_set(tmp_path / "train", 4, 0)
    _colour_set(tmp_path / "val", 2, 1)
    args = _knn_args(tiny_training_checkpoint, tmp_path)
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    code = run(eval_group, "dino-eval", args)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and message in err, err
