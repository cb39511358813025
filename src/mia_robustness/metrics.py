"""Attack metrics: how well scores and decisions separate members from non-members.

Threshold-free metrics (ROC AUC, membership advantage, TPR at a low FPR) come from the scores; the
decision metrics (accuracy, precision, recall, F1, member and non-member accuracy) from the attack's own
member / non-member decisions. Nothing here knows which attack made the scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import beta, rankdata
from sklearn.metrics import auc, roc_curve

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
    tpr_at_0_fpr: float
    ppv_at_1pct_fpr: float
    member_accuracy: float
    non_member_accuracy: float

    def to_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


METRIC_NAMES = tuple(AttackMetrics.__dataclass_fields__)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    """Highest TPR among ROC points whose FPR does not exceed ``max_fpr`` (no interpolation)."""
    allowed = fpr <= max_fpr + 1e-12
    return float(tpr[allowed].max()) if allowed.any() else 0.0


def ppv_at_fpr(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float, positives: int, negatives: int) -> float:
    """Share of rows flagged as members that are members, at the ROC point used for TPR at ``max_fpr``."""
    allowed = np.flatnonzero(fpr <= max_fpr + 1e-12)
    best = allowed[np.argmax(tpr[allowed])]
    true_pos, false_pos = tpr[best] * positives, fpr[best] * negatives
    return float(true_pos / (true_pos + false_pos)) if true_pos + false_pos > 0 else 0.0


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
        auc=float(auc(fpr, tpr)),  # from the curve already computed (roc_auc_score would sort again)
        advantage=float(np.max(tpr - fpr)),
        tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, LOW_FPRS[0]),
        tpr_at_0_1pct_fpr=tpr_at_fpr(fpr, tpr, LOW_FPRS[1]),
        tpr_at_0_fpr=tpr_at_fpr(fpr, tpr, 0.0),
        ppv_at_1pct_fpr=ppv_at_fpr(fpr, tpr, LOW_FPRS[0], positives, negatives),
        member_accuracy=float(recall),
        non_member_accuracy=float(true_neg / negatives),
    )


def _clopper_pearson_bounds(
    successes: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise exact binomial bounds (vectorised: the epsilon bound needs one per ROC point)."""
    k, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    alpha = 1 - confidence
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, np.maximum(k, 1), n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, np.maximum(n - k, 1)), 1.0)
    return low, high


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial confidence interval for a rate (``successes`` out of ``trials``)."""
    if trials <= 0:
        return 0.0, 1.0
    low, high = _clopper_pearson_bounds(np.array(successes), np.array(trials), confidence)
    return float(low), float(high)


def bootstrap_auc_interval(
    is_member: np.ndarray,
    scores: np.ndarray,
    rng: np.random.Generator,
    resamples: int = 200,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ROC AUC over evaluation rows (members and non-members resampled apart)."""
    truth = np.asarray(is_member).astype(bool)
    members, non_members = scores[truth], scores[~truth]
    values = []
    for _ in range(resamples):
        m = rng.choice(members, size=len(members))
        n = rng.choice(non_members, size=len(non_members))
        values.append(_auc_from_samples(m, n))
    alpha = 1 - confidence
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def _auc_from_samples(members: np.ndarray, non_members: np.ndarray) -> float:
    """Mann-Whitney AUC: P(member score > non-member score) + half the ties."""
    ranks = rankdata(np.concatenate([members, non_members]))
    rank_sum = ranks[: len(members)].sum()
    return float((rank_sum - len(members) * (len(members) + 1) / 2) / (len(members) * len(non_members)))


@dataclass(frozen=True)
class RateIntervals:
    """95% intervals for the strongest attack on one evaluation set, and the privacy bound they imply."""

    auc: tuple[float, float]
    tpr_at_1pct_fpr: tuple[float, float]
    tpr_at_0_1pct_fpr: tuple[float, float]
    tpr_at_0_fpr: tuple[float, float]
    epsilon_estimate: float | None
    epsilon_lower_bound: float | None


def rate_intervals(is_member: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> RateIntervals:
    """Intervals for the headline attack (bootstrap AUC, Clopper-Pearson TPRs) and an empirical epsilon bound.

    The epsilon bound follows DP auditing practice (Jagielski et al. 2020, Nasr et al. 2021): a mechanism
    that is epsilon-DP (delta = 0) forces TPR <= e^epsilon * FPR at every threshold, so the largest
    log(TPR_low / FPR_high) over the ROC points, with Clopper-Pearson 95% bounds, is an epsilon the model
    does not satisfy.
    """
    truth = np.asarray(is_member).astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    fpr, tpr, _ = roc_curve(truth, scores)
    true_pos, false_pos = np.round(tpr * positives), np.round(fpr * negatives)
    found = true_pos > 0
    with np.errstate(divide="ignore"):
        estimates = np.log(tpr[found & (false_pos > 0)] / fpr[found & (false_pos > 0)])
        low_tpr = _clopper_pearson_bounds(true_pos[found], np.full(found.sum(), positives))[0]
        high_fpr = _clopper_pearson_bounds(false_pos[found], np.full(found.sum(), negatives))[1]
        bounds = np.log(low_tpr / high_fpr)[low_tpr > 0]
    tprs = metric_intervals(truth, scores)
    return RateIntervals(
        auc=bootstrap_auc_interval(truth, scores, rng),
        tpr_at_1pct_fpr=tuple(tprs["tpr_at_1pct_fpr"]),
        tpr_at_0_1pct_fpr=tuple(tprs["tpr_at_0_1pct_fpr"]),
        tpr_at_0_fpr=tuple(tprs["tpr_at_0_fpr"]),
        epsilon_estimate=float(estimates.max()) if len(estimates) else None,
        epsilon_lower_bound=max(float(bounds.max()), 0.0) if len(bounds) else None,
    )


def _subgroup(truth: np.ndarray, scores: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    members, non_members = int(truth[mask].sum()), int((~truth[mask]).sum())
    entry: dict[str, Any] = {
        "members": members,
        "non_members": non_members,
        "auc": None,
        "tpr_at_1pct_fpr": None,
    }
    if members and non_members:
        fpr, tpr, _ = roc_curve(truth[mask], scores[mask])
        entry["auc"] = float(auc(fpr, tpr))
        entry["tpr_at_1pct_fpr"] = tpr_at_fpr(fpr, tpr, LOW_FPRS[0])
    return entry


def per_class_metrics(
    is_member: np.ndarray, scores: np.ndarray, label_index: np.ndarray, classes: np.ndarray
) -> list[dict[str, Any]]:
    """AUC and TPR at 1% FPR of one attack within each true label (``None`` where a side is absent)."""
    truth = np.asarray(is_member).astype(bool)
    return [
        {"label": str(label)} | _subgroup(truth, scores, label_index == position)
        for position, label in enumerate(classes.tolist())
    ]


def correctness_metrics(
    is_member: np.ndarray, scores: np.ndarray, correct: np.ndarray
) -> list[dict[str, Any]]:
    """The same within rows the target classifies correctly and incorrectly.

    Within each group the easy "is it right?" signal is constant, so what remains is what the attack
    learns beyond the target's accuracy gap.
    """
    truth = np.asarray(is_member).astype(bool)
    correct = np.asarray(correct).astype(bool)
    return [
        {"group": "correctly classified"} | _subgroup(truth, scores, correct),
        {"group": "misclassified"} | _subgroup(truth, scores, ~correct),
    ]


def auc_interval(auc: float, positives: int, negatives: int, z: float = 1.959964) -> tuple[float, float]:
    """95% interval of an AUC from its Hanley-McNeil (1982) standard error; cheap enough for every row."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    half = z * float(np.sqrt(max(variance, 0.0)))
    return max(0.0, auc - half), min(1.0, auc + half)


def metric_intervals(is_member: np.ndarray, scores: np.ndarray) -> dict[str, list[float]]:
    """95% intervals of one attack on one evaluation set: AUC (Hanley-McNeil), TPRs (Clopper-Pearson)."""
    return roc_with_intervals(is_member, scores)[2]


def roc_with_intervals(
    is_member: np.ndarray, scores: np.ndarray
) -> tuple[float, float, dict[str, list[float]]]:
    """ROC AUC, TPR at 1% FPR (as :func:`attack_metrics` gives them) and :func:`metric_intervals`, from one
    ROC curve, for a caller that needs no decision metrics."""
    truth = np.asarray(is_member).astype(bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    fpr, tpr, _ = roc_curve(truth, scores)
    area = float(auc(fpr, tpr))
    intervals = {"auc": list(auc_interval(area, positives, negatives))}
    for name, max_fpr in (
        ("tpr_at_1pct_fpr", LOW_FPRS[0]),
        ("tpr_at_0_1pct_fpr", LOW_FPRS[1]),
        ("tpr_at_0_fpr", 0.0),
    ):
        found = int(round(tpr_at_fpr(fpr, tpr, max_fpr) * positives))
        intervals[name] = list(clopper_pearson(found, positives))
    return area, tpr_at_fpr(fpr, tpr, LOW_FPRS[0]), intervals


def roc_points(
    is_member: np.ndarray, scores: np.ndarray, max_points: int = 200
) -> tuple[list[float], list[float]]:
    """ROC curve thinned to at most ``max_points`` points, spaced evenly in log FPR (for log-log charts)."""
    fpr, tpr, _ = roc_curve(np.asarray(is_member).astype(bool), scores)
    if len(fpr) > max_points:
        targets = np.concatenate([[0.0], np.logspace(-4, 0, max_points - 1)])
        keep = np.unique(np.clip(np.searchsorted(fpr, targets, side="right") - 1, 0, len(fpr) - 1))
        fpr, tpr = fpr[keep], tpr[keep]
    return [round(float(v), 6) for v in fpr], [round(float(v), 6) for v in tpr]
