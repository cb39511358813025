"""The "What would reduce the risk" section: the remediation what-if's chart, table and rules, as text.

Input is the report's ``remediation`` section (schema 1.2; see the README), read as defensively as the rest
of the page: an absent or malformed section is left out, a config without a finite accuracy and AUC is
listed but not drawn, and every figure that is not a finite number is a dash. Config names, parameters and
rule texts come from the tool's own tables, but they are escaped like everything else (the template
autoescapes; the chart escapes each text it embeds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from .charts import CHART_TEXT, CHART_WIDTH, Svg, _axes, _marker
from .formatting import DASH, Table, as_sentence, escape, fixed, number, pct, short, text_width

# How each kind of config is drawn: (legend label, fill colour, marker shape, radius).
KIND_STYLES = {
    "baseline": ("baseline (recipe retrained)", "#000000", "square", 5.5),
    "retrained": ("retrained variant", "#0072B2", "circle", 4.5),
    "serving": ("serving-side option", "#E69F00", "diamond", 5.5),
}
TARGET_STYLE = ("target as audited", "#CC79A7", "star", 7.0)
FRONTIER_COLOUR = "#009E73"
X_AXIS = "accuracy on rows the model never trained on (right is better)"
Y_AXIS = "attack ROC AUC (lower is more private)"
RECOMMENDED_RING = ' stroke="#D55E00" stroke-width="2.5"'
LABEL_CLEARANCE = 16.0  # a point's number is left off when another number sits this close (its title stays)


def valid_variants(section: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The baseline then the variants, as listed in the section, leaving out entries that are not objects."""
    configs = [section.get("baseline")] + list(section.get("variants") or [])
    return [c for c in configs if isinstance(c, Mapping)]


def remediation_section(
    section: Any, target_auc: Any = None, target_accuracy: Any = None
) -> dict[str, Any] | None:
    """What the page's what-if section shows.

    Parameters
    ----------
    section:
        The report's ``remediation`` dict (``None`` or anything malformed: the section is left out).
    target_auc, target_accuracy:
        The audited target's strongest attack AUC (``summary.auc``) and its accuracy on non-members
        (``target.non_member_accuracy``): the chart marks that point.

    Returns
    -------
    dict or None
        ``sentence`` (the recommendation, or ``""``), ``skipped`` (why the fits did not run, or ``""``),
        ``protocol`` (one sentence on how the figures were measured, or ``""``), ``svg`` (the chart, or
        ``None`` with fewer than one drawable config), ``table`` (a :class:`Table`, or ``None``), ``rules``
        (``[(setting, why), ...]``), ``retrained`` (whether any config was retrained: the baseline, a variant).
    """
    if not isinstance(section, Mapping):
        return None
    configs = valid_variants(section)
    recommended = section.get("recommended") if isinstance(section.get("recommended"), Mapping) else {}
    chosen = recommended.get("variant")
    skipped = section.get("skipped") if section.get("status") == "skipped" else None
    rules = [
        (f"{rule.get('parameter', DASH)} = {_value_text(rule.get('value'))}", str(rule.get("why", "")))
        for rule in section.get("rules") or []
        if isinstance(rule, Mapping)
    ]
    target = (number(target_accuracy), number(target_auc))
    retrained = any(c.get("kind") in ("baseline", "retrained") for c in configs)
    return {
        "sentence": str(recommended.get("sentence") or ""),
        "skipped": as_sentence(str(skipped or "")),
        # the protocol is that of the fits: a section whose fits were skipped has none to describe
        "protocol": _protocol_sentence(section.get("protocol"), section.get("estimator_class"))
        if retrained
        else "",
        "retrained": retrained,
        "svg": remediation_chart(configs, chosen, target) if configs else None,
        "table": _config_table(configs, chosen) if configs else None,
        "rules": rules,
    }


def _value_text(value: Any) -> str:
    """A parameter value as the table and the rules show it (Python's spelling, as in a recipe)."""
    if value is None:
        return "None"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _protocol_sentence(protocol: Any, estimator: Any) -> str:
    if not isinstance(protocol, Mapping):
        return ""
    models, rows = number(protocol.get("models_per_config")), number(protocol.get("rows"))
    evaluation, budget = number(protocol.get("evaluation_rows")), number(protocol.get("utility_budget"))
    if models is None or rows is None:
        return ""
    family = f" ({estimator})" if estimator else ""
    text = (
        f"Each retrained configuration of the recipe{family} was fitted {models:.0f} times, each time on a "
        f"random half of the {rows:.0f} audited rows (the same halves for every configuration); each fit in "
        "turn played the target while the others served the attacker as reference models."
    )
    if evaluation is not None:
        text += (
            f" Attacks were scored on {evaluation:.0f} rows the attacker did not use, and accuracy on the "
            "rows each fit never trained on."
        )
    if budget is not None:
        text += (
            f" A recommendation may cost at most {budget:g} point{'s' if budget != 1 else ''} of accuracy."
        )
    return text


def _interval(values: Any, fmt: Any, digits: int) -> str:
    if isinstance(values, (list, tuple)) and len(values) == 2:
        low, high = number(values[0]), number(values[1])
        if low is not None and high is not None:
            return f" ({fmt(low, digits)}–{fmt(high, digits)})"
    return ""


def _signed(value: Any, digits: int, scale: float = 1.0, suffix: str = "") -> str:
    result = number(value)
    return DASH if result is None else f"{result * scale:+.{digits}f}{suffix}"


def _config_table(configs: Sequence[Mapping[str, Any]], chosen: Any) -> Table:
    """One row per config, named with the number its point has in the chart; the recommended row highlighted."""
    rows, classes = [], []
    for index, config in enumerate(configs, 1):
        utility = config.get("utility") if isinstance(config.get("utility"), Mapping) else {}
        attack = config.get("attack") if isinstance(config.get("attack"), Mapping) else {}
        utility_ci = utility.get("ci95") if isinstance(utility.get("ci95"), Mapping) else {}
        attack_ci = attack.get("ci95") if isinstance(attack.get("ci95"), Mapping) else {}
        pareto = config.get("pareto")
        rows.append(
            [
                f"{index}. {config.get('name', DASH)}",
                pct(utility.get("accuracy")) + _interval(utility_ci.get("accuracy"), pct, 1),
                pct(utility.get("balanced_accuracy")),
                str(attack.get("attack_model", DASH)).replace("_", " "),
                fixed(attack.get("auc")) + _interval(attack_ci.get("auc"), fixed, 3),
                pct(attack.get("tpr_at_1pct_fpr")),
                f"AUC {_signed(config.get('auc_change'), 3)}, "
                f"accuracy {_signed(config.get('accuracy_change'), 1, 100, ' pts')}",
                "yes" if pareto is True else "no" if pareto is False else DASH,
            ]
        )
        is_chosen = chosen is not None and config.get("name") == chosen and config.get("kind") != "baseline"
        classes.append("strongest" if is_chosen else "serving" if config.get("kind") == "serving" else "")
    headers = [
        "configuration",
        "accuracy (95% CI)",
        "balanced accuracy",
        "attack",
        "attack AUC (95% CI)",
        "TPR at 1% FPR",
        "change against the baseline",
        "on the frontier",
    ]
    # wrap: at 700 px a name such as min_samples_leaf=20 has to break inside the word for the table to fit
    return Table(headers, rows, left_cols=1, row_classes=classes, cls="full whatif", wrap=True)


def _ticks(low: float, high: float, max_ticks: int) -> tuple[float, float, float]:
    """A nice step for ``[low, high]`` and the range widened to whole steps: (start, stop, step)."""
    span = max(high - low, 1e-9)
    for step in (0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25):
        if span / step <= max_ticks:
            break
    return math.floor(low / step + 1e-9) * step, math.ceil(high / step - 1e-9) * step, step


def remediation_chart(
    configs: Sequence[Mapping[str, Any]], chosen: Any, target: tuple[float | None, float | None]
) -> str | None:
    """Attack AUC (y) against accuracy (x): a marker per config, the Pareto frontier as a line.

    ``configs`` are the section's baseline and variants (each drawn by its ``kind``, numbered in list
    order as the table numbers them, with its AUC's 95% interval as a bar); ``chosen`` is the recommended
    config's name (ringed); ``target`` is the audited target's (accuracy, strongest AUC), drawn as a star
    when both are known. The frontier joins the configs flagged ``pareto``, in order of accuracy.
    ``None`` when no config has both figures.
    """
    points = []
    for index, config in enumerate(configs, 1):
        utility = config.get("utility") if isinstance(config.get("utility"), Mapping) else {}
        attack = config.get("attack") if isinstance(config.get("attack"), Mapping) else {}
        x, y = number(utility.get("accuracy")), number(attack.get("auc"))
        if x is None or y is None:
            continue
        ci = attack.get("ci95") if isinstance(attack.get("ci95"), Mapping) else {}
        bounds = ci.get("auc") if isinstance(ci.get("auc"), (list, tuple)) and len(ci["auc"]) == 2 else ()
        low, high = (number(bounds[0]), number(bounds[1])) if bounds else (None, None)
        kind = str(config.get("kind"))
        points.append((index, config, kind if kind in KIND_STYLES else "retrained", x, y, low, high))
    if not points:
        return None
    has_target = target[0] is not None and target[1] is not None
    xs = [p[3] for p in points] + ([target[0]] if has_target else [])
    ys = [v for p in points for v in (p[4], p[5], p[6]) if v is not None] + [0.5]
    ys += [target[1]] if has_target else []
    x0, x1, x_step = _ticks(min(xs) - 0.002, max(xs) + 0.002, 7)
    y0, y1, y_step = _ticks(max(0.0, min(ys) - 0.01), min(1.0, max(ys) + 0.01), 8)

    size = CHART_TEXT
    left, top, right = 56.0, 12.0, 24.0
    plot_w, plot_h = CHART_WIDTH - left - right, 300.0
    entries = [KIND_STYLES[k] for k in KIND_STYLES if any(p[2] == k for p in points)]
    entries += [TARGET_STYLE] if has_target else []
    entry_w = max(text_width(short(label), size) for label, *_ in entries + [("Pareto frontier",)]) + 34
    columns = max(1, int(plot_w // entry_w))
    legend_count = len(entries) + 2  # at most the frontier and the recommendation besides
    legend_top = top + plot_h + 58
    height = legend_top + math.ceil(legend_count / columns) * (size + 10) + 4
    svg = Svg(
        CHART_WIDTH,
        height,
        "what_if",
        "Attack AUC against accuracy for the target's recipe, its retrained variants and serving-side options",
    )

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * plot_w

    def sy(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * plot_h

    x_digits = 1 if x_step < 0.01 else 0
    for i in range(int(round((x1 - x0) / x_step)) + 1):
        v = x0 + i * x_step
        svg.line(sx(v), top, sx(v), top + plot_h, stroke="#f0f0f0")
        svg.text(sx(v), top + plot_h + 16, pct(v, x_digits), size=size, anchor="middle", fill="#444")
    for i in range(int(round((y1 - y0) / y_step)) + 1):
        v = y0 + i * y_step
        svg.line(left, sy(v), left + plot_w, sy(v), stroke="#e3e3e3")
        svg.text(
            left - 6, sy(v) + 4, f"{v:.{2 if y_step >= 0.01 else 3}f}", size=size, anchor="end", fill="#444"
        )
    _axes(svg, left, top, plot_w, plot_h, legend_top - 12, size, X_AXIS, Y_AXIS)
    if y0 <= 0.5 <= y1:
        svg.line(left, sy(0.5), left + plot_w, sy(0.5), stroke="#666", width=1.2, dash="6 4")
        svg.text(left + plot_w - 4, sy(0.5) - 5, "0.5 = guessing", size=size, anchor="end", fill="#555")

    frontier = sorted((p for p in points if p[1].get("pareto") is True), key=lambda p: (p[3], p[4]))
    if len(frontier) > 1:
        svg.add(
            f'<polyline class="frontier" fill="none" stroke="{FRONTIER_COLOUR}" stroke-width="2" points="'
            + " ".join(f"{sx(p[3]):.1f},{sy(p[4]):.1f}" for p in frontier)
            + '"><title>Pareto frontier</title></polyline>'
        )
    labelled: list[tuple[float, float]] = []
    for index, config, kind, x, y, low, high in points:
        label, colour, shape, radius = KIND_STYLES[kind]
        cx, cy = sx(x), sy(y)
        if low is not None and high is not None:
            svg.line(cx, sy(min(high, y1)), cx, sy(max(low, y0)), stroke=colour, width=1)
        name = str(config.get("name", DASH))
        is_chosen = chosen is not None and name == chosen and kind != "baseline"
        ring = RECOMMENDED_RING if is_chosen else ' stroke="#fff" stroke-width="0.8"'
        attrs = f'{ring} class="config" data-kind="{escape(kind)}" data-name="{escape(name)}"'
        title = f"<title>{index}. {escape(name)}: accuracy {pct(x)}, attack AUC {y:.3f}</title>"
        svg.add(_marker(shape, cx, cy, radius + (1.5 if is_chosen else 0), colour, attrs, title))
        if all(math.hypot(cx - a, cy - b) >= LABEL_CLEARANCE for a, b in labelled):
            anchor = "end" if cx > left + plot_w - 24 else "start"
            svg.text(cx + (-9 if anchor == "end" else 9), cy - 6, str(index), size=size, anchor=anchor)
            labelled.append((cx, cy))
    if has_target:
        label, colour, shape, radius = TARGET_STYLE
        attrs = ' stroke="#000" stroke-width="0.8" class="target"'
        title = f"<title>{escape(label)}: accuracy {pct(target[0])}, attack AUC {target[1]:.3f}</title>"
        svg.add(_marker(shape, sx(target[0]), sy(target[1]), radius, colour, attrs, title))

    legend = [(label, colour, shape, "") for label, colour, shape, _ in entries]
    if len(frontier) > 1:
        legend.append(("Pareto frontier", FRONTIER_COLOUR, "line", ""))
    if chosen:
        legend.append(("recommended (ringed)", "#fff", "circle", RECOMMENDED_RING))
    for i, (label, colour, shape, extra) in enumerate(legend):
        x = left + (i % columns) * entry_w
        y = legend_top + (i // columns) * (size + 10) + size
        if shape == "line":
            svg.line(x, y - size * 0.35, x + 24, y - size * 0.35, stroke=colour, width=2.5)
        else:
            svg.add(_marker(shape, x + 12, y - size * 0.35, 5.0, colour, extra + ' class="legend-point"'))
        svg.text(x + 30, y, short(label), size=size, title=label, cls="legend")
    return svg.to_string()
