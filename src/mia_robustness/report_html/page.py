"""The page: a report dict in, the values each section of ``templates/report.html`` shows out, as text.

The functions here read the JSON-ready report dict defensively (a section that is absent, null or
malformed is left out; a figure that is not a finite number is a dash) and format every value as plain
text. The template lays the text out and autoescapes all of it; only the charts (``charts.py``) are
markup.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, Template

from ..rules import BELOW_RULES, CHANCE_MARGIN, KNOWLEDGE_SHARE, RISK_RULES
from .charts import auc_chart, class_chart, roc_chart, valid_curves
from .formatting import (
    DASH,
    RISK_COLOURS,
    UNKNOWN_RISK_COLOUR,
    Table,
    attack_colours,
    fixed,
    number,
    pct,
    results_by_attack,
    same_proportion,
    share,
)
from .remediation import remediation_section
from .reproduce import cli_command, run_time_values, settings_json

MAX_CLASS_ROWS = 200
MAX_EXPOSED_ROWS = 50
MAX_CLASSES_LISTED = 20  # in the facts table; the JSON has them all
METRIC_LABELS = {
    "auc": "ROC AUC",
    "advantage": "advantage",
    "accuracy": "accuracy",
    "tpr_at_1pct_fpr": "members found at 1% FPR",
    "tpr_at_0_1pct_fpr": "members found at 0.1% FPR",
    "tpr_at_0_fpr": "members found with no false positives",
}
RATE_FREE_METRICS = ("auc", "advantage", "accuracy")  # shown as decimals; the rest as percentages


@functools.cache
def _page_template() -> Template:
    """The page template, loaded once on first use (importing the package reads no files)."""
    environment = Environment(
        loader=PackageLoader(__package__, "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,  # a misspelt name fails instead of printing nothing
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    return environment.get_template("report.html")


def render_html(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page.

    Parameters
    ----------
    report:
        The JSON-ready report dict (``Report.to_dict()`` or a report loaded from JSON, of any schema
        version). Optional parts (``curves``, ``per_class``, ``by_correctness``, ``exposed_records``, ``remediation``,
        ``summary.ci95``, ``summary.epsilon_lower_bound``, ``resolved``, warnings, timings) are drawn when
        present and left out when absent.

    Returns
    -------
    str
        A complete HTML5 document with inline CSS and inline SVG charts; it loads nothing.
    """
    summary = report.get("summary") or {}
    results = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
    curves = valid_curves(report.get("curves"))
    classes = _valid_classes(report.get("per_class"))
    colours = attack_colours(
        [str(r.get("attack_model", "?")) for r in results] + [name for name, *_ in curves]
    )
    strongest = (str(summary.get("strongest_attack")), number(summary.get("strongest_proportion")))
    return _page_template().render(
        header=_header(report, summary),
        summary=_summary_paragraphs(summary),
        howto=_howto(),
        auc_chart=_auc_section(results, colours, strongest),
        roc_chart=roc_chart(curves, colours) if curves else None,
        per_class=_class_section(classes) if classes else None,
        by_correctness=_correctness_table(report.get("by_correctness")),
        results=_results_section(results, strongest) if results else None,
        exposed=_exposed_section(report.get("exposed_records")),
        what_if=remediation_section(
            report.get("remediation"),
            summary.get("auc"),
            (report.get("target") or {}).get("non_member_accuracy"),
        ),
        warnings=_warning_lines(report.get("warnings")),
        model_and_data=_facts_section(report),
        settings=_settings_section(report.get("settings"), report.get("resolved")),
        timings=_timings_table(report.get("timings")),
    )


def _header(report: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, str]:
    level = str(summary.get("risk_level", "unknown"))
    score = summary.get("robustness_score")
    version = report.get("tool_version") or ""
    schema = report.get("schema_version") or ""
    made = [f"mia-robustness {version}" if version else "", f"report schema {schema}" if schema else ""]
    return {
        "level": level,
        "colour": RISK_COLOURS.get(level, UNKNOWN_RISK_COLOUR),
        "score": f"{score}/100" if score is not None else DASH,
        "strongest": str(summary.get("strongest_attack", DASH)),
        "proportion": share(summary.get("strongest_proportion")),
        "auc": fixed(summary.get("auc"), 2),
        "tpr": pct(summary.get("tpr_at_1pct_fpr")),
        "made": " · ".join(x for x in made if x),
    }


def _summary_paragraphs(summary: Mapping[str, Any]) -> list[str]:
    """The summary's sentences, then the strongest attack's intervals and the epsilon bound if reported."""
    paragraphs = [s for s in summary.get("sentences") or [] if isinstance(s, str)]
    ci = summary.get("ci95")
    if isinstance(ci, Mapping) and ci:
        parts = []
        for key, bounds in ci.items():
            if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                fmt, digits = (fixed, 3) if key in RATE_FREE_METRICS else (pct, 1)
                label = METRIC_LABELS.get(key, str(key).replace("_", " "))  # never a raw key
                parts.append(f"{label} {fmt(bounds[0], digits)} to {fmt(bounds[1], digits)}")
        if parts:
            paragraphs.append("95% confidence intervals for the strongest attack: " + "; ".join(parts) + ".")
    if "epsilon_lower_bound" in summary:
        eps = number(summary.get("epsilon_lower_bound"))
        if eps is None:
            paragraphs.append(
                "No differential-privacy bound could be inferred from these attacks (they are too weak "
                "at low false-positive rates to prove any)."
            )
        else:
            paragraphs.append(
                f"Empirical differential-privacy lower bound: ε ≥ {eps:.2f}. Had the model been trained "
                f"with differential privacy, its ε would have to be at least this large for these attacks to succeed."
            )
    return paragraphs


def _howto() -> dict[str, Any]:
    """The rules the summary judged by (``rules.py``), as the "how to read" box states them."""
    return {
        "rules": [(level, f"{auc:.2f}", f"{tpr:.0%}") for level, auc, tpr in RISK_RULES],
        "below_rules": BELOW_RULES,
        "knowledge_share": f"{KNOWLEDGE_SHARE:.0%}",
        "chance_margin": f"{CHANCE_MARGIN:.2f}",
    }


def _auc_section(
    results: Sequence[Mapping[str, Any]], colours: Mapping[str, str], strongest: tuple[str, float | None]
) -> dict[str, Any] | None:
    """The AUC chart and what each attack assumes the attacker has (one sentence when all assume the same)."""
    svg = auc_chart(results, colours, strongest)
    if svg is None:
        return None
    seen: dict[str, str] = {}
    for r in results:
        seen.setdefault(str(r.get("attack_model", "?")), str(r.get("knowledge", "")))
    shared = next(iter(seen.values())) if any(seen.values()) and len(set(seen.values())) == 1 else None
    each = [(k, v) for k, v in seen.items() if v] if any(seen.values()) and shared is None else []
    return {"svg": svg, "assumed_by_all": shared, "assumptions": each}


def _valid_classes(per_class: Any) -> list[Mapping[str, Any]]:
    return [
        c
        for c in (per_class if isinstance(per_class, list) else [])
        if isinstance(c, Mapping) and "label" in c
    ]


def _slice_row(entry: Mapping[str, Any], name: str) -> list[str]:
    return [
        str(entry.get(name)),
        str(entry.get("members", DASH)),
        str(entry.get("non_members", DASH)),
        fixed(entry.get("auc")),
        pct(entry.get("tpr_at_1pct_fpr")),
    ]


def _class_section(classes: list[Mapping[str, Any]]) -> dict[str, Any]:
    svg, note = class_chart(classes)
    table = Table(
        ["label", "members", "non-members", "AUC", "TPR at 1% FPR"],
        [_slice_row(c, "label") for c in classes[:MAX_CLASS_ROWS]],
        wrap=True,
    )
    more = (
        f"First {MAX_CLASS_ROWS} of {len(classes)} classes; all are in the JSON report."
        if len(classes) > MAX_CLASS_ROWS
        else ""
    )
    return {"svg": svg, "note": note, "table": table, "more": more}


def _correctness_table(groups: Any) -> Table | None:
    groups = [g for g in groups if isinstance(g, Mapping)] if isinstance(groups, list) else []
    if not groups:
        return None
    return Table(
        ["rows", "members", "non-members", "AUC", "TPR at 1% FPR"], [_slice_row(g, "group") for g in groups]
    )


LABELS_ONLY_MARK = "†"


def _results_section(
    results: Sequence[Mapping[str, Any]], strongest: tuple[str, float | None]
) -> dict[str, Any]:
    repeats = {str(r.get("repeats", DASH)) for r in results}
    # One repeat count for every row (the usual case) goes in the note, leaving the table room at A4 width.
    per_row_repeats = len(repeats) > 1
    rows, classes = [], []
    for name, group in results_by_attack(results).items():
        for r in group:
            mean, std = r.get("mean") or {}, r.get("std") or {}
            p = number(r.get("proportion"))
            cells = [
                # A mark, not words: the attack column must stay narrow enough for A4 (the note says what it means).
                f"{name} {LABELS_ONLY_MARK}" if r.get("labels_only") else name,
                share(p),
                f"{fixed(mean.get('auc'))} ± {fixed(std.get('auc'))}",
                fixed(mean.get("advantage")),
                pct(mean.get("tpr_at_1pct_fpr")),
                pct(mean.get("tpr_at_0_1pct_fpr")),
                fixed(mean.get("accuracy")),
                str(r.get("train_rows", DASH)),
            ]
            rows.append(cells + ([str(r.get("repeats", DASH))] if per_row_repeats else []))
            classes.append("strongest" if name == strongest[0] and same_proportion(p, strongest[1]) else "")
    headers = [
        "attack",
        "knowledge",
        "AUC ± std",
        "advantage",
        "TPR at 1% FPR",
        "TPR at 0.1% FPR",
        "accuracy",
    ]
    headers += ["attacker rows"] + (["repeats"] if per_row_repeats else [])
    labels_only = any(r.get("labels_only") for r in results)
    return {
        "over": "repeats" if per_row_repeats else f"{next(iter(repeats))} repeats",
        "table": Table(headers, rows, row_classes=classes, cls="full"),
        "labels_only": f"{LABELS_ONLY_MARK} labels only: the risk if the model served only its predicted labels."
        if labels_only
        else None,
    }


def _exposed_section(exposed: Any) -> dict[str, Any] | None:
    if not isinstance(exposed, Mapping):
        return None
    found = number(exposed.get("share_of_members_at_1pct_fpr"))
    top = [t for t in exposed.get("top") or [] if isinstance(t, Mapping)]
    if found is None and not top:
        return None
    shown = top[:MAX_EXPOSED_ROWS]
    tied, evaluated = number(exposed.get("tied_at_top")), number(exposed.get("members_evaluated"))
    ranked = any("mean_rank" in t for t in shown)
    headers = ["row (0-based)", f"{exposed.get('attack_model', 'attack')} score"]
    headers += ["mean rank over all attacks"] if ranked else []
    return {
        "share": pct(found) if found is not None else None,
        "attack": str(exposed.get("attack_model", DASH)),
        "tied": _tie_note(int(tied), int(evaluated) if evaluated is not None else None, len(shown))
        if tied is not None and tied > 1
        else "",
        "table": Table(
            headers,
            [
                [str(t.get("row", DASH)), fixed(t.get("score"), 4)]
                + ([pct(t.get("mean_rank"))] if ranked else [])
                for t in shown
            ],
            left_cols=0,
        )
        if top
        else None,
        "more": f"First {len(shown)} of {len(top)} listed in the JSON report."
        if len(top) > len(shown)
        else "",
    }


def _tie_note(tied: int, evaluated: int | None, shown: int) -> str:
    """What the table's order means when several members share the top score."""
    of = f" of the {evaluated} evaluated members" if evaluated is not None else ""
    listed = "these are" if tied <= shown else f"the {shown} listed are"
    return (
        f"{tied}{of} share the highest score; {listed} ordered by their mean rank over all attacks "
        "(100% = ranked above every other evaluated record by every attack), then by row."
    )


# What the target answers with (``target.output_kind``); margins are never called probabilities.
_ANSWERS = {
    "probabilities": "class probabilities (predict_proba)",
    "margins": "decision margins (decision_function), not probabilities",
    "labels": "predicted labels only (predict)",
}


def _facts_section(report: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]] | None:
    target, data = report.get("target") or {}, report.get("data") or {}
    if not target and not data:
        return None
    classes = target.get("classes")
    class_text = ", ".join(str(c) for c in classes) if isinstance(classes, list) else classes
    if isinstance(classes, list) and len(classes) > MAX_CLASSES_LISTED:
        class_text = ", ".join(str(c) for c in classes[:MAX_CLASSES_LISTED]) + f", … ({len(classes)} in all)"
    model = str(target.get("model_class", DASH))
    estimator = target.get("estimator_class")
    if estimator and estimator != target.get("model_class"):
        model += f" ({estimator})"
    n_classes = str(target.get("n_classes", DASH))
    saved = target.get("sklearn_version_saved") or "unknown"
    answers = _ANSWERS.get(str(target.get("output_kind")))  # absent in reports before schema 1.3
    runtime = target.get("sklearn_version_runtime") or "unknown"
    supplied = target.get("outputs_source") == "supplied"
    if supplied:
        model = "none in the bundle: its outputs were supplied, not measured"
    return {
        "target": [
            ("model", model),
            *([("answers with", answers)] if answers else []),
            *([("outputs", "supplied with the bundle (no model was queried)")] if supplied else []),
            ("classes", f"{n_classes}: {class_text}" if class_text else n_classes),
            ("features", str(target.get("n_features", DASH))),
            ("accuracy on training rows (members)", pct(target.get("member_accuracy"))),
            ("accuracy on unseen rows (non-members)", pct(target.get("non_member_accuracy"))),
            ("gap (overfitting)", pct(target.get("accuracy_gap"))),
            # A predictions bundle has no saved model, so no version of it to compare.
            *([] if supplied else [("scikit-learn saved with / run with", f"{saved} / {runtime}")]),
        ],
        "data": [
            ("bundle layout", str(data.get("layout", DASH))),
            ("label column", str(data.get("label_column", DASH))),
            ("feature columns", str(data.get("feature_columns", DASH))),
            (
                "members / non-members available",
                f"{data.get('members_available', DASH)} / {data.get('non_members_available', DASH)}",
            ),
            ("rows used per side", str(data.get("rows_per_side", DASH))),
            ("balancing", str(data.get("balancing", DASH))),
            ("evaluation rows per side", str(data.get("eval_rows_per_side", DASH))),
            ("attacker pool per side", str(data.get("attacker_pool_per_side", DASH))),
        ],
    }


def _settings_section(settings: Any, resolved: Any) -> dict[str, str] | None:
    """The options as a command and as JSON, and (beside them) what was resolved at run time."""
    if not isinstance(settings, Mapping) or not settings:
        return None
    return {
        "command": cli_command(settings, multiline=True),
        "resolved": ", ".join(f"{k} = {v}" for k, v in run_time_values(settings, resolved)),
        "json": settings_json(settings),
    }


def _warning_lines(warnings: Any) -> list[str]:
    return [str(w) for w in warnings if w] if isinstance(warnings, list) else []


# What each stage's seconds are: the stages are wall-clock time; per-attack figures are summed over cells.
STAGE_LABELS = {
    "loading": "loading the model and tables",
    "target_scoring": "querying the target on every row",
    "signals": "computing the per-row signals",
    "attacks": "learned and threshold attacks: training and scoring",
    "reference_attacks": "reference attacks: training the reference models, then scoring",
    "what_if": "the what-if: retraining the recipe and its variants, then attacking each",
    "total": "total",
}
REFERENCE_ATTACK_PREFIXES = ("lira", "rmia")


def _stage_label(key: str) -> str:
    if key in STAGE_LABELS:
        return STAGE_LABELS[key]
    if key.startswith("attack_") and key.endswith("_seconds"):
        name = key[len("attack_") : -len("_seconds")]
        if name.startswith(REFERENCE_ATTACK_PREFIXES):
            return f"{name}: scoring only (its reference models' training is in the reference attacks line)"
        return f"{name}: training and scoring, summed over its cells"
    return key.replace("_", " ")


def _timings_table(timings: Any) -> Table | None:
    if not isinstance(timings, Mapping) or not timings:
        return None
    return Table(
        ["what the time was spent on", "seconds"],
        [[_stage_label(str(k)), fixed(v, 2)] for k, v in timings.items()],
    )
