"""The summary's rules: how figures become a risk level, a robustness score and a knowledge level.

One source for the code that judges (``assemble.py``) and the code that explains the judgement to a reader
(the HTML page's "how to read this report" box); the README states the same rules in words, and a test
holds the three together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

# Risk levels from the strongest attack, checked in this order: ``(level, AUC floor, TPR at 1% FPR floor)``.
# An attack is judged by both its ROC AUC and its true-positive rate at 1% false positives: the second
# catches attacks that are confident about a few records, which AUC averages away.
RISK_RULES = (
    ("high", 0.70, 0.10),
    ("medium", 0.60, 0.05),
    ("low", 0.55, 0.02),
)
BELOW_RULES = "minimal"
# Knowledge needed: the smallest proportion that gives this share of the full-knowledge attack's lift over
# chance (AUC - 0.5) ...
KNOWLEDGE_SHARE = 0.95
# ... unless that lift is at most this much AUC, i.e. no knowledge level gives a real attack.
CHANCE_MARGIN = 0.02


class MeasuredRow(Protocol):
    """What the knowledge rule reads of a result row (``report.ResultRow`` has it)."""

    proportion: float
    mean: Mapping[str, float]


def risk_level(auc: float, tpr_at_1pct: float) -> str:
    """``high`` / ``medium`` / ``low`` by :data:`RISK_RULES` (either floor reached), else ``minimal``."""
    for level, auc_floor, tpr_floor in RISK_RULES:
        if auc >= auc_floor or tpr_at_1pct >= tpr_floor:
            return level
    return BELOW_RULES


def robustness_score(largest_advantage: float) -> int:
    """100 x (1 - the largest membership advantage of any attack), the advantage clipped to [0, 1]."""
    return int(round(100 * (1 - min(max(largest_advantage, 0.0), 1.0))))


def knowledge_needed(rows: Sequence[MeasuredRow]) -> float | None:
    """Smallest proportion at which an attack model reaches 95% of its full-knowledge lift over chance.

    ``rows`` are one attack model's rows. The lift is AUC - 0.5 (AUC itself would make any attack near
    chance look "95% there" at once); ``None`` when the full-knowledge attack is within
    :data:`CHANCE_MARGIN` of chance, i.e. no knowledge level gives a real attack.
    """
    ordered = sorted(rows, key=lambda r: r.proportion)
    full_lift = ordered[-1].mean["auc"] - 0.5
    if full_lift <= CHANCE_MARGIN:
        return None
    for row in ordered:
        if row.mean["auc"] - 0.5 >= KNOWLEDGE_SHARE * full_lift:
            return row.proportion
    return ordered[-1].proportion
