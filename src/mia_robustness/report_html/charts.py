"""The page's charts: inline SVG drawn from numbers, every embedded text escaped.

Each builder returns one ``<svg>`` element as a string, the only markup the page template inserts
unescaped. Charts are drawn in a viewBox with margins sized from the longest label (estimated at
:data:`~.formatting.CHAR_WIDTH` x font size per character, a safe upper bound for common sans-serif fonts),
so axis labels and legends sit inside the drawing; the tests check that in a real browser.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .formatting import (
    FONT,
    escape,
    fixed,
    number,
    pct,
    results_by_attack,
    same_proportion,
    share,
    short,
    text_width,
)

LOG_FLOOR = 1e-3  # the ROC chart's axes run from 0.1% to 100%
MAX_CLASS_BARS = 30
MAX_CURVE_POINTS = 2000
CHART_WIDTH = 940.0  # viewBox width of the wide charts: the page's content width, so 12 units draw as 12px

# One ROC curve as drawn: (attack model, proportion or None, FPRs, TPRs), the two lists of equal length.
Curve = tuple[str, float | None, list[float], list[float]]


class Svg:
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
        inner = escape(content) + (f"<title>{escape(title)}</title>" if title and title != content else "")
        self.add(f"<text {attrs}>{inner}</text>")

    def to_string(self) -> str:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.width:.0f} {self.height:.0f}" '
            f'width="{self.width:.0f}" height="{self.height:.0f}" class="chart" data-chart="{self.chart}" '
            f'role="img" aria-label="{escape(self.label)}" font-family="{escape(FONT)}">'
            + "".join(self.parts)
            + "</svg>"
        )


def _legend(
    svg: Svg, x: float, y: float, entries: Sequence[tuple[str, str, str | None]], size: float = 12
) -> None:
    """Legend entries ``(label, colour, dash)`` stacked from (x, y) downwards."""
    for i, (label, colour, dash) in enumerate(entries):
        row = y + i * (size + 8)
        svg.line(x, row - size * 0.35, x + 22, row - size * 0.35, stroke=colour, width=2.5, dash=dash)
        svg.text(x + 28, row, short(label), size=size, title=label, cls="legend")


def _legend_width(labels: Iterable[str], size: float = 12) -> float:
    widest = max((text_width(short(label), size) for label in labels), default=0.0)
    return 28 + widest


def _nice_step(span: float, max_ticks: int) -> float:
    for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0):
        if span / step <= max_ticks:
            return step
    return 1.0


def _axes(
    svg: Svg,
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


# The AUC chart is drawn narrower than the page (and never scaled up), so that on a 700 px wide window,
# whose page column is about 644 px, its 12-unit text still renders at 12 px (the tests measure it).
AUC_CHART_WIDTH = 640.0
AUC_TEXT = 12
SINGLE_POINT_STEP = 7.0  # units between the markers of attacks measured at one proportion only
# One marker shape per attack model, in the colours' order: attacks that share a point stay told apart.
MARKERS = ("circle", "square", "triangle", "diamond", "triangle-down", "plus", "cross", "star", "hexagon")
_UNIT_SHAPES = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": [(0.0, -1.15), (1.0, 0.7), (-1.0, 0.7)],
    "diamond": [(0.0, -1.25), (1.1, 0.0), (0.0, 1.25), (-1.1, 0.0)],
    "triangle-down": [(0.0, 1.15), (1.0, -0.7), (-1.0, -0.7)],
    "plus": [
        (-0.35, -1.1),
        (0.35, -1.1),
        (0.35, -0.35),
        (1.1, -0.35),
        (1.1, 0.35),
        (0.35, 0.35),
        (0.35, 1.1),
        (-0.35, 1.1),
        (-0.35, 0.35),
        (-1.1, 0.35),
        (-1.1, -0.35),
        (-0.35, -0.35),
    ],  # fmt: skip
    "star": [
        (
            math.sin(i * math.pi / 5) * (1.25 if i % 2 == 0 else 0.55),
            -math.cos(i * math.pi / 5) * (1.25 if i % 2 == 0 else 0.55),
        )
        for i in range(10)
    ],  # fmt: skip
    "hexagon": [(math.cos(i * math.pi / 3) * 1.1, math.sin(i * math.pi / 3) * 1.1) for i in range(6)],
}
_UNIT_SHAPES["cross"] = [
    ((x - y) * math.sqrt(0.5), (x + y) * math.sqrt(0.5)) for x, y in _UNIT_SHAPES["plus"]
]


def marker_shapes(names: Iterable[str]) -> dict[str, str]:
    """A marker shape per attack model name, in first-seen order, cycling through :data:`MARKERS`."""
    shapes: dict[str, str] = {}
    for name in names:
        shapes.setdefault(name, MARKERS[len(shapes) % len(MARKERS)])
    return shapes


def _marker(
    shape: str, x: float, y: float, radius: float, fill: str, attrs: str = "", inner: str = ""
) -> str:
    """One marker centred on (x, y); ``attrs`` are extra attributes, ``inner`` its ``<title>``."""
    if shape not in _UNIT_SHAPES:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{fill}"{attrs}>{inner}</circle>'
    points = " ".join(f"{x + u * radius:.1f},{y + v * radius:.1f}" for u, v in _UNIT_SHAPES[shape])
    return f'<polygon points="{points}" fill="{fill}"{attrs}>{inner}</polygon>'


def auc_chart(
    results: Sequence[Mapping[str, Any]], colours: Mapping[str, str], strongest: tuple[str, float | None]
) -> str | None:
    """Mean AUC (± std error bars) against knowledge proportion: a line and markers per attack model.

    ``results`` are the report's result rows; ``strongest`` is (attack model, proportion) of the point to
    ring. An attack measured at one proportion only (LiRA, RMIA: full knowledge) is a marker of its own,
    exactly at its proportion, and a marker without a line in the legend; attacks measured at several are
    nudged a little apart sideways so that equal figures do not hide each other. The legend sits below the
    plot. ``None`` when no row has a proportion and a mean AUC.
    """
    groups = results_by_attack(results)
    points = {
        name: [
            (p, m, number((r.get("std") or {}).get("auc")) or 0.0)
            for r in rows
            if (p := number(r.get("proportion"))) is not None
            and (m := number((r.get("mean") or {}).get("auc"))) is not None
        ]
        for name, rows in groups.items()
    }
    points = {name: pts for name, pts in points.items() if pts}
    if not points:
        return None
    shapes = marker_shapes(points)
    lows = [m - s for pts in points.values() for _, m, s in pts] + [0.5]
    highs = [m + s for pts in points.values() for _, m, s in pts] + [0.5]
    lo = max(0.0, math.floor((min(lows) - 0.02) * 20) / 20)
    hi = min(1.0, math.ceil((max(highs) + 0.02) * 20) / 20)
    if hi - lo < 0.1:
        hi = min(1.0, lo + 0.1)
    step = _nice_step(hi - lo, 8)

    size = AUC_TEXT
    width = AUC_CHART_WIDTH
    left, top, right = 56.0, 12.0, 18.0  # the right margin holds the 100% label and the markers there
    plot_w, plot_h = width - left - right, 280.0
    entry_w = max(text_width(short(name), size) for name in points) + 40
    columns = max(1, min(len(points), int(plot_w // entry_w)))
    legend_rows = math.ceil(len(points) / columns)
    legend_top = top + plot_h + 58
    height = legend_top + legend_rows * (size + 10) + 4
    svg = Svg(
        width, height, "auc", "Attack AUC against attacker knowledge, one line or point per attack model"
    )

    def sx(p: float) -> float:
        return left + p * plot_w

    def sy(v: float) -> float:
        return top + (hi - v) / (hi - lo) * plot_h

    # grid and axes
    n_y = int(round((hi - lo) / step))
    for i in range(n_y + 1):
        v = lo + i * step
        svg.line(left, sy(v), left + plot_w, sy(v), stroke="#e3e3e3")
        svg.text(left - 6, sy(v) + 4, f"{v:.2f}", size=size, anchor="end", fill="#444")
    for i in range(11):
        p = i / 10
        svg.line(sx(p), top, sx(p), top + plot_h, stroke="#f0f0f0")
        svg.text(
            sx(p), top + plot_h + 16, f"{i * 10}%", size=size, anchor="middle", fill="#444", cls="x-tick"
        )
    _axes(
        svg,
        left,
        top,
        plot_w,
        plot_h,
        legend_top - 12,
        size,
        "attacker knowledge (share of the training records it could see)",
        "attack ROC AUC",
    )
    # chance
    svg.line(left, sy(0.5), left + plot_w, sy(0.5), stroke="#666", width=1.2, dash="6 4")
    svg.text(left + plot_w - 4, sy(0.5) - 5, "0.5 = guessing", size=size, anchor="end", fill="#555")

    swept = [name for name, pts in points.items() if len(pts) > 1]
    single = [name for name in points if name not in swept]
    for name, pts in points.items():
        colour = colours.get(name, "#333")
        # Spread the swept attacks' markers and error bars a little either side of their ticks; single
        # points (LiRA and RMIA variants, often of equal AUC) step leftwards from theirs, the last one on
        # it, so none is drawn past it.
        if name in swept:
            dodge = (swept.index(name) - (len(swept) - 1) / 2) * 2.5
        else:
            dodge = -SINGLE_POINT_STEP * (len(single) - 1 - single.index(name))
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
            is_strongest = name == strongest[0] and same_proportion(p, strongest[1])
            ring = (
                ' stroke="#000" stroke-width="1.5"' if is_strongest else ' stroke="#fff" stroke-width="0.8"'
            )
            attrs = f'{ring} class="point" data-attack="{escape(name)}" data-proportion="{p:g}"'
            title = f"<title>{escape(name)} at {escape(share(p))} known: AUC {m:.3f} ± {s:.3f}</title>"
            svg.add(_marker(shapes[name], x, y, 6.5 if is_strongest else 4.5, colour, attrs, title))
    for i, name in enumerate(points):
        x = left + (i % columns) * entry_w
        y = legend_top + (i // columns) * (size + 10) + size
        colour = colours.get(name, "#333")
        if name in swept:
            svg.line(x, y - size * 0.35, x + 26, y - size * 0.35, stroke=colour, width=2.5)
        legend_attrs = f' class="legend-point" data-attack="{escape(name)}"'
        svg.add(_marker(shapes[name], x + 13, y - size * 0.35, 4.5, colour, legend_attrs))
        svg.text(x + 32, y, short(name), size=size, title=name, cls="legend")
    return svg.to_string()


def _log_pos(value: float) -> float:
    """Position in [0, 1] of ``value`` on a log axis from :data:`LOG_FLOOR` to 1 (clamped)."""
    value = min(1.0, max(LOG_FLOOR, value))
    return (math.log10(value) - math.log10(LOG_FLOOR)) / -math.log10(LOG_FLOOR)


def valid_curves(curves: Any) -> list[Curve]:
    """The report's ``curves`` that can be drawn, thinned to :data:`MAX_CURVE_POINTS` points each.

    Entries that are not objects, lack ``fpr`` / ``tpr`` lists of one length, or have no finite point
    are left out (a malformed optional section is skipped, not fatal).
    """
    found = []
    for curve in curves if isinstance(curves, list) else []:
        if not isinstance(curve, Mapping):
            continue
        fpr, tpr = curve.get("fpr"), curve.get("tpr")
        if not isinstance(fpr, list) or not isinstance(tpr, list) or len(fpr) != len(tpr):
            continue
        pairs = [
            (f, t)
            for f, t in zip(map(number, fpr), map(number, tpr), strict=True)
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
                number(curve.get("proportion")),
                [f for f, _ in pairs],
                [t for _, t in pairs],
            )
        )
    return found


def roc_chart(curves: Sequence[Curve], colours: Mapping[str, str]) -> str:
    """ROC curves on log-log axes (0.1%..100% on both), with the chance diagonal."""
    size = 12
    labels = [f"{name} ({share(p)} known)" if p is not None else name for name, p, _, _ in curves]
    legend_w = _legend_width(labels + ["guessing"], size)
    left, top, bottom = 64, 16, 52
    plot = 420.0
    width = left + plot + 24 + legend_w + 12
    height = top + plot + bottom
    svg = Svg(width, height, "roc", "ROC curves of the strongest attacks on log-log axes")

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
            + f'"><title>{escape(label)}</title></polyline>'
        )
    entries = [
        (label, colours.get(name, "#333"), None) for (name, *_), label in zip(curves, labels, strict=True)
    ]
    _legend(svg, left + plot + 24, top + 14, entries + [("guessing", "#666", "6 4")], size)
    return svg.to_string()


def class_chart(classes: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Per-class horizontal bars: AUC (left panel) and TPR at 1% FPR (right panel). Returns (svg, note).

    ``classes`` are the report's ``per_class`` entries (each with a ``label``); above
    :data:`MAX_CLASS_BARS` only the classes with the highest AUC are drawn, and ``note`` says so.
    """
    note = ""
    if len(classes) > MAX_CLASS_BARS:
        note = (
            f"Showing the {MAX_CLASS_BARS} classes with the highest attack AUC of {len(classes)}; "
            "the table below lists them all."
        )
        classes = sorted(classes, key=lambda c: -(number(c.get("auc")) or 0.0))[:MAX_CLASS_BARS]
    size, row_h = 12, 24
    labels = [short(str(c.get("label")), 24) for c in classes]
    label_w = max(text_width(label, size) for label in labels) + 14
    gap = 60.0
    tpr_values = [number(c.get("tpr_at_1pct_fpr")) or 0.0 for c in classes]
    tpr_max = min(1.0, max(0.1, math.ceil(max(tpr_values) * 10 + 1e-9) / 10))
    left, top = label_w + 8, 34
    value_room = 46  # for the number printed after each bar
    panel = max(200.0, (CHART_WIDTH - left - 2 * value_room - gap - 8) / 2)
    width = left + panel + value_room + gap + panel + value_room + 8
    height = top + len(classes) * row_h + 40
    svg = Svg(width, height, "per_class", "Per-class attack AUC and true-positive rate at 1% false positives")
    panels = (
        ("auc", "attack AUC (0.5 = guessing)", 1.0, 0.5, "#0072B2", fixed),
        (
            "tpr_at_1pct_fpr",
            "members found at 1% FPR (1% = guessing)",
            tpr_max,
            0.01,
            "#D55E00",
            pct,
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
            value = number(c.get(key))
            y = top + i * row_h
            if value is not None:
                bar = max(0.0, min(value, vmax)) / vmax * panel
                svg.add(
                    f'<rect x="{x0:.1f}" y="{y + 4:.1f}" width="{bar:.1f}" height="{row_h - 8}" fill="{colour}">'
                    f"<title>{escape(c.get('label'))}: {escape(fmt(value))}</title></rect>"
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
