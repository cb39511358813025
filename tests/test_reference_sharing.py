"""One set of reference models serves every repeat when every repeat's attacker holds the same rows.

The plan is checked directly (which rows each set draws from, and that a repeat never borrows a model trained
on rows its attacker does not hold); the audit is checked on a real overfit tree: the shared set gives the
same figures as scoring each repeat on those very models by hand, and LiRA still separates members.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mia_robustness import audit_estimator
from mia_robustness.reference import plan_fit_sets, run_reference_attacks
from mia_robustness.sweep import attacker_rows, split_for_repeat

IS_MEMBER = np.repeat([1, 0], 300)


def test_the_default_plan_is_one_set_over_every_row_each_in_half_of_the_models():
    (fit_set,) = plan_fit_sets(IS_MEMBER, proportion=1.0, repeats=3, eval_fraction=0.3, n_models=4, seed=0)
    assert fit_set.repeats == (0, 1, 2)
    assert np.array_equal(fit_set.pool, np.arange(600))
    assert (fit_set.in_mask.sum(axis=0) == 2).all()
    # membership never enters the halves: members and non-members are IN about equally often per model
    for row in fit_set.in_mask:
        assert abs(row[IS_MEMBER == 1].mean() - row[IS_MEMBER == 0].mean()) < 0.15


@pytest.mark.parametrize(
    ("proportion", "is_member"),
    [(0.5, IS_MEMBER), (1.0, np.repeat([1, 0], [300, 400]))],
    ids=["largest-proportion-below-1", "more-non-members-than-members"],
)
def test_repeats_that_hold_different_rows_get_a_set_each_from_their_own_rows(proportion, is_member):
    fit_sets = plan_fit_sets(
        is_member, proportion=proportion, repeats=3, eval_fraction=0.3, n_models=4, seed=0
    )
    assert [s.repeats for s in fit_sets] == [(0,), (1,), (2,)]
    for repeat, fit_set in enumerate(fit_sets):
        split = split_for_repeat(is_member, 0.3, 0, repeat)
        held = np.concatenate([attacker_rows(split, proportion), split.evaluation])
        assert np.array_equal(fit_set.pool, held)  # as before sharing: the same rows, the same order


def test_an_audit_fits_one_set_and_each_repeat_measures_on_its_own_split(overfit_tree_data):
    model, members, non_members = overfit_tree_data
    options = {"attack_models": "lira", "repeats": 3, "proportions": "1", "reference_models": 4}
    seen: list[tuple[str, int, int]] = []
    report = audit_estimator(model, members, non_members, progress=lambda *call: seen.append(call), **options)
    assert [call for call in seen if call[0] == "reference_models"][-1][1:] == (4, 4)
    online = next(row for row in report.results if row.attack_model == "lira")
    assert online.mean["auc"] > 0.6  # an unpruned tree memorises its rows (chance: 0.5)
    assert online.std["auc"] > 0  # three splits, three different figures from the one set


def test_the_shared_cells_are_each_repeat_scored_on_the_same_models(overfit_tree_data):
    """Fitting per repeat on the shared set's halves gives the very cells the shared stage gives."""
    model, members, non_members = overfit_tree_data
    features = pd.concat([members, non_members], ignore_index=True).drop(columns="label")
    labels = np.concatenate([members["label"].to_numpy(), non_members["label"].to_numpy()])
    is_member = np.repeat([1, 0], [len(members), len(non_members)])
    classes = np.unique(labels)
    label_index = np.searchsorted(classes, labels)
    confidence = model.predict_proba(features.to_numpy())[np.arange(len(labels)), label_index]
    kwargs = dict(attacks=("lira", "rmia"), proportion=1.0, eval_fraction=0.3, n_models=4, seed=3, workers=2)
    shared = run_reference_attacks(
        model, features, labels, label_index, classes, confidence, is_member, repeats=3, **kwargs
    )
    assert [cell.repeat for cell in shared] == [0] * 4 + [1] * 4 + [2] * 4
    assert len({cell.metrics.auc for cell in shared if cell.attack == "lira"}) == 3
    first = run_reference_attacks(
        model, features, labels, label_index, classes, confidence, is_member, repeats=1, **kwargs
    )
    # repeat 0 of a 3-repeat audit and a 1-repeat audit draw the same set and measure on the same split
    assert [c.metrics for c in shared[:4]] == [c.metrics for c in first]
