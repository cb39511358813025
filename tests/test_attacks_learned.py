"""attacks/learned.py on synthetic arrays (and one real target's signals): the random forest and gradient
boosting, on distinct rows and on rows merged by count (targets that give few distinct outputs)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from builders import (
    adult_encoded,
    adult_frame,
    at_chance_on_a_constant_signal,
    attack_data,
    fit_and_score,
    needs_adult,
    separates,
    split_fit,
)
from mia_robustness.attacks import AttackInput
from mia_robustness.attacks.base import merge_duplicates
from mia_robustness.attacks.learned import MIN_LEAF_ROWS, _member_tree, fit_score_gb, fit_score_rf
from mia_robustness.signals import compute_signals
from mia_robustness.target import ScoreRequest, score_target

ATTACKS = [fit_score_rf, fit_score_gb]


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_separable_members_are_found(attack):
    output = separates(attack)
    assert ((output.scores >= 0) & (output.scores <= 1)).all()  # probabilities of membership
    np.testing.assert_array_equal(output.predicted_member, output.scores >= 0.5)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_a_constant_signal_gives_chance(attack):
    at_chance_on_a_constant_signal(attack)


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_few_distinct_rows_are_merged_and_still_separate(attack):
    """A tree-like target: 5 distinct signal values per side, so the attack fits on merged rows."""
    inputs, is_member = attack_data(1000)
    rng = np.random.default_rng(1)
    levels = np.where(
        is_member == 1,
        rng.choice([0.6, 0.8, 0.9, 1.0, 1.0], 2000),
        rng.choice([0.2, 0.4, 0.6, 0.8, 1.0], 2000),
    )
    merged = AttackInput(np.column_stack([levels, levels]).astype(np.float32), {}, inputs.label_index)
    output, auc = fit_and_score(attack, merged, is_member)
    assert "distinct rows" in output.detail  # the merged path ran
    assert auc > 0.7, auc  # the ideal ranking of these levels gives about 0.77
    # the score depends on the signal only: equal rows, equal scores
    evaluation = levels[1::2]
    for value in np.unique(evaluation):
        assert np.ptp(output.scores[evaluation == value]) == 0


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__)
def test_the_same_seed_gives_the_same_scores(attack):
    inputs, is_member = attack_data(150)
    first, _ = fit_and_score(attack, inputs, is_member, seed=3)
    again, _ = fit_and_score(attack, inputs, is_member, seed=3)
    np.testing.assert_array_equal(first.scores, again.scores)


@needs_adult
def test_the_merged_forest_grows_the_trees_decision_tree_classifier_grows():
    """``_member_tree`` calls scikit-learn's tree builder directly: on a real forest target's merged signal
    rows and bootstraps as the merged forest draws them, its answers equal the estimator's."""
    frame = adult_frame(1200, seed=5)
    model, members, non_members = split_fit(
        frame, adult_encoded(RandomForestClassifier(30, random_state=0)), label="income"
    )
    scored = score_target(model, members, non_members, ScoreRequest("income", 0), saved_version=None).scored
    signals = compute_signals(scored.outputs, scored.label_index, scored.output_kind, None)
    x, y, counts = merge_duplicates(signals.features, scored.is_member)
    assert len(x) < len(scored.is_member) / 2  # the merged path's inputs
    x = np.ascontiguousarray(x, dtype=np.float32)
    evaluation = np.ascontiguousarray(signals.features, dtype=np.float32)
    n = int(counts.sum())
    rng = np.random.default_rng(0)
    for seed in range(25):
        weights = rng.multinomial(n, counts / n)
        drawn = weights > 0
        expected = (
            DecisionTreeClassifier(
                max_features="sqrt", min_weight_fraction_leaf=MIN_LEAF_ROWS / n, random_state=seed
            )
            .fit(x[drawn], y[drawn], sample_weight=weights[drawn].astype(np.float64))
            .predict_proba(evaluation)[:, 1]
        )
        grown = _member_tree(x[drawn], y[drawn].astype(np.int64), weights[drawn], evaluation, n, seed)
        np.testing.assert_array_equal(grown, expected)
