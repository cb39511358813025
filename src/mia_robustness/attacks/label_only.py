"""Label-only attacks: the attacker sees only the predicted label, and fits one cut-off on its known rows.

* ``gap`` (Yeom et al. 2018): right or wrong. A member is guessed when the target predicts its label; one
  query per record.
* ``boundary`` (in the spirit of Choquette-Choo et al. 2021's augmentation attack for tabular data): how
  often the true label survives small perturbations of the record, over ``boundary_queries`` perturbed
  copies and the record itself (``label_robustness.py`` measures it where the model runs).

Both rank rows by one score and cut it where TPR - FPR is largest on the known rows (as the threshold
attack does), then are measured on evaluation rows they never saw.
"""

from __future__ import annotations

import numpy as np

from .base import AttackInput, AttackOutput
from .threshold import best_cut


def label_threshold(
    known_scores: np.ndarray, known_is_member: np.ndarray, scores: np.ndarray, name: str
) -> AttackOutput:
    """A label-only score cut where TPR - FPR is largest on the known rows; ``scores`` are the rows judged."""
    cut = best_cut(known_scores, known_is_member)
    return AttackOutput(scores=scores, predicted_member=scores >= cut, detail=f"{name} >= {cut:.6g}")


def fit_score_gap(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int = 0, device: str = "cpu"
) -> AttackOutput:
    """Members are the rows the target labels right (one query per record)."""
    return label_threshold(
        train.label_scores["correct"], is_member, evaluation.label_scores["correct"], "correct"
    )


def fit_score_boundary(
    train: AttackInput, is_member: np.ndarray, evaluation: AttackInput, *, seed: int = 0, device: str = "cpu"
) -> AttackOutput:
    """Members are the rows whose true label survives perturbation most often."""
    return label_threshold(
        train.label_scores["robustness"], is_member, evaluation.label_scores["robustness"], "robustness"
    )
