"""The robustness report: dataclasses, the summary, and JSON / CSV / text renderings (HTML: ``report_html/``).

Rendering knows nothing of how the figures were made; the summary judges by the rules in ``rules.py``
(risk level, robustness score, knowledge needed), which the README and the HTML page state.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import OptionsError
from .metrics import METRIC_NAMES, RateIntervals
from .report_html import render_html
from .rules import KNOWLEDGE_SHARE, knowledge_needed, risk_level, robustness_score
from .sweep import CellResult

SCHEMA_VERSION = "1.0"
DECIMALS = 6


@dataclass(frozen=True)
class TargetInfo:
    model_class: str
    estimator_class: str
    n_classes: int
    n_features: int
    classes: list[str]
    member_accuracy: float
    non_member_accuracy: float
    accuracy_gap: float
    sklearn_version_saved: str | None
    sklearn_version_runtime: str


@dataclass(frozen=True)
class DataInfo:
    layout: str
    label_column: str
    feature_columns: int
    members_available: int
    non_members_available: int
    rows_per_side: int
    balancing: str
    eval_rows_per_side: int
    attacker_pool_per_side: int


@dataclass(frozen=True)
class ResultRow:
    """One attack model at one knowledge proportion, aggregated over repeats."""

    attack_model: str
    proportion: float
    knowledge: str
    train_rows: int
    eval_rows: int
    repeats: int
    device: str
    mean: dict[str, float]
    std: dict[str, float]
    ci95: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    strongest_attack: str
    strongest_proportion: float
    auc: float
    advantage: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    accuracy: float
    risk_level: str
    robustness_score: int
    knowledge_needed: float | None
    sentences: list[str]
    highest_tpr_at_1pct_fpr: dict[str, Any] = field(default_factory=dict)
    highest_tpr_at_0_1pct_fpr: dict[str, Any] = field(default_factory=dict)
    ci95: dict[str, list[float]] = field(default_factory=dict)
    epsilon_estimate: float | None = None
    epsilon_lower_bound: float | None = None


@dataclass(frozen=True)
class Report:
    target: TargetInfo
    data: DataInfo
    results: list[ResultRow]
    summary: Summary
    settings: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    per_class: list[dict[str, Any]] = field(default_factory=list)
    by_correctness: list[dict[str, Any]] = field(default_factory=list)
    exposed_records: dict[str, Any] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)
    # How the model was contained while it was loaded, scored and refitted (see sandbox/).
    containment: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    tool_version: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; key order is stable."""
        data = asdict(self)
        keys = (
            "schema_version",
            "tool_version",
            "summary",
            "target",
            "data",
            "results",
            "per_class",
            "by_correctness",
            "exposed_records",
            "curves",
            "settings",
            "containment",
            "warnings",
            "timings",
        )
        return _rounded({key: data[key] for key in keys})

    def result(self, attack_model: str, proportion: float) -> ResultRow:
        """The row for ``attack_model`` at ``proportion``."""
        for row in self.results:
            if row.attack_model == attack_model and abs(row.proportion - proportion) < 1e-9:
                return row
        raise KeyError((attack_model, proportion))


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, DECIMALS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def aggregate(cells: Sequence[CellResult], knowledge: dict[str, str]) -> list[ResultRow]:
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
            )
        )
    return rows


def strongest_row(results: Sequence[ResultRow]) -> ResultRow:
    """The attack model and proportion with the highest mean AUC (ties: higher TPR at 1% FPR)."""
    return max(results, key=lambda r: (r.mean["auc"], r.mean["tpr_at_1pct_fpr"]))


def summarise(
    results: Sequence[ResultRow],
    target: TargetInfo,
    descriptions: dict[str, str],
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
    sentences = [
        f"The strongest attack ({descriptions.get(strongest.attack_model, strongest.attack_model)}) tells members "
        f"from non-members with ROC AUC {m['auc']:.2f} (0.50 is guessing, 1.00 is perfect) when the attacker knows "
        f"{strongest.proportion:.0%} of the training rows it could know.",
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
    if swept_strongest is None:
        sentences.append(
            "Attacker knowledge was tested at one level only; give several proportions to see how much it matters."
        )
    elif needed is None:
        sentences.append(
            "No attack that learns from known members did clearly better than guessing at any knowledge level tested."
        )
    else:
        sentences.append(
            f"An attacker who knows {needed:.0%} of the training rows it could know already gets "
            f"{KNOWLEDGE_SHARE:.0%} of the full-knowledge {swept_strongest.attack_model} attack's advantage over "
            f"guessing, so limiting what an attacker knows "
            f"{'protects little' if needed <= 0.3 else 'helps only partly' if needed <= 0.6 else 'helps'}."
        )
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


CSV_LEAD_COLUMNS = (
    "attack_model",
    "proportion",
    "percentage",
    "knowledge",
    "train_rows",
    "eval_rows",
    "repeats",
    "device",
)


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"


def render_csv(report: Report) -> str:
    """One row per attack model and proportion; each metric as ``<name>_mean`` and ``<name>_std``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        list(CSV_LEAD_COLUMNS) + [f"{name}_{stat}" for name in METRIC_NAMES for stat in ("mean", "std")]
    )
    for row in report.results:
        lead = [
            row.attack_model,
            f"{row.proportion:g}",
            f"{row.proportion * 100:g}",
            row.knowledge,
            row.train_rows,
            row.eval_rows,
            row.repeats,
            row.device,
        ]
        figures = [
            f"{round(_stat(row, name, stat), DECIMALS):.6f}"
            for name in METRIC_NAMES
            for stat in ("mean", "std")
        ]
        writer.writerow(lead + figures)
    return buffer.getvalue()


def _stat(row: ResultRow, name: str, stat: str) -> float:
    return (row.mean if stat == "mean" else row.std)[name]


def render_text(report: dict[str, Any]) -> str:
    """A terminal summary from a report dict (as loaded from JSON): the headline and a table per attack."""
    summary = report["summary"]
    lines = [
        f"Membership-inference risk: {summary['risk_level'].upper()}   robustness score: {summary['robustness_score']}/100",
        "",
        *[f"  {sentence}" for sentence in summary["sentences"]],
        "",
        f"{'attack':<15} {'known':>6} {'AUC':>13} {'advantage':>10} {'TPR@1%FPR':>10} {'TPR@0.1%FPR':>12} {'accuracy':>9}",
    ]
    for row in report["results"]:
        mean, std = row["mean"], row["std"]
        lines.append(
            f"{row['attack_model']:<15} {row['proportion']:>6.0%} {mean['auc']:>6.3f} ±{std['auc']:.3f} {mean['advantage']:>10.3f} "
            f"{mean['tpr_at_1pct_fpr']:>10.3f} {mean['tpr_at_0_1pct_fpr']:>12.3f} {mean['accuracy']:>9.3f}"
        )
    return "\n".join(lines) + "\n"


def _render_html(report: Report) -> str:
    return render_html(report.to_dict())


RENDERERS = {"json": render_json, "csv": render_csv, "html": _render_html}


def render(report: Report, fmt: str) -> str:
    """Render ``report`` as ``json``, ``csv`` or ``html`` (one self-contained page with SVG charts)."""
    try:
        return RENDERERS[fmt](report)
    except KeyError:
        raise OptionsError(
            f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}", code="unsupported_format"
        ) from None
