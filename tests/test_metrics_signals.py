"""Metrics and signals on hand-checkable inputs."""

from __future__ import annotations

import numpy as np
import pytest

from mia_robustness.metrics import attack_metrics
from mia_robustness.rules import knowledge_needed, risk_level
from mia_robustness.signals import compute_signals


def test_perfect_and_inverted_attacks():
    truth = np.array([1] * 500 + [0] * 500)
    scores = truth + np.linspace(0, 0.5, 1000)
    perfect = attack_metrics(truth, scores, scores > 0.9)
    assert perfect.auc == 1.0 and perfect.advantage == 1.0
    assert perfect.tpr_at_1pct_fpr == 1.0 and perfect.tpr_at_0_1pct_fpr == 1.0
    assert perfect.accuracy == 1.0 and perfect.member_accuracy == 1.0 and perfect.non_member_accuracy == 1.0
    inverted = attack_metrics(truth, -scores, -scores > 0)
    assert inverted.auc == 0.0 and inverted.tpr_at_1pct_fpr == 0.0


def test_low_fpr_rates_count_only_points_within_the_budget():
    # 1000 non-members; the single highest-scoring non-member outranks every member.
    truth = np.array([1] * 100 + [0] * 1000)
    scores = np.concatenate([np.linspace(0.5, 0.9, 100), [0.95], np.linspace(0.0, 0.4, 999)])
    metrics = attack_metrics(truth, scores, scores > 0.45)
    assert metrics.tpr_at_0_1pct_fpr == 1.0  # one false positive in 1000 is exactly 0.1% FPR
    assert metrics.precision == pytest.approx(100 / 101)
    assert metrics.recall == 1.0


def test_one_hot_outputs_separate_only_through_the_label():
    probabilities = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    labels = np.array([0, 1, 1, 0])  # first two right (members-like), last two wrong
    signals = compute_signals(probabilities, labels)
    names = list(signals.names)
    top1 = signals.features[:, names.index("top_1")]
    assert np.all(top1 == 1.0)  # the label-free signal is the same for everyone
    assert list(signals.scores["confidence"]) == [1.0, 1.0, 0.0, 0.0]
    assert list(signals.correct) == [True, True, False, False]
    assert signals.features[:, names.index("label_1")].tolist() == [0, 1, 1, 0]
    assert np.isfinite(signals.features).all()


def test_modified_entropy_matches_its_definition():
    p = np.array([[0.7, 0.2, 0.1]])
    y = np.array([1])
    expected = -(1 - 0.2) * np.log(0.2) - 0.7 * np.log(0.3) - 0.1 * np.log(0.9)
    assert compute_signals(p, y).scores["neg_modified_entropy"][0] == pytest.approx(-expected)


def test_risk_levels_and_knowledge_needed():
    assert risk_level(0.80, 0.0) == "high" and risk_level(0.52, 0.2) == "high"
    assert (
        risk_level(0.62, 0.0) == "medium"
        and risk_level(0.56, 0.0) == "low"
        and risk_level(0.51, 0.01) == "minimal"
    )

    class Row:
        def __init__(self, proportion, auc):
            self.proportion, self.mean = proportion, {"auc": auc}

    assert knowledge_needed([Row(0.1, 0.60), Row(0.5, 0.69), Row(1.0, 0.70)]) == 0.5
    assert knowledge_needed([Row(0.1, 0.51), Row(1.0, 0.505)]) is None
