"""Threshold attack: the best single signal and cut-off, fitted on the attacker's known rows. No model."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from .base import AttackInput, AttackOutput

# A class needs this many known rows on each side for a threshold of its own; others share the global one.
MIN_ROWS_PER_CLASS_SIDE = 10


def best_signal(train: AttackInput, is_member: np.ndarray) -> str:
    """The single signal with the highest AUC on the attacker's known rows (ties: first by name)."""
    best_name, best_auc = "", -1.0
    for name in sorted(train.signal_scores):
        auc = roc_auc_score(is_member, train.signal_scores[name])
        if auc > best_auc + 1e-12:
            best_name, best_auc = name, auc
    return best_name


def best_cut(values: np.ndarray, is_member: np.ndarray) -> float:
    """The cut-off on ``values`` that maximises TPR - FPR (Youden's J) on the known rows."""
    fpr, tpr, thresholds = roc_curve(is_member, values)
    cut = thresholds[int(np.argmax(tpr - fpr))]
    return float(np.nextafter(np.max(values), np.inf)) if np.isinf(cut) else float(cut)


def fit_score_threshold(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int = 0, device: str = "cpu"
) -> AttackOutput:
    """Pick the signal with the highest AUC on the known rows, and the cut-off that maximises TPR - FPR there."""
    name = best_signal(train, is_member)
    cut = best_cut(train.signal_scores[name], is_member)
    scores = evaluation.signal_scores[name]
    return AttackOutput(scores=scores, predicted_member=scores >= cut, detail=f"{name} >= {cut:.6g}")


def fit_score_class_threshold(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int = 0, device: str = "cpu"
) -> AttackOutput:
    """Class-dependent thresholds (Song & Mittal 2021): the best signal, with one cut-off per true label.

    Scores are the signal minus its class's cut-off, so rows of different classes rank on one scale.
    """
    name = best_signal(train, is_member)
    values = train.signal_scores[name]
    global_cut = best_cut(values, is_member)
    cuts = np.full(int(max(train.label_index.max(), evaluation.label_index.max())) + 1, global_cut)
    for label in np.unique(train.label_index):
        rows = train.label_index == label
        members, non_members = int(is_member[rows].sum()), int((1 - is_member[rows]).sum())
        if min(members, non_members) >= MIN_ROWS_PER_CLASS_SIDE:
            cuts[label] = best_cut(values[rows], is_member[rows])
    scores = evaluation.signal_scores[name] - cuts[evaluation.label_index]
    return AttackOutput(scores=scores, predicted_member=scores >= 0, detail=f"{name} with per-class cut-offs")
