"""Numbers and names as the page shows them, and the page's colours; shared by the charts and the page.

Every helper takes a value as it comes from a report dict (possibly missing, null, NaN or of the wrong
type, as in an old or hand-edited report) and returns text; a value that is not a finite number is a dash.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies), then Paul Tol's wine,
# olive, teal and indigo, grey, then Tol's green, cyan, sand and purple: the default eleven attacks (lira,
# lira_offline, rmia, rmia_offline last) get eleven colours no two of which are near each other, with room for
# more before any repeats.
PALETTE = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#882255",
    "#999933",
    "#44AA99",
    "#332288",
    "#7F7F7F",
    "#117733",
    "#88CCEE",
    "#DDCC77",
    "#AA4499",
)
RISK_COLOURS = {"high": "#B00020", "medium": "#C25E00", "low": "#8A7400", "minimal": "#2E7D32"}
UNKNOWN_RISK_COLOUR = "#555"
# Estimated width of one character as a share of the font size: an upper bound for the sans-serif
# fonts a browser is likely to pick (DejaVu Sans, the widest common one, averages about 0.58).
CHAR_WIDTH = 0.62
# The page's font stack; report.css names the same one (a test holds them together).
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', Arial, sans-serif"
MAX_LEGEND_CHARS = 28
DASH = "—"


def escape(value: Any) -> str:
    """Escape any value for SVG / HTML text or an attribute (the chart builders' markup only)."""
    return html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """``value`` as a finite float, else ``None`` (missing, null, NaN, not a number, a bool)."""
    if isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def fixed(value: Any, digits: int = 3) -> str:
    """``0.6512`` -> ``0.651``."""
    result = number(value)
    return DASH if result is None else f"{result:.{digits}f}"


def pct(value: Any, digits: int = 1) -> str:
    """A rate as a percentage: ``0.0123`` -> ``1.2%``."""
    result = number(value)
    return DASH if result is None else f"{result * 100:.{digits}f}%"


def share(value: Any) -> str:
    """A knowledge proportion as a percentage without needless decimals (0.1 -> 10%, 0.125 -> 12.5%)."""
    result = number(value)
    return DASH if result is None else f"{result * 100:.4g}%"


def short(text: str, limit: int = MAX_LEGEND_CHARS) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_sentence(text: str) -> str:
    """``text`` with a capital first letter and a closing full stop (the what-if's reasons are clauses)."""
    text = text.strip()
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


def text_width(text: str, size: float) -> float:
    """An upper-bound width of ``text`` at font ``size`` (see :data:`CHAR_WIDTH`)."""
    return len(text) * size * CHAR_WIDTH


def attack_colours(names: Iterable[str]) -> dict[str, str]:
    """A colour per attack model name, in first-seen order, cycling through :data:`PALETTE`."""
    colours: dict[str, str] = {}
    for name in names:
        if name not in colours:
            colours[name] = PALETTE[len(colours) % len(PALETTE)]
    return colours


def results_by_attack(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Result rows grouped by attack model (first-seen order), each group by ascending proportion."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in results:
        groups.setdefault(str(row.get("attack_model", "?")), []).append(row)
    for rows in groups.values():
        rows.sort(key=lambda r: number(r.get("proportion")) or 0.0)
    return groups


def same_proportion(a: float | None, b: float | None) -> bool:
    """Whether two proportions are the same (both known, equal within float noise)."""
    return a is not None and b is not None and abs(a - b) < 1e-9


@dataclass(frozen=True)
class Table:
    """A table of plain-text cells; the first ``left_cols`` columns align left.

    ``row_classes`` holds one CSS class per row (``""`` for none); ``wrap`` lets the left columns break
    anywhere (user-supplied labels may be long unbroken strings).
    """

    headers: Sequence[str]
    rows: Sequence[Sequence[str]]
    left_cols: int = 1
    row_classes: Sequence[str] = ()
    cls: str = ""
    wrap: bool = False
