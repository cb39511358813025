"""Threshold attack: the best single signal and cut-off, fitted on the attacker's known rows. No model."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .base import AttackInput, AttackOutput


def fit_score_threshold(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int = 0, device: str = "cpu"
) -> AttackOutput:
    """Pick the signal with the highest AUC on the known rows, and the cut-off that maximises TPR - FPR there."""
    best_name, best_auc = None, -1.0
    for name in sorted(train.signal_scores):
        values = train.signal_scores[name]
        auc = roc_auc_score(is_member, values) if len(np.unique(is_member)) == 2 else 0.5
        if auc > best_auc + 1e-12:
            best_name, best_auc = name, auc
    values = train.signal_scores[best_name]
    fpr, tpr, thresholds = roc_curve(is_member, values)
    cut = thresholds[int(np.argmax(tpr - fpr))]
    scores = evaluation.signal_scores[best_name]
    return AttackOutput(scores=scores, predicted_member=scores >= cut, detail=f"{best_name} >= {cut:.6g}")
