"""benchmarks/feature_probe.py: its measures read what they claim on constructed features."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location(
    "feature_probe", Path(__file__).parents[2] / "benchmarks" / "feature_probe.py")
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


def test_r2_is_one_for_a_linear_code_and_near_zero_for_an_unrelated_one():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(800, generator=g)
    mixed = torch.randn(8, 32, generator=g)
    coded = torch.cat([target[:, None], torch.randn(800, 7, generator=g)], 1) @ mixed
    assert probe.held_out_r2(coded, target) > 0.99
    assert abs(probe.held_out_r2(torch.randn(800, 32, generator=g), target)) < 0.15


def test_effective_rank_counts_the_directions_that_carry_variance():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 64, generator=g))[0][:3]
    three = torch.randn(500, 3, generator=g) @ basis
    assert abs(probe.effective_rank(three) - 3) < 0.3
    assert probe.effective_rank(torch.randn(5000, 64, generator=g)) > 60


def test_removing_a_dominant_nuisance_direction_recovers_the_class_signal():
    # Classes live in 8 weak dimensions; 5 strong dimensions of noise rule cosine similarity.
    # k-NN as is stays near chance; with the top 5 PCs removed it finds the classes.
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(10).repeat(60)
    centres = torch.randn(10, 8, generator=g)
    signal = centres[labels] + 0.3 * torch.randn(600, 8, generator=g)
    features = torch.cat([50 * torch.randn(600, 5, generator=g), signal], 1)
    tr, va = slice(0, 400), slice(400, 600)
    out = probe.knn_variants(features[tr], labels[tr], features[va], labels[va], k=10, classes=10)
    assert out["as is"] < 30
    assert out["top 5 PCs removed"] > 90
