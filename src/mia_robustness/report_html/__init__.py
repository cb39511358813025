"""The report as one self-contained HTML page: Jinja2 templates, a CSS file, inline SVG charts, no scripts.

:func:`render_html` takes the JSON-ready report dict (``Report.to_dict()``, or a report loaded from JSON),
so it knows nothing of how the figures were made and renders old reports too: every section whose data is
absent (``curves``, ``per_class``, ``exposed_records``, ``remediation``, ``summary.ci95``, warnings, timings) is left out.

The page loads nothing: no fonts, scripts, images or stylesheets, and a Content-Security-Policy forbids
them, so it works offline and inside a locked-down container. Every string from the report is escaped:
the templates autoescape, and the chart builders escape each text they embed in their SVG (labels,
column names and attack names can come from user data).

- ``page.py``: report dict -> the text each section shows, and the one call to the template.
- ``charts.py``: the SVG charts, drawn from numbers.
- ``remediation.py``: the what-if's section ("What would reduce the risk"): its chart, table and rules.
- ``reproduce.py``: the settings as a command line and as ``config.json``.
- ``formatting.py``: number formats and colours shared by the page and the charts.
- ``templates/``: ``report.html`` (the page), ``macros.html`` (tables, tiles), ``report.css``.
"""

from __future__ import annotations

from .formatting import CHAR_WIDTH, PALETTE, RISK_COLOURS, attack_colours
from .page import render_html
from .reproduce import cli_command

__all__ = ["CHAR_WIDTH", "PALETTE", "RISK_COLOURS", "attack_colours", "cli_command", "render_html"]
