"""Report assembly: the attacks' cell results and the target's answers in, one :class:`Report` out.

The engine calls :func:`assemble_report` once, after every attack has run. It aggregates cells into rows
(mean and standard deviation over repeats), picks the strongest attack, and measures that attack once more
on the first repeat's evaluation rows: intervals, the per-class and by-correctness slices, the most
exposed records and the ROC curves. The summary judges by ``rules.py``. Nothing here runs an attack or
touches the model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sklearn

from .attacks import ATTACK_DESCRIPTIONS, KNOWLEDGE
from .attacks.registry import labels_only_rows
from .metrics import (
    METRIC_NAMES,
    RateIntervals,
    correctness_metrics,
    metric_intervals,
    per_class_metrics,
    rate_intervals,
    roc_points,
)
from .options import AuditOptions
from .records import MemberScores, member_scores
from .report import (
    ClassSlice,
    CorrectnessSlice,
    DataInfo,
    ExposedRecord,
    ExposedRecords,
    Report,
    ResultRow,
    RocCurve,
    Summary,
    TargetInfo,
)
from .rules import KNOWLEDGE_SHARE, knowledge_needed, risk_level, robustness_score
from .signals import Signals
from .sweep import CellResult
from .target import ScoredTarget
from .version import __version__

TOP_EXPOSED_RECORDS = 10
# Seeds the bootstrap of the strongest attack's AUC interval, beside the audit's own seed.
INTERVAL_SEED = 104729


def assemble_report(
    cells: Sequence[CellResult],
    scored: ScoredTarget,
    signals: Signals,
    options: AuditOptions,
    *,
    eval_rows: np.ndarray,
    layout: str,
    device: str,
    notes: Sequence[str],
    containment: Mapping[str, Any],
    timings: Mapping[str, float],
    started: float,
    knowledge: Mapping[str, str] = KNOWLEDGE,
    descriptions: Mapping[str, str] = ATTACK_DESCRIPTIONS,
    tool_version: str = __version__,
) -> Report:
    """The report of one audit.

    Parameters
    ----------
    cells:
        Every attack cell that ran, in plan order (at least one); each holds its scores on its repeat's
        evaluation rows.
    scored:
        The target's answers for the ``n_rows = 2 * rows_per_side`` audited rows (members first).
    signals:
        The per-row signals; ``correct`` (``(n_rows,)`` bool) is whether the target got each row right.
    options:
        The audit's options: reported as ``settings``; ``seed`` seeds the AUC bootstrap.
    eval_rows:
        ``(n_eval,)`` int, the first repeat's evaluation rows (positions in ``scored``), the rows every
        attack's first-repeat scores are on.
    layout:
        The bundle layout (``in-memory`` for an estimator held by the caller).
    device:
        Where the device-using attacks ran, as resolved from ``options.device``.
    notes:
        Warnings the engine adds (attacks it skipped and why).
    containment:
        How the model was contained (from the model stage).
    timings:
        Seconds per stage so far; each attack's summed cell seconds and the ``total`` since ``started``
        (a ``time.perf_counter()`` value) are added.
    knowledge, descriptions:
        Attack model name -> what its attacker needs to know / what it does (for rows and sentences);
        the attack registry's by default.
    tool_version:
        The version the report names; this package's by default.
    """
    results = aggregate(cells, knowledge)
    target = target_info(scored, signals.correct)
    n = scored.rows_per_side
    eval_per_side = cells[0].eval_rows // 2
    data_info = DataInfo(
        layout=layout,
        label_column=scored.label_column,
        feature_columns=scored.n_features,
        members_available=scored.members_available,
        non_members_available=scored.non_members_available,
        rows_per_side=n,
        balancing=scored.balancing,
        eval_rows_per_side=eval_per_side,
        attacker_pool_per_side=n - eval_per_side,
    )
    truth = scored.is_member[eval_rows]
    results = [
        dataclasses.replace(
            row, ci95=metric_intervals(truth, first_cell(cells, row.attack_model, row.proportion).scores)
        )
        for row in results
    ]
    # The headline figures come from the attacks on what the target serves; for a target serving more
    # than labels, the label-only rows are its "labels only" view, reported beside them.
    headline = served_rows(results, scored.output_kind)
    strongest = strongest_row(headline)
    strongest_cell = first_cell(cells, strongest.attack_model, strongest.proportion)
    intervals = rate_intervals(
        truth, strongest_cell.scores, np.random.default_rng([options.seed, INTERVAL_SEED])
    )
    per_class = per_class_metrics(truth, strongest_cell.scores, scored.label_index[eval_rows], scored.classes)
    by_correctness = correctness_metrics(truth, strongest_cell.scores, signals.correct[eval_rows])
    summary = summarise(headline, target, descriptions, intervals)
    summary = dataclasses.replace(
        summary, sentences=summary.sentences + kind_sentences(results, headline, scored.output_kind)
    )
    roc = curves(results, cells, truth)
    # Every attack's scores at its strongest proportion (as the curves), the strongest attack's first.
    in_headline = {r.attack_model for r in headline}
    others = [c for c in roc if c.attack_model != strongest.attack_model and c.attack_model in in_headline]
    records = member_scores(
        {strongest.attack_model: strongest_cell.scores}
        | {c.attack_model: first_cell(cells, c.attack_model, c.proportion).scores for c in others},
        [strongest.proportion] + [c.proportion for c in others],
        truth,
        scored.source_rows[eval_rows],
        scored.classes[scored.label_index[eval_rows]].astype(str),
    )
    exposed = exposed_records(records, strongest.mean)
    timings = dict(timings)
    for attack in dict.fromkeys(c.attack for c in cells):
        timings[f"attack_{attack}_seconds"] = sum(c.seconds for c in cells if c.attack == attack)
    timings["total"] = time.perf_counter() - started
    return Report(
        target=target,
        data=data_info,
        results=results,
        summary=summary,
        settings=options.to_dict(),
        resolved={"device": device},
        timings=timings,
        warnings=audit_warnings(target, data_info) + list(notes),
        tool_version=tool_version,
        per_class=[ClassSlice(**entry) for entry in per_class],
        by_correctness=[CorrectnessSlice(**entry) for entry in by_correctness],
        exposed_records=exposed,
        curves=roc,
        containment=dict(containment),
        records=records,
    )


def aggregate(cells: Sequence[CellResult], knowledge: Mapping[str, str]) -> list[ResultRow]:
    """Mean and standard deviation over repeats, one row per (attack model, proportion), in plan order."""
    groups: dict[tuple[str, float], list[CellResult]] = {}
    for cell in cells:
        groups.setdefault((cell.attack, cell.proportion), []).append(cell)
    rows = []
    for (attack, proportion), members in groups.items():
        values = {name: np.array([getattr(c.metrics, name) for c in members]) for name in METRIC_NAMES}
        rows.append(
            ResultRow(
                attack_model=attack,
                proportion=proportion,
                knowledge=knowledge.get(attack, ""),
                train_rows=members[0].train_rows,
                eval_rows=members[0].eval_rows,
                repeats=len(members),
                device=members[0].device,
                mean={name: float(v.mean()) for name, v in values.items()},
                std={name: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for name, v in values.items()},
                labels_only=attack in labels_only_rows(),
            )
        )
    return rows


def served_rows(results: Sequence[ResultRow], output_kind: str) -> list[ResultRow]:
    """The rows of attacks on what the target serves: all of them for a label-only target, else those that
    read its probabilities or margins (every row when only label-only attacks ran)."""
    served = [r for r in results if not r.labels_only]
    return list(results) if output_kind == "labels" or not served else served


def kind_sentences(
    results: Sequence[ResultRow], headline: Sequence[ResultRow], output_kind: str
) -> list[str]:
    """What the summary says about the target's output kind and its label-only ("labels only") view."""
    sentences = []
    if output_kind == "margins":
        sentences.append(
            "The model gives decision margins, not probabilities: the threshold attack reads the true class's "
            "margin over the best other class, and the learned attacks a softmax scaling of the margins."
        )
    elif output_kind == "labels":
        sentences.append("The model gives only predicted labels, so only the label-only attacks apply.")
    label_rows = [r for r in results if r.labels_only]
    if label_rows and len(headline) < len(results):
        best = strongest_row(label_rows)
        sentences.append(
            f"If the model served only its predicted labels, the strongest label-only attack, "
            f"{best.attack_model}, would tell members from non-members with ROC AUC {best.mean['auc']:.2f} "
            "(the rows marked labels only)."
        )
    return sentences


def strongest_row(results: Sequence[ResultRow]) -> ResultRow:
    """The attack model and proportion with the highest mean AUC (ties: higher TPR at 1% FPR)."""
    return max(results, key=lambda r: (r.mean["auc"], r.mean["tpr_at_1pct_fpr"]))


def summarise(
    results: Sequence[ResultRow],
    target: TargetInfo,
    descriptions: Mapping[str, str],
    intervals: RateIntervals | None = None,
) -> Summary:
    """The headline: the worst case over every attack model and proportion, and plain-language sentences."""
    strongest = strongest_row(results)
    worst_advantage = max(r.mean["advantage"] for r in results)
    precise_1 = max(results, key=lambda r: r.mean["tpr_at_1pct_fpr"])
    precise_01 = max(results, key=lambda r: r.mean["tpr_at_0_1pct_fpr"])
    worst_tpr = precise_1.mean["tpr_at_1pct_fpr"]
    level = risk_level(strongest.mean["auc"], worst_tpr)
    score = robustness_score(worst_advantage)
    # Knowledge needed is read off the strongest attack that was measured at several proportions (the
    # reference-model attacks run at the largest proportion only).
    swept = [
        a
        for a in dict.fromkeys(r.attack_model for r in results)
        if sum(r.attack_model == a for r in results) > 1
    ]
    swept_strongest = strongest_row([r for r in results if r.attack_model in swept]) if swept else None
    needed = (
        knowledge_needed([r for r in results if r.attack_model == swept_strongest.attack_model])
        if swept_strongest
        else None
    )
    m = strongest.mean
    described = descriptions.get(strongest.attack_model)
    sentences = [
        f"The strongest attack, {strongest.attack_model}{f' ({described})' if described else ''}, "
        f"tells members from non-members with ROC AUC {m['auc']:.2f} (0.50 is guessing, 1.00 is perfect) when the "
        f"attacker already knows {_known_share(strongest.proportion)} of the training records it could have seen "
        "(the audit keeps the rest back to test the attack).",
        f"Allowed 1% false positives, the most precise attack ({precise_1.attack_model}) finds "
        f"{worst_tpr:.1%} of members; allowed 0.1%, {precise_01.attack_model} finds "
        f"{precise_01.mean['tpr_at_0_1pct_fpr']:.1%} (guessing would find 1% and 0.1%).",
        f"Membership-inference risk is {level.upper()} (robustness score {score}/100, from the largest "
        f"membership advantage {worst_advantage:.2f} over all attacks)"
        + (
            f"; with 95% confidence the model is not differentially private for any epsilon below "
            f"{intervals.epsilon_lower_bound:.2f}."
            if intervals is not None and intervals.epsilon_lower_bound
            else "."
        ),
    ]
    sentences.append(_knowledge_sentence(strongest.attack_model, swept_strongest, needed))
    sentences.append(
        f"The model is right on {target.member_accuracy:.1%} of its training rows and on {target.non_member_accuracy:.1%} "
        f"of unseen rows (a gap of {target.accuracy_gap:+.1%}); a large gap means overfitting, which these attacks exploit."
    )
    return Summary(
        strongest_attack=strongest.attack_model,
        strongest_proportion=strongest.proportion,
        auc=m["auc"],
        advantage=m["advantage"],
        tpr_at_1pct_fpr=m["tpr_at_1pct_fpr"],
        tpr_at_0_1pct_fpr=m["tpr_at_0_1pct_fpr"],
        accuracy=m["accuracy"],
        risk_level=level,
        robustness_score=score,
        knowledge_needed=needed,
        sentences=sentences,
        highest_tpr_at_1pct_fpr={
            "attack_model": precise_1.attack_model,
            "proportion": precise_1.proportion,
            "value": worst_tpr,
        },
        highest_tpr_at_0_1pct_fpr={
            "attack_model": precise_01.attack_model,
            "proportion": precise_01.proportion,
            "value": precise_01.mean["tpr_at_0_1pct_fpr"],
        },
        ci95={
            "auc": list(intervals.auc),
            "tpr_at_1pct_fpr": list(intervals.tpr_at_1pct_fpr),
            "tpr_at_0_1pct_fpr": list(intervals.tpr_at_0_1pct_fpr),
            "tpr_at_0_fpr": list(intervals.tpr_at_0_fpr),
        }
        if intervals is not None
        else {},
        epsilon_estimate=intervals.epsilon_estimate if intervals is not None else None,
        epsilon_lower_bound=intervals.epsilon_lower_bound if intervals is not None else None,
    )


def _known_share(proportion: float) -> str:
    return "all" if proportion >= 1 else f"{proportion:.0%}"


def _knowledge_sentence(strongest: str, swept: ResultRow | None, needed: float | None) -> str:
    """What limiting the attacker's knowledge buys, naming the attack it was measured on."""
    if swept is None:
        return "Attacker knowledge was tested at one level only; give several proportions to see how much it matters."
    if needed is None:
        return "No attack that learns from known members did clearly better than guessing at any knowledge level tested."
    verdict = "protects little" if needed <= 0.3 else "helps only partly" if needed <= 0.6 else "helps"
    name = swept.attack_model
    lead = (
        f"The {name} attack"
        if name == strongest
        else f"The {strongest} attack ran with full knowledge only; the {name} attack, the strongest run at several knowledge levels,"
    )
    if needed >= 1:
        return (
            f"{lead} gets {KNOWLEDGE_SHARE:.0%} of its full-knowledge lead over guessing only when the attacker knows "
            f"all of those training records, so limiting what an attacker knows {verdict}."
        )
    return (
        f"{lead} already gets {KNOWLEDGE_SHARE:.0%} of its full-knowledge lead over guessing when the attacker knows "
        f"only {needed:.0%} of those training records, so limiting what an attacker knows {verdict}."
    )


def first_cell(cells: Sequence[CellResult], attack: str, proportion: float) -> CellResult:
    """The first repeat's cell of ``attack`` at ``proportion`` (its scores are on ``eval_rows``)."""
    return next(c for c in cells if c.attack == attack and c.proportion == proportion and c.repeat == 0)


def exposed_records(records: MemberScores, mean: Mapping[str, float]) -> ExposedRecords:
    """The :data:`TOP_EXPOSED_RECORDS` members first in ``records`` (the strongest attack's surest, ties
    broken by mean rank over all attacks, then row); ``mean`` is that attack's row mean (for the share
    found at 1% FPR)."""
    top = min(TOP_EXPOSED_RECORDS, len(records.rows))
    return ExposedRecords(
        attack_model=records.attacks[0],
        proportion=records.proportions[0],
        members_evaluated=int(len(records.rows)),
        share_of_members_at_1pct_fpr=mean["tpr_at_1pct_fpr"],
        top=[
            ExposedRecord(
                row=int(records.rows[i]),
                score=float(records.scores[i, 0]),
                mean_rank=float(records.mean_rank[i]),
            )
            for i in range(top)
        ],
        tied_at_top=records.tied_at_top,
    )


def curves(results: Sequence[ResultRow], cells: Sequence[CellResult], truth: np.ndarray) -> list[RocCurve]:
    """ROC points of each attack model's strongest proportion (first repeat); ``truth`` is ``(n_eval,)``."""
    found = []
    for attack in dict.fromkeys(r.attack_model for r in results):
        best = max((r for r in results if r.attack_model == attack), key=lambda r: r.mean["auc"])
        fpr, tpr = roc_points(truth, first_cell(cells, attack, best.proportion).scores)
        found.append(RocCurve(attack_model=attack, proportion=best.proportion, fpr=fpr, tpr=tpr))
    return found


def target_info(scored: ScoredTarget, correct: np.ndarray) -> TargetInfo:
    """What the report says about the model; ``correct`` is ``(n_rows,)`` bool, aligned with ``scored``."""
    member_accuracy = float(correct[scored.is_member == 1].mean())
    non_member_accuracy = float(correct[scored.is_member == 0].mean())
    return TargetInfo(
        model_class=scored.model_class,
        estimator_class=scored.estimator_class,
        n_classes=len(scored.classes),
        n_features=scored.n_features,
        classes=[str(c) for c in scored.classes.tolist()],
        member_accuracy=member_accuracy,
        non_member_accuracy=non_member_accuracy,
        accuracy_gap=member_accuracy - non_member_accuracy,
        sklearn_version_saved=scored.saved_version,
        sklearn_version_runtime=sklearn.__version__,
        output_kind=scored.output_kind,
        outputs_source=scored.outputs_source,
    )


def audit_warnings(target: TargetInfo, data: DataInfo) -> list[str]:
    """What the reader should know before trusting the figures: version mismatch, balancing, small sets."""
    notes = []
    if target.sklearn_version_saved and target.sklearn_version_saved != target.sklearn_version_runtime:
        notes.append(
            f"the model was saved with scikit-learn {target.sklearn_version_saved} and is audited with "
            f"{target.sklearn_version_runtime}; its outputs may differ from production"
        )
    if data.balancing.startswith(("members", "non-members")):
        notes.append(f"tables were balanced: {data.balancing}")
    if data.eval_rows_per_side < 1000:
        notes.append(
            f"the evaluation set has {data.eval_rows_per_side} non-members, so TPR at 0.1% FPR is measured at zero "
            "false positives; it takes at least 1,000 (about 3,400 rows per side) to resolve 0.1%"
        )
    return notes
