"""The report as one self-contained HTML page: inline CSS, hand-written inline SVG charts, no scripts.

:func:`render_html` takes the JSON-ready report dict (``Report.to_dict()``, or a report loaded from JSON), so
it knows nothing of how the figures were made and renders old reports too: every section whose data is
absent (``curves``, ``per_class``, ``exposed_records``, ``summary.ci95``, warnings, timings) is left out.

The page loads nothing: no fonts, scripts, images or stylesheets, and a Content-Security-Policy forbids
them, so it works offline and inside a locked-down container. Every string from the report goes through
:func:`html.escape` (labels, column names and attack names can come from user data).

Charts are drawn in a viewBox with margins sized from the longest label (estimated at
:data:`CHAR_WIDTH` x font size per character, a safe upper bound for common sans-serif fonts), so axis
labels and legends sit inside the drawing; the tests check that in a real browser.
"""

from __future__ import annotations

import html
import json
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["render_html", "cli_command", "attack_colours"]

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then a few more.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#8C564B",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
    "#9467BD",
)
RISK_COLOURS = {"high": "#B00020", "medium": "#C25E00", "low": "#8A7400", "minimal": "#2E7D32"}
# Estimated width of one character as a share of the font size: an upper bound for the sans-serif
# fonts a browser is likely to pick (DejaVu Sans, the widest common one, averages about 0.58).
CHAR_WIDTH = 0.62
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
LOG_FLOOR = 1e-3  # the ROC chart's axes run from 0.1% to 100%
MAX_LEGEND_CHARS = 28
MAX_CLASS_BARS = 30
MAX_CLASS_ROWS = 200
MAX_EXPOSED_ROWS = 50
MAX_CURVE_POINTS = 2000
CHART_WIDTH = 940.0  # viewBox width of the wide charts: the page's content width, so 12 units draw as 12px
NOT_OPTIONS = {"resolved_device"}  # settings keys that report a result, not an option to pass back


# ---------------------------------------------------------------- formatting helpers


def _e(value: Any) -> str:
    """Escape any value for HTML text or an attribute."""
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (missing, null, NaN, not a number)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _fixed(value: Any, digits: int = 3) -> str:
    number = _num(value)
    return "—" if number is None else f"{number:.{digits}f}"


def _pct(value: Any, digits: int = 1) -> str:
    number = _num(value)
    return "—" if number is None else f"{number * 100:.{digits}f}%"


def _share(value: Any) -> str:
    """A knowledge proportion as a percentage without needless decimals (0.1 -> 10%, 0.125 -> 12.5%)."""
    number = _num(value)
    return "—" if number is None else f"{number * 100:.4g}%"


def _short(text: str, limit: int = MAX_LEGEND_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text_width(text: str, size: float) -> float:
    return len(text) * size * CHAR_WIDTH


def attack_colours(names: Iterable[str]) -> dict[str, str]:
    """A colour per attack model name, in first-seen order, cycling through :data:`PALETTE`."""
    colours: dict[str, str] = {}
    for name in names:
        if name not in colours:
            colours[name] = PALETTE[len(colours) % len(PALETTE)]
    return colours


# ---------------------------------------------------------------- SVG drawing


class _Svg:
    """Collects SVG elements in a ``width`` x ``height`` viewBox; every coordinate is in those units."""

    def __init__(self, width: float, height: float, chart: str, label: str):
        self.width, self.height = width, height
        self.chart, self.label = chart, label
        self.parts: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def line(
        self,
        x1: float,
        y1: float,
        x2: float,
        y2: float,
        stroke: str = "#999",
        width: float = 1,
        dash: str | None = None,
    ) -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{stroke}" stroke-width="{width}"{extra}/>'
        )

    def text(
        self,
        x: float,
        y: float,
        content: str,
        size: float = 12,
        anchor: str = "start",
        fill: str = "#222",
        rotate: bool = False,
        weight: str | None = None,
        title: str | None = None,
        cls: str | None = None,
    ) -> None:
        """A text element; ``y`` is the baseline; ``rotate`` turns it -90 degrees about (x, y)."""
        attrs = f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
        if rotate:
            attrs += f' transform="rotate(-90 {x:.1f} {y:.1f})"'
        if weight:
            attrs += f' font-weight="{weight}"'
        if cls:
            attrs += f' class="{cls}"'
        inner = _e(content) + (f"<title>{_e(title)}</title>" if title and title != content else "")
        self.add(f"<text {attrs}>{inner}</text>")

    def to_string(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            f'width="{self.width:.0f}" height="{self.height:.0f}" class="chart" data-chart="{self.chart}" '
            f'role="img" aria-label="{_e(self.label)}" font-family="{_e(FONT)}">'
            + "".join(self.parts)
            + "</svg>"
        )


def _legend(
    svg: _Svg, x: float, y: float, entries: Sequence[tuple[str, str, str | None]], size: float = 12
) -> None:
    """Legend entries ``(label, colour, dash)`` stacked from (x, y) downwards."""
    for i, (label, colour, dash) in enumerate(entries):
        row = y + i * (size + 8)
        svg.line(x, row - size * 0.35, x + 22, row - size * 0.35, stroke=colour, width=2.5, dash=dash)
        svg.text(x + 28, row, _short(label), size=size, title=label, cls="legend")


def _legend_width(labels: Iterable[str], size: float = 12) -> float:
    widest = max((_text_width(_short(label), size) for label in labels), default=0.0)
    return 28 + widest


def _nice_step(span: float, max_ticks: int) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
        if span / step <= max_ticks:
            return step
    return 1.0


# ---------------------------------------------------------------- charts


def _results_by_attack(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in results:
        groups.setdefault(str(row.get("attack_model", "?")), []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: _num(r.get("proportion")) or 0.0)
    return groups


def _axes(
    svg,
    left: float,
    top: float,
    width: float,
    height: float,
    total_height: float,
    size: float,
    x_label: str,
    y_label: str,
) -> None:
    """The x and y axis lines of a plot area and their labels (x below, y rotated on the left)."""
    svg.line(left, top + height, left + width, top + height, stroke="#444")
    svg.line(left, top, left, top + height, stroke="#444")
    svg.text(left + width / 2, total_height - 10, x_label, size=size, anchor="middle")
    svg.text(16, top + height / 2, y_label, size=size, anchor="middle", rotate=True)


def _auc_chart(
    results: Sequence[Mapping[str, Any]], colours: Mapping[str, str], strongest: tuple[str, float | None]
) -> str | None:
    """Mean AUC (± std error bars) against knowledge proportion, one line per attack model."""
    groups = _results_by_attack(results)
    points = {
        name: [
            (p, m, _num((r.get("std") or {}).get("auc")) or 0.0)
            for r in rows
            if (p := _num(r.get("proportion"))) is not None
            and (m := _num((r.get("mean") or {}).get("auc"))) is not None
        ]
        for name, rows in groups.items()
    }
    points = {name: pts for name, pts in points.items() if pts}
    if not points:
        return None
    lows = [m - s for pts in points.values() for _, m, s in pts] + [0.5]
    highs = [m + s for pts in points.values() for _, m, s in pts] + [0.5]
    lo = max(0.0, math.floor((min(lows) - 0.02) * 20) / 20)
    hi = min(1.0, math.ceil((max(highs) + 0.02) * 20) / 20)
    if hi - lo < 0.1:
        hi = min(1.0, lo + 0.1)
    step = _nice_step(hi - lo, 8)

    size = 12
    legend_w = _legend_width(points, size)
    left, top, bottom = 64, 16, 52
    width = CHART_WIDTH
    plot_w = max(360.0, width - left - 24 - legend_w - 12)
    width = left + plot_w + 24 + legend_w + 12
    plot_h = max(300.0, len(points) * (size + 8) + 10)
    height = top + plot_h + bottom
    svg = _Svg(width, height, "auc", "Attack AUC against attacker knowledge, one line per attack model")

    def sx(p: float) -> float:
        return left + p * plot_w

    def sy(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    # grid and axes
    n_y = int(round((hi - lo) / step))
    for i in range(n_y + 1):
        v = lo + i * step
        svg.line(left, sy(v), left + plot_w, sy(v), stroke="#e3e3e3")
        svg.text(left - 6, sy(v) + 4, f"{v:.2f}", size=11, anchor="end", fill="#444")
    for i in range(11):
        p = i / 10
        svg.line(sx(p), top, sx(p), top + plot_h, stroke="#f0f0f0")
        svg.text(sx(p), top + plot_h + 16, f"{i * 10}%", size=11, anchor="middle", fill="#444")
    _axes(
        svg,
        left,
        top,
        plot_w,
        plot_h,
        height,
        size,
        "attacker knowledge (share of the attackable members the attacker knows)",
        "attack ROC AUC",
    )
    # chance
    svg.line(left, sy(0.5), left + plot_w, sy(0.5), stroke="#666", width=1.2, dash="6 4")
    svg.text(left + plot_w - 4, sy(0.5) - 5, "0.5 = guessing", size=11, anchor="end", fill="#555")

    n = len(points)
    for k, (name, pts) in enumerate(points.items()):
        colour = colours.get(name, "#333")
        dodge = (k - (n - 1) / 2) * 3.0  # spread error bars of models at the same proportion
        xy = [(sx(p) + dodge, sy(m)) for p, m, _ in pts]
        if len(xy) > 1:
            svg.add(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
                + '"/>'
            )
        for (p, m, s), (x, y) in zip(pts, xy, strict=True):
            if s > 0:
                y1, y2 = sy(min(hi, m + s)), sy(max(lo, m - s))
                svg.line(x, y1, x, y2, stroke=colour, width=1.2)
                svg.line(x - 3, y1, x + 3, y1, stroke=colour, width=1.2)
                svg.line(x - 3, y2, x + 3, y2, stroke=colour, width=1.2)
            is_strongest = name == strongest[0] and strongest[1] is not None and abs(p - strongest[1]) < 1e-9
            radius = 5.5 if is_strongest else 3.5
            ring = ' stroke="#000" stroke-width="1.5"' if is_strongest else ""
            svg.add(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" fill="{colour}"{ring}>'
                f"<title>{_e(name)} at {_e(_share(p))} known: AUC {m:.3f} ± {s:.3f}</title></circle>"
            )
    _legend(
        svg, left + plot_w + 24, top + 14, [(name, colours.get(name, "#333"), None) for name in points], size
    )
    return svg.to_string()


def _log_pos(value: float) -> float:
    """Position in [0, 1] of ``value`` on a log axis from :data:`LOG_FLOOR` to 1 (clamped)."""
    value = min(1.0, max(LOG_FLOOR, value))
    return (math.log10(value) - math.log10(LOG_FLOOR)) / -math.log10(LOG_FLOOR)


def _valid_curves(curves: Any) -> list[tuple[str, float | None, list[float], list[float]]]:
    found = []
    for curve in curves if isinstance(curves, list) else []:
        if not isinstance(curve, Mapping):
            continue
        fpr, tpr = curve.get("fpr"), curve.get("tpr")
        if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr):
            continue
        pairs = [
            (f, t)
            for f, t in zip(map(_num, fpr), map(_num, tpr), strict=True)
            if f is not None and t is not None
        ]
        if not pairs:
            continue
        if len(pairs) > MAX_CURVE_POINTS:  # thin evenly, keeping both ends
            stride = len(pairs) / MAX_CURVE_POINTS
            pairs = [pairs[int(i * stride)] for i in range(MAX_CURVE_POINTS)] + [pairs[-1]]
        found.append(
            (
                str(curve.get("attack_model", "?")),
                _num(curve.get("proportion")),
                [f for f, _ in pairs],
                [t for _, t in pairs],
            )
        )
    return found


def _roc_chart(
    curves: list[tuple[str, float | None, list[float], list[float]]], colours: Mapping[str, str]
) -> str:
    """ROC curves on log-log axes (0.1%..100% on both), with the chance diagonal."""
    size = 12
    labels = [f"{name} ({_share(p)} known)" if p is not None else name for name, p, _, _ in curves]
    legend_w = _legend_width(labels + ["guessing"], size)
    left, top, bottom = 64, 16, 52
    plot = 420.0
    width = left + plot + 24 + legend_w + 12
    height = top + plot + bottom
    svg = _Svg(width, height, "roc", "ROC curves of the strongest attacks on log-log axes")

    def sx(v: float) -> float:
        return left + _log_pos(v) * plot

    def sy(v: float) -> float:
        return top + (1 - _log_pos(v)) * plot

    for decade in range(-3, 1):
        base = 10.0**decade
        if decade < 0:
            for minor in range(2, 10):  # minor grid lines
                svg.line(sx(base * minor), top, sx(base * minor), top + plot, stroke="#f3f3f3")
                svg.line(left, sy(base * minor), left + plot, sy(base * minor), stroke="#f3f3f3")
        svg.line(sx(base), top, sx(base), top + plot, stroke="#dddddd")
        svg.line(left, sy(base), left + plot, sy(base), stroke="#dddddd")
        label = f"{base * 100:g}%"
        svg.text(sx(base), top + plot + 16, label, size=11, anchor="middle", fill="#444")
        svg.text(left - 6, sy(base) + 4, label, size=11, anchor="end", fill="#444")
    _axes(
        svg,
        left,
        top,
        plot,
        plot,
        height,
        size,
        "false-positive rate (non-members wrongly flagged), log scale",
        "true-positive rate (members found), log scale",
    )
    svg.line(sx(LOG_FLOOR), sy(LOG_FLOOR), sx(1), sy(1), stroke="#666", width=1.2, dash="6 4")

    for (name, _, fpr, tpr), label in zip(curves, labels, strict=True):
        colour = colours.get(name, "#333")
        xy: list[tuple[float, float]] = []
        for f, t in zip(fpr, tpr, strict=True):
            point = (round(sx(f), 1), round(sy(t), 1))
            if not xy or xy[-1] != point:
                xy.append(point)
        if len(xy) == 1:
            svg.add(f'<circle cx="{xy[0][0]:.1f}" cy="{xy[0][1]:.1f}" r="3" fill="{colour}"/>')
        svg.add(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            + f'"><title>{_e(label)}</title></polyline>'
        )
    entries = [
        (label, colours.get(name, "#333"), None) for (name, *_), label in zip(curves, labels, strict=True)
    ]
    _legend(svg, left + plot + 24, top + 14, entries + [("guessing", "#666", "6 4")], size)
    return svg.to_string()


def _valid_classes(per_class: Any) -> list[Mapping[str, Any]]:
    return [
        c
        for c in (per_class if isinstance(per_class, list) else [])
        if isinstance(c, Mapping) and "label" in c
    ]


def _class_chart(classes: list[Mapping[str, Any]]) -> tuple[str, str]:
    """Per-class horizontal bars: AUC (left panel) and TPR at 1% FPR (right panel). Returns (svg, note)."""
    note = ""
    if len(classes) > MAX_CLASS_BARS:
        note = (
            f"Showing the {MAX_CLASS_BARS} classes with the highest attack AUC of {len(classes)}; "
            "the table below lists them all."
        )
        classes = sorted(classes, key=lambda c: -(_num(c.get("auc")) or 0.0))[:MAX_CLASS_BARS]
    size, row_h = 12, 24
    labels = [_short(str(c.get("label")), 24) for c in classes]
    label_w = max(_text_width(label, size) for label in labels) + 14
    gap = 60.0
    tpr_values = [_num(c.get("tpr_at_1pct_fpr")) or 0.0 for c in classes]
    tpr_max = min(1.0, max(0.1, math.ceil(max(tpr_values) * 10 + 1e-9) / 10))
    left, top = label_w + 8, 34
    value_room = 46  # for the number printed after each bar
    panel = max(200.0, (CHART_WIDTH - left - 2 * value_room - gap - 8) / 2)
    width = left + panel + value_room + gap + panel + value_room + 8
    height = top + len(classes) * row_h + 40
    svg = _Svg(
        width, height, "per_class", "Per-class attack AUC and true-positive rate at 1% false positives"
    )
    panels = (
        ("auc", "attack AUC (0.5 = guessing)", 1.0, 0.5, "#0072B2", _fixed),
        (
            "tpr_at_1pct_fpr",
            "members found at 1% FPR (1% = guessing)",
            tpr_max,
            0.01,
            "#D55E00",
            _pct,
        ),
    )
    for k, (key, title, vmax, chance, colour, fmt) in enumerate(panels):
        x0 = left + k * (panel + value_room + gap)
        svg.text(x0, 16, title, size=size, weight="bold")
        base_y = top + len(classes) * row_h
        step = _nice_step(vmax, 5)
        for i in range(int(round(vmax / step)) + 1):
            v = i * step
            x = x0 + v / vmax * panel
            svg.line(x, top - 4, x, base_y, stroke="#ececec")
            svg.text(
                x,
                base_y + 16,
                f"{v:.2f}" if key == "auc" else f"{v * 100:g}%",
                size=11,
                anchor="middle",
                fill="#444",
            )
        for i, c in enumerate(classes):
            value = _num(c.get(key))
            y = top + i * row_h
            if value is not None:
                bar = max(0.0, min(value, vmax)) / vmax * panel
                svg.add(
                    f'<rect x="{x0:.1f}" y="{y + 4:.1f}" width="{bar:.1f}" height="{row_h - 8}" fill="{colour}">'
                    f"<title>{_e(c.get('label'))}: {_e(fmt(value))}</title></rect>"
                )
                # the figure goes after the bar, or after the chance line when the bar stops short of it
                svg.text(
                    x0 + max(bar, chance / vmax * panel) + 4,
                    y + row_h / 2 + 4,
                    fmt(value),
                    size=11,
                    fill="#333",
                )
        cx = x0 + chance / vmax * panel
        svg.line(cx, top - 4, cx, base_y, stroke="#444", width=1.2, dash="5 3")
        svg.line(x0, top - 4, x0, base_y, stroke="#444")
    for i, (c, label) in enumerate(zip(classes, labels, strict=True)):
        svg.text(
            left - 10,
            top + i * row_h + row_h / 2 + 4,
            label,
            size=size,
            anchor="end",
            title=str(c.get("label")),
        )
    return svg.to_string(), note


# ---------------------------------------------------------------- reproduction


def _is_option(key: str, value: Any) -> bool:
    """Whether a ``settings`` entry is an option a user passes back (not a run-time result)."""
    return key not in NOT_OPTIONS and not key.startswith("resolved_") and not isinstance(value, Mapping)


def cli_command(settings: Mapping[str, Any], bundle: str = "BUNDLE", multiline: bool = False) -> str:
    """The ``mia-robustness audit`` command line that reproduces ``settings``.

    Parameters
    ----------
    settings:
        The report's ``settings`` (option name -> resolved value); run-time results such as
        ``resolved_device`` and unset (``None``) options are left out.
    bundle:
        What to write for the bundle's path.
    multiline:
        One flag per line with shell continuations, for display.

    Returns the shell-quoted command (not HTML-escaped).
    """
    words = [["mia-robustness", "audit", bundle]]
    for key, value in settings.items():
        if value is None or not _is_option(str(key), value):
            continue
        if isinstance(value, (list, tuple)):
            text = ",".join(_option_value(v) for v in value)
        else:
            text = _option_value(value)
        words.append([f"--{str(key).replace('_', '-')}", text])
    lines = [" ".join(shlex.quote(word) for word in group) for group in words]
    return " \\\n  ".join(lines) if multiline else " ".join(lines)


def _settings_json(settings: Mapping[str, Any]) -> str:
    """The options as a JSON object, one option per line (lists kept on their line)."""
    items = [(str(k), v) for k, v in settings.items() if _is_option(str(k), v)]
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, default=str)}" for k, v in items)
    return "{\n" + body + "\n}" if items else "{}"


def _option_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


# ---------------------------------------------------------------- page sections


CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f6f7f9; color: #1d1d1f; font: 15px/1.5 FONT_STACK; overflow-wrap: break-word; }
main { max-width: 1000px; margin: 0 auto; padding: 24px 28px 40px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin: 20px 0 6px; }
p { margin: 6px 0; }
.sub { color: #555; margin: 0 0 16px; }
.headline { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.tile { flex: 1 1 150px; border: 1px solid #ddd; border-radius: 8px; padding: 10px 14px; }
.tile .k { font-size: 13px; color: #555; font-weight: 400; }
.tile .v { font-size: 22px; font-weight: 600; overflow-wrap: anywhere; }
.badge { display: inline-block; white-space: nowrap; padding: 2px 14px; border-radius: 999px; color: #fff; font-weight: 700;
         letter-spacing: 0.05em; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.summary { background: #f4f7fb; border-left: 4px solid #0072B2; padding: 10px 16px; margin: 12px 0; }
.howto { background: #fbfaf3; border: 1px solid #e6e0c0; border-radius: 8px; padding: 8px 16px; margin: 12px 0; font-size: 14px; }
.howto dt { font-weight: 600; margin-top: 6px; }
.howto dd { margin: 0 0 0 16px; }
figure { margin: 12px 0 20px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-size: 14px; color: #444; margin-top: 4px; }
svg.chart { display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 3px 8px; text-align: right; vertical-align: top; white-space: nowrap; }
table.full { width: 100%; }
th { background: #f2f2f2; font-weight: 600; white-space: normal; }
td.l, th.l { text-align: left; }
td.wrap { white-space: normal; overflow-wrap: anywhere; min-width: 6em; max-width: 30em; }
tr.strongest td { background: #fff3cd; font-weight: 600; }
table.facts { width: 100%; }
table.facts td, table.facts th { text-align: left; white-space: normal; overflow-wrap: anywhere; }
table.facts th { width: 40%; background: none; font-weight: 500; color: #444; }
.cols { display: flex; flex-wrap: wrap; gap: 24px; }
.cols > div { flex: 1 1 380px; min-width: 0; }
.warn { background: #fff4e5; border-left: 4px solid #C25E00; padding: 8px 16px; }
pre { background: #f4f4f4; padding: 10px 12px; border-radius: 6px; font-size: 13px; white-space: pre-wrap;
      overflow-wrap: break-word; }
code { font-family: ui-monospace, 'DejaVu Sans Mono', Menlo, Consolas, monospace; }
.note { color: #555; font-size: 13px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { background: #fff; font-size: 12px; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  .summary, tr, .tile { break-inside: avoid; page-break-inside: avoid; }
  .tile { flex-basis: 110px; }
}
""".replace("FONT_STACK", FONT)


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    left_cols: int = 1,
    row_classes: Sequence[str] | None = None,
    cls: str = "",
    wrap: bool = False,
) -> str:
    """An HTML table; cells are already-escaped HTML; the first ``left_cols`` columns align left.

    ``wrap`` lets those left columns break anywhere (user-supplied labels may be long unbroken strings).
    """
    head = "".join(
        f'<th class="l">{h}</th>' if i < left_cols else f"<th>{h}</th>" for i, h in enumerate(headers)
    )
    left = '<td class="l wrap">' if wrap else '<td class="l">'
    body = []
    for r, row in enumerate(rows):
        klass = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        cells = "".join(f"{left}{c}</td>" if i < left_cols else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{klass}>{cells}</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _facts(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _header(report: Mapping[str, Any]) -> str:
    summary = report.get("summary") or {}
    level = str(summary.get("risk_level", "unknown"))
    colour = RISK_COLOURS.get(level, "#555")
    score = summary.get("robustness_score")
    strongest = str(summary.get("strongest_attack", "—"))
    proportion = summary.get("strongest_proportion")
    version = report.get("tool_version") or ""
    schema = report.get("schema_version") or ""
    tiles = [
        (
            "Membership-inference risk",
            f'<span class="badge risk-{_e(level)}" style="background:{colour}">{_e(level.upper())}</span>',
        ),
        ("Robustness score (100 = safe)", f"{_e(score)}/100" if score is not None else "—"),
        (
            "Strongest attack",
            f'{_e(strongest)}<div class="k">at {_e(_share(proportion))} attacker knowledge</div>',
        ),
        ("Its ROC AUC (0.5 = guessing)", _fixed(summary.get("auc"), 2)),
        ("Members it finds at 1% false positives", _pct(summary.get("tpr_at_1pct_fpr"))),
    ]
    tile_html = "".join(
        f'<div class="tile"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>' for k, v in tiles
    )
    made = " · ".join(
        x
        for x in (
            f"mia-robustness {_e(version)}" if version else "",
            f"report schema {_e(schema)}" if schema else "",
        )
        if x
    )
    return (
        "<header><h1>Membership-inference robustness report</h1>"
        f'<p class="sub">Can an attacker tell whether a record was in this model\'s training data? {made}</p>'
        f'<div class="headline">{tile_html}</div></header>'
    )


def _summary_section(summary: Mapping[str, Any]) -> str:
    sentences = [s for s in summary.get("sentences") or [] if isinstance(s, str)]
    extra = []
    ci = summary.get("ci95")
    if isinstance(ci, Mapping) and ci:
        parts = []
        for key, bounds in ci.items():
            if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
                fmt = _fixed if key in ("auc", "advantage", "accuracy") else _pct
                digits = 3 if fmt is _fixed else 1
                parts.append(
                    f"{_e(_METRIC_LABELS.get(key, key))} {fmt(bounds[0], digits)} to {fmt(bounds[1], digits)}"
                )
        if parts:
            extra.append("95% confidence intervals for the strongest attack: " + "; ".join(parts) + ".")
    if "epsilon_lower_bound" in summary:
        eps = _num(summary.get("epsilon_lower_bound"))
        if eps is None:
            extra.append(
                "No differential-privacy bound could be inferred from these attacks (they are too weak "
                "at low false-positive rates to prove any)."
            )
        else:
            extra.append(
                f"Empirical differential-privacy lower bound: ε ≥ {eps:.2f}. Had the model been trained "
                f"with differential privacy, its ε would have to be at least this large for these attacks to succeed."
            )
    body = "".join(f"<p>{_e(s)}</p>" for s in sentences) + "".join(f"<p>{s}</p>" for s in extra)
    return f'<section id="summary"><h2>Summary</h2><div class="summary">{body or "<p>No summary in this report.</p>"}</div></section>'


_METRIC_LABELS = {
    "auc": "ROC AUC",
    "advantage": "advantage",
    "accuracy": "accuracy",
    "tpr_at_1pct_fpr": "members found at 1% FPR",
    "tpr_at_0_1pct_fpr": "members found at 0.1% FPR",
}


def _howto() -> str:
    # Imported here, not at module level: report.py imports this module to register the format.
    from .report import CHANCE_MARGIN, KNOWLEDGE_SHARE, RISK_RULES

    rules = "; ".join(
        f"<b>{_e(level)}</b> if AUC ≥ {auc:.2f} or members found at 1% FPR ≥ {tpr:.0%}"
        for level, auc, tpr in RISK_RULES
    )
    return f"""<section id="howto" class="howto"><h3>How to read this report</h3><dl>
<dt>The attack</dt><dd>An attacker who can query the model, and who knows some of its training records, trains a
classifier to guess whether any other record was in the training data (a <i>member</i>). Several attack models
are tried at several levels of attacker knowledge; the report judges the model by the strongest.</dd>
<dt>ROC AUC</dt><dd>How well the attack ranks members above non-members: 0.50 is a coin toss, 1.00 is a perfect
separation. Above about 0.60 the model leaks noticeably.</dd>
<dt>Members found at 1% (or 0.1%) false positives</dt><dd>The share of training records the attacker can
identify while wrongly accusing only 1% (0.1%) of outsiders. Guessing finds 1% (0.1%). This matters more than
AUC for privacy: an attack that is sure about a few records harms those people even when its average is
unimpressive.</dd>
<dt>Advantage</dt><dd>The largest gap between the share of members found and the share of non-members wrongly
flagged (TPR − FPR); 0 means no better than guessing, 1 means every record is told apart.
The robustness score is 100 × (1 − the largest advantage of any attack).</dd>
<dt>Risk levels</dt><dd>{rules}; otherwise <b>minimal</b>.</dd>
<dt>Attacker knowledge</dt><dd>The share of the members available to the attacker that it actually knows (and as
many non-members). If the risk is already high at low knowledge, keeping data secret protects little. The
summary names the smallest knowledge level that gives {KNOWLEDGE_SHARE:.0%} of the full-knowledge attack's
gain over guessing (none when that attack is within {CHANCE_MARGIN:.2f} AUC of guessing).</dd>
</dl></section>"""


def _results_table(results: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> str:
    strongest = (str(summary.get("strongest_attack")), _num(summary.get("strongest_proportion")))
    repeats = {str(r.get("repeats", "—")) for r in results}
    # One repeat count for every row (the usual case) goes in the note, leaving the table room at A4 width.
    per_row_repeats = len(repeats) > 1
    rows, classes = [], []
    for name, group in _results_by_attack(results).items():
        for r in group:
            mean, std = r.get("mean") or {}, r.get("std") or {}
            p = _num(r.get("proportion"))
            cells = [
                _e(name),
                _e(_share(p)),
                f"{_fixed(mean.get('auc'))} ± {_fixed(std.get('auc'))}",
                _fixed(mean.get("advantage")),
                _pct(mean.get("tpr_at_1pct_fpr")),
                _pct(mean.get("tpr_at_0_1pct_fpr")),
                _fixed(mean.get("accuracy")),
                _e(r.get("train_rows", "—")),
            ]
            rows.append(cells + ([_e(r.get("repeats", "—"))] if per_row_repeats else []))
            hit = (
                name == strongest[0]
                and p is not None
                and strongest[1] is not None
                and abs(p - strongest[1]) < 1e-9
            )
            classes.append("strongest" if hit else "")
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
    over = "repeats" if per_row_repeats else f"{_e(next(iter(repeats)))} repeats"
    return (
        '<section id="results"><h2>All results</h2>'
        f'<p class="note">Mean over {over} (± standard deviation for AUC). The highlighted row is the strongest '
        "attack. Knowledge is the share of the attackable members the attacker knows; attacker rows are the "
        "members and non-members it trained on.</p>"
        + _table([_e(h) for h in headers], rows, left_cols=1, row_classes=classes, cls="full")
        + "</section>"
    )


def _attack_descriptions(results: Sequence[Mapping[str, Any]]) -> str:
    seen: dict[str, str] = {}
    for r in results:
        seen.setdefault(str(r.get("attack_model", "?")), str(r.get("knowledge", "")))
    if not any(seen.values()):
        return ""
    if len(set(seen.values())) == 1:
        return f'<p class="note">Every attack assumes the attacker has {_e(next(iter(seen.values())))}.</p>'
    items = "".join(f"<li><b>{_e(k)}</b>: assumes {_e(v)}</li>" for k, v in seen.items() if v)
    return f'<p class="note">What each attack assumes the attacker has:</p><ul class="note">{items}</ul>'


def _facts_section(report: Mapping[str, Any]) -> str:
    target, data = report.get("target") or {}, report.get("data") or {}
    if not target and not data:
        return ""
    classes = target.get("classes")
    class_text = ", ".join(str(c) for c in classes) if isinstance(classes, list) else classes
    if isinstance(classes, list) and len(classes) > 20:
        class_text = ", ".join(str(c) for c in classes[:20]) + f", … ({len(classes)} in all)"
    target_rows = [
        (
            "model",
            _e(target.get("model_class", "—"))
            + (
                f" ({_e(target['estimator_class'])})"
                if target.get("estimator_class")
                and target.get("estimator_class") != target.get("model_class")
                else ""
            ),
        ),
        (
            "classes",
            f"{_e(target.get('n_classes', '—'))}: {_e(class_text)}"
            if class_text
            else _e(target.get("n_classes", "—")),
        ),
        ("features", _e(target.get("n_features", "—"))),
        ("accuracy on training rows (members)", _pct(target.get("member_accuracy"))),
        ("accuracy on unseen rows (non-members)", _pct(target.get("non_member_accuracy"))),
        ("gap (overfitting)", _pct(target.get("accuracy_gap"))),
        (
            "scikit-learn saved with / run with",
            f"{_e(target.get('sklearn_version_saved') or 'unknown')} / {_e(target.get('sklearn_version_runtime') or 'unknown')}",
        ),
    ]
    data_rows = [
        ("bundle layout", _e(data.get("layout", "—"))),
        ("label column", _e(data.get("label_column", "—"))),
        ("feature columns", _e(data.get("feature_columns", "—"))),
        (
            "members / non-members available",
            f"{_e(data.get('members_available', '—'))} / {_e(data.get('non_members_available', '—'))}",
        ),
        ("rows used per side", _e(data.get("rows_per_side", "—"))),
        ("balancing", _e(data.get("balancing", "—"))),
        ("evaluation rows per side", _e(data.get("eval_rows_per_side", "—"))),
        ("attacker pool per side", _e(data.get("attacker_pool_per_side", "—"))),
    ]
    return (
        '<section id="facts"><h2>Model and data</h2><div class="cols">'
        f"<div><h3>Target model</h3>{_facts(target_rows)}</div>"
        f"<div><h3>Data</h3>{_facts(data_rows)}</div></div></section>"
    )


def _correctness_section(groups: Any) -> str:
    groups = [g for g in groups or [] if isinstance(g, Mapping)] if isinstance(groups, list) else []
    if not groups:
        return ""
    rows = [
        [
            _e(g.get("group")),
            _e(g.get("members", "—")),
            _e(g.get("non_members", "—")),
            _fixed(g.get("auc")),
            _pct(g.get("tpr_at_1pct_fpr")),
        ]
        for g in groups
    ]
    return (
        '<section id="by-correctness"><h2>Risk by whether the model was right (strongest attack)</h2>'
        "<p>Within each group the simple signal &ldquo;the model got it right&rdquo; is the same for everyone, so "
        "what the attack still finds there comes from how confident the model is, not only from its accuracy "
        "gap. A dash means one side has no records in that group.</p>"
        + _table(["rows", "members", "non-members", "AUC", "TPR at 1% FPR"], rows, left_cols=1)
        + "</section>"
    )


def _exposed_section(exposed: Any) -> str:
    if not isinstance(exposed, Mapping):
        return ""
    share = exposed.get("share_of_members_at_1pct_fpr")
    top = [t for t in exposed.get("top") or [] if isinstance(t, Mapping)]
    parts = ['<section id="exposed"><h2>Most exposed records</h2>']
    if _num(share) is not None:
        parts.append(
            f"<p>At a 1% false-positive rate the strongest attack flags {_pct(share)} of the training records "
            "as members. The records it is most sure about are below (row numbers in the members table); "
            "they are the first to check for unusual or sensitive values.</p>"
        )
    if top:
        shown = top[:MAX_EXPOSED_ROWS]
        rows = [[_e(t.get("row", "—")), _fixed(t.get("score"), 4)] for t in shown]
        parts.append(_table(["row", "attack score"], rows, left_cols=0))
        if len(top) > len(shown):
            parts.append(f'<p class="note">First {len(shown)} of {len(top)} listed in the JSON report.</p>')
    parts.append("</section>")
    return "".join(parts) if len(parts) > 2 else ""


def _settings_section(settings: Any) -> str:
    if not isinstance(settings, Mapping) or not settings:
        return ""
    command = cli_command(settings, multiline=True)
    extra = {k: v for k, v in settings.items() if not _is_option(str(k), v)}
    note = ""
    if extra:
        note = (
            '<p class="note">Resolved at run time: '
            + ", ".join(f"{_e(k)} = {_e(v)}" for k, v in extra.items())
            + ".</p>"
        )
    return (
        '<section id="settings"><h2>Settings (to reproduce this report)</h2>'
        "<p>The same bundle audited with the same settings gives the same figures (timings aside). "
        "Replace BUNDLE with the bundle's path:</p>"
        f'<pre class="cmd"><code>{_e(command)}</code></pre>{note}'
        "<p>The same settings as JSON (a bundle's <code>config.json</code> takes these names):</p>"
        f'<pre class="json"><code>{_e(_settings_json(settings))}</code></pre></section>'
    )


def _timings_section(timings: Any) -> str:
    if not isinstance(timings, Mapping) or not timings:
        return ""
    rows = [[_e(k.replace("_", " ")), _fixed(v, 2)] for k, v in timings.items()]
    return (
        '<section id="timings"><h2>Timings</h2><p class="note">Seconds per stage; per-attack figures are CPU '
        "seconds summed over parallel cells, so they can exceed the wall-clock total.</p>"
        + _table(["stage", "seconds"], rows, left_cols=1)
        + "</section>"
    )


def _warnings_section(warnings: Any) -> str:
    items = [w for w in warnings if w] if isinstance(warnings, list) else []
    if not items:
        return ""
    lis = "".join(f"<li>{_e(w)}</li>" for w in items)
    return f'<section id="warnings"><h2>Warnings</h2><div class="warn"><ul>{lis}</ul></div></section>'


# ---------------------------------------------------------------- the page


def render_html(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page.

    Parameters
    ----------
    report:
        The JSON-ready report dict (``Report.to_dict()`` or a report loaded from JSON). Optional parts
        (``curves``, ``per_class``, ``exposed_records``, ``summary.ci95``, ``summary.epsilon_lower_bound``,
        warnings, timings) are drawn when present and left out when absent.

    Returns
    -------
    str
        A complete HTML5 document with inline CSS and inline SVG charts; it loads nothing.
    """
    summary = report.get("summary") or {}
    results = [r for r in report.get("results") or [] if isinstance(r, Mapping)]
    curves = _valid_curves(report.get("curves"))
    classes = _valid_classes(report.get("per_class"))
    colours = attack_colours(
        [str(r.get("attack_model", "?")) for r in results] + [name for name, *_ in curves]
    )
    strongest = (str(summary.get("strongest_attack")), _num(summary.get("strongest_proportion")))

    sections = [_header(report), _summary_section(summary), _howto()]
    auc_svg = _auc_chart(results, colours, strongest)
    if auc_svg:
        sections.append(
            '<section id="auc-chart"><h2>Attack strength against attacker knowledge</h2><figure>'
            + auc_svg
            + "<figcaption>Mean ROC AUC of each attack model (bars: ± one standard deviation over repeats) as the "
            "attacker knows more of the training data. The dashed line is guessing; the ringed point is the strongest "
            "attack. A line that is flat and high means even a poorly informed attacker succeeds.</figcaption></figure>"
            + _attack_descriptions(results)
            + "</section>"
        )
    if curves:
        sections.append(
            '<section id="roc-chart"><h2>ROC curves of the strongest attacks</h2><figure>'
            + _roc_chart(curves, colours)
            + "<figcaption>Share of members found (up) against share of non-members wrongly flagged (right), both on "
            "log scales so the low false-positive region, where privacy harm is decided, is visible. The dashed "
            "diagonal is guessing; a curve well above it at 0.1%–1% false positives means some records are "
            "identified with confidence. Rates below 0.1% are drawn at 0.1%.</figcaption></figure></section>"
        )
    if classes:
        svg, note = _class_chart(classes)
        rows = [
            [
                _e(c.get("label")),
                _e(c.get("members", "—")),
                _e(c.get("non_members", "—")),
                _fixed(c.get("auc")),
                _pct(c.get("tpr_at_1pct_fpr")),
            ]
            for c in classes[:MAX_CLASS_ROWS]
        ]
        more = (
            f'<p class="note">First {MAX_CLASS_ROWS} of {len(classes)} classes; all are in the JSON report.</p>'
            if len(classes) > MAX_CLASS_ROWS
            else ""
        )
        sections.append(
            '<section id="per-class"><h2>Risk per class (strongest attack)</h2><figure>'
            + svg
            + "<figcaption>The strongest attack's success on the records of each label. A class far above the rest "
            "is where the model memorises most, often a small or unusual group."
            + (f" {_e(note)}" if note else "")
            + "</figcaption></figure>"
            + _table(
                ["label", "members", "non-members", "AUC", "TPR at 1% FPR"],
                rows,
                left_cols=1,
                wrap=True,
            )
            + more
            + "</section>"
        )
    sections.append(_correctness_section(report.get("by_correctness")))
    if results:
        sections.append(_results_table(results, summary))
    sections += [
        _exposed_section(report.get("exposed_records")),
        _warnings_section(report.get("warnings")),
        _facts_section(report),
        _settings_section(report.get("settings")),
        _timings_section(report.get("timings")),
    ]
    body = "\n".join(s for s in sections if s)
    risk = _e(str(summary.get("risk_level", "unknown")).upper())
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Membership-inference robustness report: {risk} risk</title>"
        f"<style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )
