"""Attack metrics: how well scores and decisions separate members from non-members.

Threshold-free metrics (ROC AUC, membership advantage, TPR at a low FPR) come from the scores; the
decision metrics (accuracy, precision, recall, F1, member and non-member accuracy) from the attack's own
member / non-member decisions. Nothing here knows which attack made the scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

LOW_FPRS = (0.01, 0.001)


@dataclass(frozen=True)
class AttackMetrics:
    """Figures for one attack on one evaluation set (members = positives)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    auc: float
    advantage: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    member_accuracy: float
    non_member_accuracy: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


METRIC_NAMES = tuple(AttackMetrics.__dataclass_fields__)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """Highest TPR among ROC points whose FPR does not exceed ``max_fpr`` (no interpolation)."""
    allowed = fpr <= max_fpr + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def attack_metrics(is_member: np.ndarray, scores: np.ndarray, predicted_member: np.ndarray) -> AttackMetrics:
    """Compute every metric for one attack.

    Parameters
    ----------
    is_member:
        Truth, 1 for members and 0 for non-members; both must be present.
    scores:
        Membership scores, higher = more likely a member.
    predicted_member:
        The attack's hard decisions (bool or 0/1).
    """
    truth = np.asarray(is_member).astype(bool)
    decisions = np.asarray(predicted_member).astype(bool)
    fpr, tpr, _ = roc_curve(truth, scores)
    true_pos = int((decisions & truth).sum())
    predicted_pos = int(decisions.sum())
    positives = int(truth.sum())
    negatives = int((~truth).sum())
    precision = true_pos / predicted_pos if predicted_pos else 0.0
    recall = true_pos / positives
    true_neg = int((~decisions & ~truth).sum())
    return AttackMetrics(
        accuracy=float((decisions == truth).mean()),
        precision=float(precision),
        recall=float(recall),
        f1=float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        auc=float(roc_auc_score(truth, scores)),
        advantage=float(np.max(tpr - fpr)),
        tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, LOW_FPRS[0]),
        tpr_at_0_1pct_fpr=tpr_at_fpr(fpr, tpr, LOW_FPRS[1]),
        member_accuracy=float(recall),
        non_member_accuracy=float(true_neg / negatives),
    )
