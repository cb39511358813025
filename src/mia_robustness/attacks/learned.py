"""Tree-ensemble attack models from scikit-learn: a bounded random forest and histogram gradient boosting.

Both train on the attacker's rows with identical (signal vector, membership) rows merged into one row
weighted by its count when that shrinks the problem (targets that output few distinct probability
vectors, such as trees and forests). The merged fits optimise the same weighted objective as the
unmerged rows; the forest draws each tree's bootstrap over the original rows (a multinomial over the
merged rows), so it is the same estimator, only faster.
"""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

# The tree builder DecisionTreeClassifier.fit uses (see _member_tree); scikit-learn is pinned.
from sklearn.tree._criterion import Gini
from sklearn.tree._splitter import BestSplitter
from sklearn.tree._tree import DepthFirstTreeBuilder, Tree

from .base import AttackInput, AttackOutput, distinct_rows, merge_duplicates

MIN_ROWS_FOR_EARLY_STOPPING = 200
N_TREES = 100
MIN_LEAF_ROWS = 5
# Merge duplicates only when it at least halves the rows; otherwise the plain fit is as fast.
MERGE_WHEN_DISTINCT_SHARE_BELOW = 0.5
# Each tree of the unmerged forest sees a bootstrap of at most this many rows: beyond it more rows per
# tree add time but not strength on a few dozen signal features.
MAX_BOOTSTRAP_ROWS = 20_000
# Past MAX_BOOTSTRAP_ROWS training rows that do not merge (more than half distinct: high-cardinality
# signals, targets with continuous outputs) the forest draws smaller bootstraps and grows larger leaves. This made the rf attack STRONGER
# there, not only cheaper: on the bench's high-cardinality cases (bench/attack_curve.py --rf-variants,
# figures in bench/RESULTS.md) its AUC rose at every proportion while each fit took 3-4x less time; a
# 5-row leaf on 20,000 rows memorises the attacker's rows more than it learns membership. Fewer training
# rows, and merged rows, keep the forest above, so tree targets and small audits keep their figures.
HIGH_CARDINALITY_LEAF_ROWS = 20
HIGH_CARDINALITY_BOOTSTRAP_ROWS = 10_000
# Its trees: 50 cost half of 100 and lost at most 0.0010 AUC against them on the 100k bench case (14k to 70k
# training rows; still 0.008 to 0.018 above the 5-row-leaf forest the sweep used before).
HIGH_CARDINALITY_TREES = 50
GB_VALIDATION_FRACTION = 0.15


def fit_score_rf(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int, device: str = "cpu"
) -> AttackOutput:
    """Random forest; leaves of at least 5 rows keep its scores from memorising the attacker's rows (50 trees
    of 20-row leaves on 10,000-row bootstraps past 20,000 training rows when they do not merge:
    ``HIGH_CARDINALITY_LEAF_ROWS``)."""
    n = len(train)
    distinct_x, distinct_y, counts = merge_duplicates(train.features, is_member)
    if len(distinct_x) <= MERGE_WHEN_DISTINCT_SHARE_BELOW * n:
        scores = _merged_forest(
            distinct_x, distinct_y.astype(np.int64), counts.astype(np.int64), evaluation.features, seed
        )
        return AttackOutput(
            scores=scores, predicted_member=scores >= 0.5, detail=f"{len(distinct_x)} distinct rows"
        )
    many = n > MAX_BOOTSTRAP_ROWS
    model = RandomForestClassifier(
        n_estimators=HIGH_CARDINALITY_TREES if many else N_TREES,
        min_samples_leaf=HIGH_CARDINALITY_LEAF_ROWS if many else MIN_LEAF_ROWS,
        max_features="sqrt",
        n_jobs=1,
        random_state=seed,
        max_samples=min(n, HIGH_CARDINALITY_BOOTSTRAP_ROWS) if many else None,
    ).fit(train.features, is_member)
    scores = model.predict_proba(evaluation.features)[:, 1]
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5)


def _merged_forest(
    x: np.ndarray, y: np.ndarray, counts: np.ndarray, evaluation: np.ndarray, seed: int
) -> np.ndarray:
    """The forest on merged rows: per tree, a bootstrap of the original rows drawn as multinomial counts."""
    rng = np.random.default_rng(seed)
    n = int(counts.sum())
    n_draw = min(n, MAX_BOOTSTRAP_ROWS)
    first, inverse = distinct_rows(evaluation)
    # Inputs typed as the tree code wants them, so the per-tree input checks can be skipped.
    x = np.ascontiguousarray(x, dtype=np.float32)
    distinct_eval = np.ascontiguousarray(evaluation[first], dtype=np.float32)
    total = np.zeros(len(distinct_eval))
    for tree_seed in rng.integers(0, 2**31 - 1, size=N_TREES):
        weights = rng.multinomial(n_draw, counts / n)
        drawn = weights > 0
        if len(np.unique(y[drawn])) < 2:  # a one-class bootstrap says its class everywhere
            total += float(y[drawn][0])
            continue
        total += _member_tree(x[drawn], y[drawn], weights[drawn], distinct_eval, n_draw, int(tree_seed))
    return (total / N_TREES)[inverse]


_TWO_CLASSES = np.array([2], dtype=np.intp)


def _member_tree(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, evaluation: np.ndarray, n_draw: int, seed: int
) -> np.ndarray:
    """``(m,)`` the member probability of ``evaluation``'s rows under one tree fitted on ``x`` ``(k, d)``
    float32, ``y`` ``(k,)`` both of 0 / 1, ``weights`` ``(k,)`` its bootstrap counts out of ``n_draw``.

    The tree ``DecisionTreeClassifier(max_features="sqrt", min_weight_fraction_leaf=MIN_LEAF_ROWS / n_draw,
    random_state=seed).fit(x, y, sample_weight=weights)`` grows, with the same builder, splitter and
    criterion its ``fit`` makes, called here directly: with 100 trees a cell on a few hundred merged rows,
    the estimator's per-fit checks (targets, weights, random state; about 0.7 ms a tree in scikit-learn 1.9)
    were half of the rf attack's time (sample_input: 104 -> 56 ms a forest). tests/test_attacks_learned.py asserts
    equal answers with the estimator's."""
    sample_weight = np.ascontiguousarray(weights, dtype=np.float64)
    min_weight_leaf = (MIN_LEAF_ROWS / n_draw) * np.sum(sample_weight)  # as the estimator computes it
    max_features = max(1, int(np.sqrt(x.shape[1])))
    splitter = BestSplitter(
        Gini(1, _TWO_CLASSES), max_features, 1, min_weight_leaf, np.random.RandomState(seed), None
    )
    tree = Tree(x.shape[1], _TWO_CLASSES, 1)
    builder = DepthFirstTreeBuilder(splitter, 2, 1, min_weight_leaf, np.iinfo(np.int32).max, 0.0)
    targets = np.ascontiguousarray(y.reshape(-1, 1), dtype=np.float64)
    builder.build(tree, np.ascontiguousarray(x), targets, sample_weight, None)
    return tree.predict(evaluation)[:, 1]


def fit_score_gb(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int, device: str = "cpu"
) -> AttackOutput:
    """Histogram gradient boosting with early stopping on a held-out slice of the attacker's rows."""
    n = len(train)
    early_stopping = n >= MIN_ROWS_FOR_EARLY_STOPPING
    params = dict(max_iter=200, learning_rate=0.1, n_iter_no_change=10, random_state=seed)
    distinct_x, _, _ = merge_duplicates(train.features, is_member)
    if len(distinct_x) > MERGE_WHEN_DISTINCT_SHARE_BELOW * n:
        model = HistGradientBoostingClassifier(
            early_stopping=early_stopping, validation_fraction=GB_VALIDATION_FRACTION, **params
        ).fit(train.features, is_member)
        scores = model.predict_proba(evaluation.features)[:, 1]
        return AttackOutput(scores=scores, predicted_member=scores >= 0.5)
    # Merged rows: hold out the validation slice from the original rows first, then merge each part.
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_validation = int(round(GB_VALIDATION_FRACTION * n)) if early_stopping else 0
    fit_rows, validation_rows = order[n_validation:], order[:n_validation]
    fit_x, fit_y, fit_w = merge_duplicates(train.features[fit_rows], is_member[fit_rows])
    # min_samples_leaf counts merged rows, not the rows they stand for; one merged row may stand for
    # many, so the leaf-size floor is left to the hessian (weighted) instead.
    model = HistGradientBoostingClassifier(early_stopping=early_stopping, min_samples_leaf=1, **params)
    if early_stopping:
        val_x, val_y, val_w = merge_duplicates(train.features[validation_rows], is_member[validation_rows])
        model.fit(fit_x, fit_y, sample_weight=fit_w, X_val=val_x, y_val=val_y, sample_weight_val=val_w)
    else:
        model.fit(fit_x, fit_y, sample_weight=fit_w)
    first, inverse = distinct_rows(evaluation.features)
    scores = model.predict_proba(evaluation.features[first])[:, 1][inverse]
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5, detail=f"{len(fit_x)} distinct rows")
