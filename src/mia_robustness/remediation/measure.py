"""The what-if's measuring, in the parent: attacks, utility, the frontier and the recommendation.

Retrained configs (the baseline and each variant) come as raw arrays from the model stage (:mod:`.fits`).
Each of a config's ``M`` models plays the target in turn; the others are its attacker's reference models.
The pool is split once (seeded) into rows the attacker knows (members and non-members alike: thresholds
and RMIA's population come from them) and evaluation rows (every figure). Attack figures are pooled over
the ``M`` target roles; utility over each model's OUT rows (rows it never trained on).

Serving-side options are measured on the target's own answers on the audit's first repeat (its attacker's
known rows and evaluation rows), against the target's own loss-threshold figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..attacks import REGISTRY
from ..metrics import clopper_pearson, roc_with_intervals
from ..report import MemorisingRule, Recommendation, Remediation, Variant, VariantAttack, VariantUtility
from .family import RULES, Plan
from .fits import WhatIfFits, training_masks

Z95 = 1.959964
# A drop in AUC must exceed the intervals' noise and this much to be recommended.
MIN_AUC_DROP = 0.02
LOG_LOSS_FLOOR = 1e-15  # scikit-learn's historical clip: a served 0 for the true label costs 34.5 nats
ROUNDINGS = (1, 2)


@dataclass(frozen=True)
class ServingRows:
    """The target's answers for the serving-side rows: ``probabilities`` ``(n, classes)``, ``label_index``
    and ``is_member`` ``(n,)``; the attacker's ``known`` rows and the ``evaluation`` rows (indices)."""

    probabilities: np.ndarray
    label_index: np.ndarray
    is_member: np.ndarray
    known: np.ndarray
    evaluation: np.ndarray


def _attack(name: str, truth: np.ndarray, scores: np.ndarray) -> VariantAttack:
    """A variant's row for one attack: its threshold-free figures, from one ROC curve (no decisions)."""
    area, tpr_at_1pct, intervals = roc_with_intervals(truth, scores)
    return VariantAttack(
        attack_model=name,
        auc=area,
        tpr_at_1pct_fpr=tpr_at_1pct,
        ci95={"auc": intervals["auc"], "tpr_at_1pct_fpr": intervals["tpr_at_1pct_fpr"]},
    )


def _utility(correct: np.ndarray, label_index: np.ndarray, confidence: np.ndarray | None) -> VariantUtility:
    """Accuracy (with its exact interval), balanced accuracy and log loss over the given rows."""
    hits = int(correct.sum())
    recalls = [correct[label_index == c].mean() for c in np.unique(label_index)]
    log_loss = None
    if confidence is not None:
        log_loss = float(-np.log(np.clip(confidence, LOG_LOSS_FLOOR, 1.0)).mean())
    return VariantUtility(
        accuracy=hits / len(correct),
        balanced_accuracy=float(np.mean(recalls)),
        log_loss=log_loss,
        ci95={"accuracy": list(clopper_pearson(hits, len(correct)))},
    )


def _in_out_means(confidence: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """``(2, n)``: per row, the mean answer of the models (rows of ``(K, n)`` ``confidence``) that trained on
    it and of those that did not; a row with no model on one side takes the other side's mean for it."""
    counts = masks.sum(axis=0), (~masks).sum(axis=0)
    means = [
        np.where(side, confidence, 0.0).sum(axis=0) / np.maximum(count, 1)
        for side, count in zip((masks, ~masks), counts, strict=True)
    ]
    means[0] = np.where(counts[0] > 0, means[0], means[1])
    means[1] = np.where(counts[1] > 0, means[1], means[0])
    return np.vstack(means)


def retrained_figures(
    confidence: np.ndarray,
    correct: np.ndarray,
    label_index: np.ndarray,
    masks: np.ndarray,
    evaluation: np.ndarray,
) -> tuple[VariantUtility, VariantAttack]:
    """One config's utility and strongest attack (loss threshold or RMIA), from its ``(M, n)`` arrays."""
    m, n = masks.shape
    known = np.setdiff1d(np.arange(n), evaluation)
    rmia = REGISTRY["rmia"].function
    pooled: dict[str, list[list[np.ndarray]]] = {"loss_threshold": [[], []], "rmia": [[], []]}
    for k in range(m):
        truth = masks[k]
        others = [j for j in range(m) if j != k]
        scores = {"loss_threshold": confidence[k]}
        if others:
            population = known[~truth[known]]
            # Online RMIA's Pr(x): the others' IN and OUT answers averaged apart, then together. A plain
            # mean over the others would tell membership (balanced halves: a member of model k is in one
            # fewer of them); rmia's online mean of these two rows is exactly that average.
            sides = _in_out_means(confidence[others], masks[others])
            scores["rmia"] = rmia(
                confidence[k], sides, np.ones_like(sides, dtype=bool), population, online=True
            )
        for name, values in scores.items():  # threshold-free figures: no cut is learned on the known rows
            pooled[name][0].append(truth[evaluation])
            pooled[name][1].append(values[evaluation])
    attacks = [
        _attack(name, *(np.concatenate(part) for part in parts)) for name, parts in pooled.items() if parts[0]
    ]
    strongest = max(attacks, key=lambda a: a.auc)  # loss threshold first: it wins a tie
    out = ~masks
    utility = _utility(correct[out], np.broadcast_to(label_index, masks.shape)[out], confidence[out])
    return utility, strongest


def _serving(rows: ServingRows) -> tuple[Variant, list[Variant]]:
    """The target's own loss-threshold row (the comparison point) and the serving-side options."""
    p, labels, truth = rows.probabilities, rows.label_index, rows.is_member
    outside = truth == 0  # the target's utility: on rows it never trained on

    def loss_threshold(probabilities: np.ndarray, name: str) -> tuple[VariantAttack, VariantUtility]:
        confidence = probabilities[np.arange(len(labels)), labels]
        attack = _attack(name, truth[rows.evaluation], confidence[rows.evaluation])
        correct = np.argmax(probabilities, axis=1) == labels
        return attack, _utility(correct[outside], labels[outside], confidence[outside])

    own_attack, own_utility = loss_threshold(p, "loss_threshold")
    target = _row("target", "serving", own_utility, own_attack)
    options = []
    correct = (np.argmax(p, axis=1) == labels).astype(float)
    gap = _attack("gap", truth[rows.evaluation], correct[rows.evaluation])
    labels_only = VariantUtility(own_utility.accuracy, own_utility.balanced_accuracy, None, own_utility.ci95)
    options.append(_row("labels only", "serving", labels_only, gap, against=target))
    for decimals in ROUNDINGS:
        attack, utility = loss_threshold(np.round(p, decimals), "loss_threshold")
        unit = "decimal" if decimals == 1 else "decimals"
        options.append(
            _row(f"probabilities rounded to {decimals} {unit}", "serving", utility, attack, against=target)
        )
    return target, options


def _row(
    name: str,
    kind: str,
    utility: VariantUtility,
    attack: VariantAttack,
    *,
    parameter: str | None = None,
    value: int | float | bool | None = None,
    against: Variant | None = None,
) -> Variant:
    return Variant(
        name=name,
        kind=kind,
        parameter=parameter,
        value=value,
        utility=utility,
        attack=attack,
        auc_change=attack.auc - against.attack.auc if against else 0.0,
        accuracy_change=utility.accuracy - against.utility.accuracy if against else 0.0,
        pareto=False,
    )


def _pareto(rows: Sequence[Variant]) -> list[bool]:
    """Whether each row is on the frontier: no other row has an AUC as low and accuracy as high, one better."""
    flags = []
    for row in rows:
        a, u = row.attack.auc, row.utility.accuracy
        flags.append(
            not any(
                o.attack.auc <= a and o.utility.accuracy >= u and (o.attack.auc < a or o.utility.accuracy > u)
                for o in rows
            )
        )
    return flags


def _standard_error(attack: VariantAttack) -> float:
    low, high = attack.ci95["auc"]
    return (high - low) / (2 * Z95)


def significant_drop(before: Variant, after: Variant) -> bool:
    """Whether ``after``'s AUC is below ``before``'s by more than the intervals' noise (and 0.02)."""
    drop = before.attack.auc - after.attack.auc
    noise = Z95 * math.hypot(_standard_error(before.attack), _standard_error(after.attack))
    return drop > noise and drop >= MIN_AUC_DROP


def _points(change: float) -> str:
    return f"{change * 100:+.1f} points"


def recommend(
    baseline: Variant | None,
    retrained: Sequence[Variant],
    serving: Sequence[Variant],
    target: Variant,
    budget: float,
) -> Recommendation:
    """The retrained variant with the largest significant AUC drop within ``budget`` accuracy points."""
    if baseline is not None:
        floor = baseline.utility.accuracy - budget / 100
        within = [v for v in retrained if v.utility.accuracy >= floor and significant_drop(baseline, v)]
        if within:
            best = max(within, key=lambda v: baseline.attack.auc - v.attack.auc)
            return Recommendation(
                best.name,
                f"On copies of the model retrained the same way, {best.name} cuts the strongest attack's AUC from "
                f"{baseline.attack.auc:.2f} (the recipe as it is) to {best.attack.auc:.2f} ({best.auc_change:+.2f}) "
                f"while accuracy changes by {_points(best.accuracy_change)} "
                f"({baseline.utility.accuracy:.1%} -> {best.utility.accuracy:.1%}).",
            )
    helping = [
        v
        for v in serving
        if v.utility.accuracy >= target.utility.accuracy - budget / 100 and significant_drop(target, v)
    ]
    if baseline is None:
        lead = "No retrained variant was measured"
    else:
        lead = (
            f"No variant of the recipe lowers the attack's AUC beyond the noise within {budget:g} point"
            f"{'s' if budget != 1 else ''} of accuracy: the model is already about as private as its family "
            "allows at this utility"
        )
    if helping:
        best = min(helping, key=lambda v: v.attack.auc)
        return Recommendation(
            None,
            f"{lead}; serving {best.name} lowers the attack's AUC from {target.attack.auc:.2f} (loss threshold "
            f"on the probabilities served now) to {best.attack.auc:.2f} ({_attack_words(best)} attack).",
        )
    return Recommendation(None, f"{lead}; no serving-side option helps measurably either.")


def _attack_words(row: Variant) -> str:
    return "label-only" if row.attack.attack_model == "gap" else "loss-threshold"


def measure_remediation(
    fits: WhatIfFits,
    label_index: np.ndarray,
    serving: ServingRows,
    *,
    seed: int,
    utility_budget: float,
    skipped: str | None,
) -> Remediation:
    """The report's ``remediation`` section from the model stage's answer.

    ``label_index`` ``(n,)`` is the pool's; ``skipped`` is the sentence when the fits did not run (the
    serving-side rows and the rules appear either way).
    """
    plan: Plan = fits.plan
    rules = [MemorisingRule(RULES[rule].parameter, value, RULES[rule].why) for rule, value in plan.rules]
    target, serving_rows = _serving(serving)
    # What was measured: no models and no evaluation rows when the fits did not run.
    models = fits.confidence.shape[1] if skipped is None else 0
    n = len(label_index)
    protocol: dict[str, float | int] = {"models_per_config": models, "rows": n, "evaluation_rows": 0}
    baseline, retrained = None, []
    if skipped is None:
        masks = training_masks(models, n, seed)
        evaluation = evaluation_rows(n, seed)
        protocol["evaluation_rows"] = len(evaluation)
        for config, confidence, correct in zip(plan.configs, fits.confidence, fits.correct, strict=True):
            utility, attack = retrained_figures(confidence, correct, label_index, masks, evaluation)
            row = _row(
                config.name,
                config.kind,
                utility,
                attack,
                parameter=config.parameter,
                value=config.value,
                against=baseline,  # None for the baseline itself (row 0): its changes are 0
            )
            if baseline is None:
                baseline = row
            else:
                retrained.append(row)
        flags = _pareto([baseline, *retrained])
        baseline = _flagged(baseline, flags[0])
        retrained = [_flagged(v, flag) for v, flag in zip(retrained, flags[1:], strict=True)]
    protocol["utility_budget"] = utility_budget
    return Remediation(
        status="ran" if skipped is None else "skipped",
        skipped=skipped,
        estimator_class=plan.estimator_class,
        family=plan.family,
        protocol=protocol,
        baseline=baseline,
        variants=[*retrained, *serving_rows],
        recommended=recommend(baseline, retrained, serving_rows, target, utility_budget),
        rules=rules,
    )


def _flagged(row: Variant, pareto: bool) -> Variant:
    return replace(row, pareto=pareto)


def evaluation_rows(n: int, seed: int) -> np.ndarray:
    """The pool's evaluation rows (half, seeded; sorted); the rest are the rows the attacker knows."""
    return np.sort(np.random.default_rng([seed, 7207]).permutation(n)[: n // 2])


def summary_sentence(remediation: Remediation) -> str | None:
    """The summary's sentence on the what-if: the recommended change and its effect, or that none helps."""
    if remediation.status != "ran":
        return None
    return remediation.recommended.sentence
