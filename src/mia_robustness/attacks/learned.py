"""Tree-ensemble attack models from scikit-learn: a bounded random forest and histogram gradient boosting."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from .base import AttackInput, AttackOutput

MIN_ROWS_FOR_EARLY_STOPPING = 200


def fit_score_rf(train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int, device: str = "cpu") -> AttackOutput:
    """Random forest; leaves of at least 5 rows keep its scores from memorising the attacker's rows."""
    model = RandomForestClassifier(
        n_estimators=100, min_samples_leaf=5, max_features="sqrt", n_jobs=1, random_state=seed
    ).fit(train.features, is_member)
    scores = model.predict_proba(evaluation.features)[:, 1]
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5)


def fit_score_gb(train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int, device: str = "cpu") -> AttackOutput:
    """Histogram gradient boosting with early stopping on a held-out slice of the attacker's rows."""
    model = HistGradientBoostingClassifier(
        max_iter=200,
        learning_rate=0.1,
        early_stopping=len(train) >= MIN_ROWS_FOR_EARLY_STOPPING,
        validation_fraction=0.15,
        n_iter_no_change=10,
        random_state=seed,
    ).fit(train.features, is_member)
    scores = model.predict_proba(evaluation.features)[:, 1]
    return AttackOutput(scores=scores, predicted_member=scores >= 0.5)
