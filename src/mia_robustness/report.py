"""The robustness report: its dataclasses, and the JSON / CSV / text renderings (HTML: ``report_html/``).

Rendering knows nothing of how the figures were made: ``assemble.py`` builds a :class:`Report` from the
attacks' results, by the rules in ``rules.py``. Every section is a frozen dataclass (as in TensorFlow
Privacy's membership-inference module); :meth:`Report.to_dict` is the JSON document the README describes.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import OptionsError
from .metrics import METRIC_NAMES
from .records import MemberScores, spreadsheet_text
from .report_html import render_html
from .report_html.formatting import as_sentence
from .sanity import DataSanity

# 1.1: values resolved at run time left ``settings`` for ``resolved`` (``settings.resolved_device`` is now
# ``resolved.device``), so ``settings`` holds only options a user can pass back.
# 1.2: a ``remediation`` section (the what-if, after ``curves``) and the options ``what_if`` and
# ``utility_budget`` in ``settings``; nothing else moved.
# 1.3: ``target.output_kind`` (probabilities, margins or labels), ``labels_only`` on each result row (the
# label-only attacks gap and boundary), the option ``boundary_queries`` in ``settings``;
# ``target.outputs_source``: ``measured`` (the audit queried the model) or ``supplied`` (a predictions
# bundle).
SCHEMA_VERSION = "1.3"
DECIMALS = 6


@dataclass(frozen=True)
class TargetInfo:
    """What the report says about the model. ``outputs_source`` is ``measured`` (the audit queried the model) or
    ``supplied`` (the bundle held the model's outputs, not the model: nothing was queried)."""

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
    output_kind: str = "probabilities"
    outputs_source: str = "measured"


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
    sanity: DataSanity = field(default_factory=DataSanity)


@dataclass(frozen=True)
class ResultRow:
    """One attack model at one knowledge proportion, aggregated over repeats.

    ``mean`` and ``std`` map each of ``metrics.METRIC_NAMES`` to its mean and standard deviation over
    ``repeats``; ``ci95`` maps ``auc`` and the TPRs at low FPR to ``[low, high]`` on the first repeat.
    ``labels_only``: the attack sees only predicted labels (gap, boundary): for a target that serves
    probabilities or margins, the risk if it served labels only.
    """

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
    labels_only: bool = False


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
class ClassSlice:
    """The strongest attack on the evaluation rows of one true label.

    ``auc`` and ``tpr_at_1pct_fpr`` are ``None`` when the label has no members or no non-members there.
    """

    label: str
    members: int
    non_members: int
    auc: float | None
    tpr_at_1pct_fpr: float | None


@dataclass(frozen=True)
class CorrectnessSlice:
    """The strongest attack on the evaluation rows the target classifies correctly, or incorrectly.

    ``group`` is ``correctly classified`` or ``misclassified``; ``None`` figures as for :class:`ClassSlice`.
    """

    group: str
    members: int
    non_members: int
    auc: float | None
    tpr_at_1pct_fpr: float | None


@dataclass(frozen=True)
class ExposedRecord:
    """One member: its 0-based data row in the members table, the strongest attack's score for it, and
    its mean rank over all attacks (the tie-break; see ``records.MemberScores``)."""

    row: int
    score: float
    mean_rank: float | None = None


@dataclass(frozen=True)
class ExposedRecords:
    """The members the strongest attack (first repeat) is surest about, highest score first.

    ``tied_at_top`` members share the highest score; ties are ordered by ``mean_rank`` over all attacks,
    then by row number.
    """

    attack_model: str
    proportion: float
    members_evaluated: int
    share_of_members_at_1pct_fpr: float
    top: list[ExposedRecord]
    tied_at_top: int | None = None


@dataclass(frozen=True)
class RocCurve:
    """ROC points of one attack model at its strongest proportion (first repeat), for charts.

    ``fpr`` and ``tpr`` have the same length (at most 200 points, FPR ascending, log-spaced).
    """

    attack_model: str
    proportion: float
    fpr: list[float]
    tpr: list[float]


@dataclass(frozen=True)
class VariantUtility:
    """A config's utility on rows its models never trained on (serving rows: the target on its non-members).

    ``ci95`` holds ``accuracy``'s exact (Clopper-Pearson) interval; ``log_loss`` is ``None`` where the
    variant serves no probabilities (labels only).
    """

    accuracy: float
    balanced_accuracy: float
    log_loss: float | None
    ci95: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class VariantAttack:
    """The strongest attack family on a config (``rmia``, ``loss_threshold`` or ``gap``), on evaluation rows.

    ``ci95`` holds ``auc`` (Hanley-McNeil) and ``tpr_at_1pct_fpr`` (Clopper-Pearson), each ``[low, high]``.
    """

    attack_model: str
    auc: float
    tpr_at_1pct_fpr: float
    ci95: dict[str, list[float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One row of the what-if: the baseline (the target's recipe retrained), a retrained variant that
    changes one ``parameter`` to ``value``, or a serving-side option measured on the target itself.

    ``auc_change`` and ``accuracy_change`` are against the baseline (serving rows: against the target's
    own loss-threshold figures); ``pareto`` marks the frontier of (AUC lower, accuracy higher) over the
    baseline and the retrained variants (serving rows are never on it).
    """

    name: str
    kind: str
    parameter: str | None
    value: int | float | bool | None
    utility: VariantUtility
    attack: VariantAttack
    auc_change: float
    accuracy_change: float
    pareto: bool


@dataclass(frozen=True)
class Recommendation:
    """The recommended variant's name (``None``: none gains beyond the noise), and a sentence saying why."""

    variant: str | None
    sentence: str


@dataclass(frozen=True)
class MemorisingRule:
    """A hyperparameter of the recipe that lets it memorise rows, with a one-line ``why``."""

    parameter: str
    value: int | float | bool | None
    why: str


@dataclass(frozen=True)
class Remediation:
    """The remediation what-if (``remediation.py``): variants of the target's recipe, attacked and scored
    the same way, with the privacy-utility frontier and a recommendation.

    ``status`` is ``ran`` or ``skipped`` (then ``skipped`` says why and how to run it). ``estimator_class``
    and ``family`` come from the what-if's own table (``None`` for a class outside it). ``protocol`` holds
    ``models_per_config``, ``rows``, ``evaluation_rows`` and ``utility_budget`` (accuracy points).
    ``variants`` lists the retrained variants first, then the serving-side options.
    """

    status: str = "skipped"
    skipped: str | None = "the what-if did not run"
    estimator_class: str | None = None
    family: str | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    baseline: Variant | None = None
    variants: list[Variant] = field(default_factory=list)
    recommended: Recommendation = field(default_factory=lambda: Recommendation(None, ""))
    rules: list[MemorisingRule] = field(default_factory=list)


@dataclass(frozen=True)
class Report:
    """The whole report.

    Attributes
    ----------
    settings:
        The options the audit ran with (what the user asked for, defaults filled in): enough to reproduce it.
    resolved:
        Values the audit chose at run time from those options (``device``: where ``nn`` trained).
    containment:
        How the model was contained while it was loaded, scored and refitted (see ``sandbox/``).
    remediation:
        The remediation what-if (``Remediation``): what changing the recipe, or how it is served, does to
        the attack and to accuracy.
    records:
        Every evaluated member's scores by every attack, most exposed first (``records.to_csv()`` is the
        CLI's ``--records`` file); not part of the JSON document. ``None`` when the audit ran no attack.
    """

    target: TargetInfo
    data: DataInfo
    results: list[ResultRow]
    summary: Summary
    settings: dict[str, Any]
    timings: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    per_class: list[ClassSlice] = field(default_factory=list)
    by_correctness: list[CorrectnessSlice] = field(default_factory=list)
    exposed_records: ExposedRecords | None = None
    curves: list[RocCurve] = field(default_factory=list)
    remediation: Remediation = field(default_factory=Remediation)
    resolved: dict[str, Any] = field(default_factory=dict)
    containment: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    tool_version: str = ""
    records: MemberScores | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; key order is stable, floats are rounded to :data:`DECIMALS` places."""
        data = asdict(replace(self, records=None))
        if data["exposed_records"] is None:  # the section is an object in every report, empty when absent
            data["exposed_records"] = {}
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
            "remediation",
            "settings",
            "resolved",
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


CSV_LEAD_COLUMNS = (
    "attack_model",
    "proportion",
    "percentage",
    "knowledge",
    "train_rows",
    "eval_rows",
    "repeats",
    "device",
    "labels_only",
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
            "true" if row.labels_only else "false",
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


REMEDIATION_CSV_COLUMNS = (
    "name",
    "kind",
    "parameter",
    "value",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "balanced_accuracy",
    "log_loss",
    "attack_model",
    "auc",
    "auc_ci_low",
    "auc_ci_high",
    "tpr_at_1pct_fpr",
    "tpr_at_1pct_fpr_ci_low",
    "tpr_at_1pct_fpr_ci_high",
    "auc_change",
    "accuracy_change",
    "pareto",
    "recommended",
)


def render_remediation_csv(report: Report | dict[str, Any]) -> str:
    """The what-if's configurations, one row each: the baseline, then the variants as the JSON lists them.

    Columns: :data:`REMEDIATION_CSV_COLUMNS` (the JSON's ``remediation.baseline`` / ``variants`` entries
    flattened; each ``ci95`` pair as ``_ci_low`` / ``_ci_high``; booleans as ``true`` / ``false``; an
    empty cell for ``null``). Text cells that a spreadsheet would run as a formula get a leading ``'``
    (see ``records.spreadsheet_text``). A report without the section, or whose what-if was skipped with
    no configuration measured, gives the header only.
    """
    data = report.to_dict() if isinstance(report, Report) else report
    section = data.get("remediation") or {}
    recommended = (section.get("recommended") or {}).get("variant")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REMEDIATION_CSV_COLUMNS)
    for config in [section.get("baseline"), *(section.get("variants") or [])]:
        if not isinstance(config, dict):
            continue
        utility, attack = config.get("utility") or {}, config.get("attack") or {}
        accuracy_ci = (utility.get("ci95") or {}).get("accuracy") or [None, None]
        attack_ci = attack.get("ci95") or {}
        auc_ci = attack_ci.get("auc") or [None, None]
        tpr_ci = attack_ci.get("tpr_at_1pct_fpr") or [None, None]
        chosen = (
            recommended is not None and config.get("name") == recommended and config.get("kind") != "baseline"
        )
        cells = [
            config.get("name"),
            config.get("kind"),
            config.get("parameter"),
            config.get("value"),
            utility.get("accuracy"),
            *accuracy_ci,
            utility.get("balanced_accuracy"),
            utility.get("log_loss"),
            attack.get("attack_model"),
            attack.get("auc"),
            *auc_ci,
            attack.get("tpr_at_1pct_fpr"),
            *tpr_ci,
            config.get("auc_change"),
            config.get("accuracy_change"),
            config.get("pareto"),
            chosen,
        ]
        writer.writerow([_csv_cell(cell) for cell in cells])
    return buffer.getvalue()


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{round(value, DECIMALS):.6f}"
    if isinstance(value, int):
        return str(value)
    return spreadsheet_text(str(value))


def render_text(report: dict[str, Any]) -> str:
    """A terminal summary from a report dict (as loaded from JSON): the headline, a table per attack, and
    the report's warnings (what limits the figures, such as too few non-members to resolve 0.1% FPR)."""
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
    lines += _what_if_lines(report.get("remediation"), summary["sentences"])
    warnings = report.get("warnings") or []
    if warnings:
        lines += ["", "Warnings:", *[f"  - {warning}" for warning in warnings]]
    return "\n".join(lines) + "\n"


def _what_if_lines(section: Any, said: list[str]) -> list[str]:
    """The what-if in a few lines: why it was skipped, or its recommendation (unless the summary's
    sentences, ``said``, already hold it) and the frontier's configs."""
    if not isinstance(section, dict):
        return []
    lines = ["", "What would reduce the risk (what-if):"]
    if section.get("status") == "skipped" and section.get("skipped"):
        lines.append(f"  {as_sentence(str(section['skipped']))}")
    sentence = _mapping(section.get("recommended")).get("sentence")
    if sentence and sentence not in said:
        lines.append(f"  {sentence}")
    configs = [c for c in [section.get("baseline"), *(section.get("variants") or [])] if isinstance(c, dict)]
    frontier = [c for c in configs if c.get("pareto") is True]
    if frontier:
        lines.append(
            f"  {'on the frontier':<36} {'accuracy':>9} {'attack':<15} {'AUC':>6} {'AUC change':>11}"
        )
        for config in frontier:
            utility, attack = _mapping(config.get("utility")), _mapping(config.get("attack"))
            lines.append(
                f"  {str(config.get('name')):<36} {_figure(utility.get('accuracy'), '9.3f')} "
                f"{str(attack.get('attack_model')):<15} {_figure(attack.get('auc'), '6.3f')} "
                f"{_figure(config.get('auc_change'), '+11.3f')}"
            )
    rules = [r for r in section.get("rules") or [] if isinstance(r, dict)]
    if rules:
        lines.append(
            "  settings that let this recipe memorise: "
            + ", ".join(f"{r.get('parameter')}={r.get('value')}" for r in rules)
        )
    return lines if len(lines) > 2 else []


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one: a hand-edited report's odd entry is a dash."""
    return value if isinstance(value, dict) else {}


def _figure(value: Any, spec: str) -> str:
    width = int(spec.lstrip("+").split(".")[0])
    return (
        format(value, spec)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else "-".rjust(width)
    )


def _render_html(report: Report) -> str:
    return render_html(report.to_dict())


RENDERERS = {"json": render_json, "csv": render_csv, "html": _render_html}


def render(report: Report, fmt: str) -> str:
    """Render ``report`` as ``json``, ``csv`` or ``html`` (one self-contained page with SVG charts)."""
    renderer = RENDERERS.get(fmt)
    if renderer is None:  # looked up first: a KeyError inside a renderer is a bug, not a bad format
        raise OptionsError(
            f"unknown report format {fmt!r}; choose from {', '.join(RENDERERS)}", code="unsupported_format"
        )
    return renderer(report)
