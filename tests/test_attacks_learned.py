"""attacks/learned.py on synthetic arrays: the random forest and gradient boosting, on distinct rows and on
rows merged by count (targets that give few distinct outputs)."""

from __future__ import annotations

import numpy as np
import pytest

from builders import at_chance_on_a_constant_signal, attack_data, fit_and_score, separates
from mia_robustness.attacks import AttackInput
from mia_robustness.attacks.learned import fit_score_gb, fit_score_rf

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
