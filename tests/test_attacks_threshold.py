"""attacks/threshold.py on synthetic arrays: the best single signal and its cut-off, and one cut-off per class."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from builders import at_chance_on_a_constant_signal, attack_data, fit_and_score, separates
from mia_robustness.attacks import AttackInput
from mia_robustness.attacks.threshold import (
    MIN_ROWS_PER_CLASS_SIDE,
    best_cut,
    best_signal,
    fit_score_class_threshold,
    fit_score_threshold,
)

ATTACKS = [fit_score_threshold, fit_score_class_threshold]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_separable_members_are_found(attack):
    output = separates(attack)
    assert output.detail.startswith("confidence")  # the signal that carries membership, not the noise


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_a_constant_signal_gives_chance(attack):
    at_chance_on_a_constant_signal(attack)


def test_best_signal_and_cut():
    is_member = np.array([1, 1, 1, 0, 0, 0])
    scores = {"b": np.array([3.0, 2, 1, 0, -1, -2]), "a": np.array([3.0, 2, 1, 0, -1, -2]), "c": np.zeros(6)}
    train = AttackInput(np.zeros((6, 1)), scores, np.zeros(6, dtype=int))
    assert best_signal(train, is_member) == "a"  # a tie goes to the first name
    assert best_cut(scores["a"], is_member) == 1.0  # every member at or above it, no non-member
    # a constant signal has no cut that separates anything: the cut lies above every value
    assert best_cut(np.zeros(6), is_member) > 0


def test_class_thresholds_beat_one_global_threshold_when_classes_shift_the_signal():
    """Class 1's rows score 3 higher whatever their membership (Song & Mittal's case for per-class cuts)."""
    inputs, is_member = attack_data(600)
    shifted = inputs.signal_scores["confidence"] + 3.0 * inputs.label_index
    inputs = AttackInput(inputs.features, {"confidence": shifted}, inputs.label_index)
    _, global_auc = fit_and_score(fit_score_threshold, inputs, is_member)
    _, per_class_auc = fit_and_score(fit_score_class_threshold, inputs, is_member)
    assert per_class_auc > global_auc + 0.1, (per_class_auc, global_auc)
    assert per_class_auc > 0.85


def test_a_class_too_small_for_its_own_cut_uses_the_global_one_and_unseen_classes_too():
    inputs, is_member = attack_data()
    train, evaluation = np.arange(0, 600, 2), np.arange(1, 600, 2)
    labels = inputs.label_index.copy()
    rare = train[is_member[train] == 1][: MIN_ROWS_PER_CLASS_SIDE - 1]
    labels[rare] = 2  # 9 known members of class 2, no known non-members
    labels[evaluation[:5]] = 3  # a class the attacker never saw
    inputs = AttackInput(inputs.features, inputs.signal_scores, labels)
    output = fit_score_class_threshold(inputs.take(train), is_member[train], inputs.take(evaluation), seed=0)
    values = inputs.signal_scores["confidence"]
    global_cut = best_cut(values[train], is_member[train])
    for label in (2, 3):
        rows = labels[evaluation] == label
        if rows.any():
            np.testing.assert_allclose(output.scores[rows], values[evaluation][rows] - global_cut)
    assert roc_auc_score(is_member[evaluation], output.scores) > 0.85
