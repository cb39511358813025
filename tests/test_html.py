"""The HTML report: well-formed, self-contained, escaped, complete, and drawn whole in a real browser.

The report dicts are the engine's real sample report (``sample_input/report.json``) plus the optional fields
(``curves``, ``per_class``, ``exposed_records``, ``summary.ci95``) computed here from a real overfit model's
outputs, so the charts get realistic shapes (ROC points with FPR 0, uneven classes).
"""

from __future__ import annotations

import copy
import html
import json
import re
import shlex
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score, roc_curve

from builders import REPO_ROOT, measured_what_if_section, noisy_numeric_frame
from mia_robustness.cli import build_parser
from mia_robustness.options import OPTION_NAMES, options_from_mapping
from mia_robustness.report_html import CHAR_WIDTH, PALETTE, RISK_COLOURS, cli_command, render_html

SAMPLE_REPORT = REPO_ROOT / "sample_input" / "report.json"
SVG_NS = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert('x')</script>"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "embed", "source", "track", "wbr"}


# ---------------------------------------------------------------- report fixtures


def _sample() -> dict:
    return json.loads(SAMPLE_REPORT.read_text())


def _without_optional(report: dict) -> dict:
    """The report as an older engine wrote it: no curves, per-class or correctness figures, no what-if."""
    for key in ("curves", "per_class", "by_correctness", "exposed_records", "remediation"):
        report.pop(key, None)
    return report


def _tpr_at(fpr: np.ndarray, tpr: np.ndarray, level: float) -> float:
    return float(tpr[fpr <= level].max())


@pytest.fixture(scope="module")
def full_report() -> dict:
    """The sample report plus curves, per-class figures, CIs and exposed records from a real overfit model."""
    frame = noisy_numeric_frame(900, n_classes=3, noise=0.35, seed=3)
    x, y = frame.drop(columns="label").to_numpy(), frame["label"].to_numpy()
    model = RandomForestClassifier(n_estimators=40, random_state=0).fit(x[:450], y[:450])
    proba = model.predict_proba(x)
    member = np.r_[np.ones(450), np.zeros(450)]
    true_prob = proba[np.arange(len(y)), y]
    entropy = -(proba * np.log(np.clip(proba, 1e-12, 1))).sum(axis=1)
    signals = {  # one real membership signal per attack model name of the sample report
        "nn": true_prob,
        "rf": proba.max(axis=1),
        "gb": -entropy,
        "threshold": proba.max(axis=1) - np.sort(proba, axis=1)[:, -2],
    }
    report = _sample()
    best = {}
    for row in report["results"]:
        if row["attack_model"] not in best or row["mean"]["auc"] > best[row["attack_model"]]["mean"]["auc"]:
            best[row["attack_model"]] = row
    report["curves"] = []
    for name, score in signals.items():
        fpr, tpr, _ = roc_curve(member, score)
        keep = np.unique(np.linspace(0, len(fpr) - 1, 200).astype(int))
        report["curves"].append(
            {
                "attack_model": name,
                "proportion": best[name]["proportion"],
                "fpr": fpr[keep].tolist(),
                "tpr": tpr[keep].tolist(),
            }
        )
    report["per_class"] = []
    for label in np.unique(y):
        rows = y == label
        fpr, tpr, _ = roc_curve(member[rows], true_prob[rows])
        report["per_class"].append(
            {
                "label": f"class {label}",
                "members": int(member[rows].sum()),
                "non_members": int((1 - member[rows]).sum()),
                "auc": float(roc_auc_score(member[rows], true_prob[rows])),
                "tpr_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01),
            }
        )
    fpr, tpr, _ = roc_curve(member, true_prob)
    report["summary"]["ci95"] = {"auc": [0.66, 0.72], "tpr_at_1pct_fpr": [0.011, 0.049]}
    report["summary"]["epsilon_lower_bound"] = 0.84
    order = np.argsort(-true_prob[:450])[:10]
    report["exposed_records"] = {
        "share_of_members_at_1pct_fpr": _tpr_at(fpr, tpr, 0.01),
        "top": [{"row": int(i), "score": float(true_prob[i])} for i in order],
    }
    report["warnings"] = ["members and non-members balanced by subsampling 1,800 members to 1,500"]
    report["remediation"] = measured_what_if_section(x, y)
    return report


def _stress(report: dict) -> dict:
    """More attack models than the report has, long user labels, many classes."""
    report = copy.deepcopy(report)
    extra = []
    for name, shift in (("future_attack_a", 0.04), ("future_attack_b", 0.03), ("future_attack_c", -0.01)):
        for row in report["results"]:
            if row["attack_model"] == "nn":
                clone = copy.deepcopy(row)
                clone["attack_model"] = name
                clone["mean"]["auc"] = min(1.0, row["mean"]["auc"] + shift)
                extra.append(clone)
    report["results"] += extra
    report["curves"].append(dict(report["curves"][0], attack_model="future_attack_a"))
    report["per_class"] += [
        dict(
            report["per_class"][0],
            label="an unusually long class label that a user typed into the CSV, twice over",
        ),
        dict(report["per_class"][1], label="x" * 120),
    ]
    report["data"]["label_column"] = "income_bracket_as_reported_by_the_census_bureau_" * 3
    report["warnings"].append("w" * 300)
    return report


# ---------------------------------------------------------------- parsing helpers


class _Checker(HTMLParser):
    """Fails on unbalanced tags; collects the text outside tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _check_html(page: str) -> str:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors, checker.errors[:5]
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    return "".join(checker.text)


def _svgs(page: str) -> dict[str, ET.Element]:
    charts = {}
    for markup in re.findall(r"<svg\b.*?</svg>", page, flags=re.S):
        root = ET.fromstring(markup)  # raises on malformed XML
        charts[root.get("data-chart")] = root
    return charts


def _shape(marker: ET.Element) -> tuple:
    """A marker's outline relative to its first point (circles: the radius)."""
    if marker.tag == f"{SVG_NS}circle":
        return (marker.get("r"),)
    points = [tuple(map(float, p.split(","))) for p in marker.get("points").split()]
    return tuple((round(x - points[0][0]), round(y - points[0][1])) for x, y in points)


def _viewbox(root: ET.Element) -> tuple[float, float]:
    _, _, width, height = (float(v) for v in root.get("viewBox").split())
    return width, height


def _text_boxes(root: ET.Element):
    """Estimated box of every text element: (text, x0, y0, x1, y1), with :data:`CHAR_WIDTH` per character."""
    for node in root.iter(f"{SVG_NS}text"):
        text = "".join(node.itertext()) if node.find(f"{SVG_NS}title") is None else (node.text or "")
        x, y, size = float(node.get("x")), float(node.get("y")), float(node.get("font-size"))
        length = len(text) * size * CHAR_WIDTH
        start = {"start": 0.0, "middle": -length / 2, "end": -length}[node.get("text-anchor", "start")]
        if node.get("transform", "").startswith("rotate(-90"):
            yield text, x - size, y - length - start, x + 0.3 * size, y - start
        else:
            yield text, x + start, y - size, x + start + length, y + 0.3 * size


# ---------------------------------------------------------------- unit tests


def _sample_charts(report: dict) -> set[str]:
    """The charts the sample report draws: the what-if's too once the sample has a measured section."""
    section = report.get("remediation") or {}
    return {"auc", "roc", "per_class"} | (
        {"what_if"} if section.get("baseline") or section.get("variants") else set()
    )


def test_sample_report_renders_self_contained_and_well_formed():
    report = _sample()
    page = render_html(report)
    text = _check_html(page)
    charts = _svgs(page)
    assert set(charts) == _sample_charts(report)
    for sentence in report["summary"]["sentences"]:
        assert sentence in text
    summary = report["summary"]
    assert summary["risk_level"].upper() in text and f"{summary['robustness_score']}/100" in text
    assert 'id="by-correctness"' in page
    # nothing that would load or run anything
    lowered = page.lower()
    for needle in ("<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import", "https://"):
        assert needle not in lowered, needle
    assert set(re.findall(r"http://[^\"' ]+", page)) == {"http://www.w3.org/2000/svg"}
    assert "default-src 'none'" in page  # the CSP forbids loading anything even if markup slipped in
    # every result row is in the table
    assert text.count("± ") >= len(report["results"])


def test_auc_chart_has_every_attack_model_in_its_legend_with_its_own_colour(full_report):
    report = _stress(full_report)
    chart = _svgs(render_html(report))["auc"]
    legend = [node for node in chart.iter(f"{SVG_NS}text") if node.get("class") == "legend"]
    names = [node.text for node in legend]
    expected = list(dict.fromkeys(row["attack_model"] for row in report["results"]))
    assert names == expected
    assert len(expected) >= 7
    # one polyline per model, colours distinct and from the palette
    strokes = [line.get("stroke") for line in chart.iter(f"{SVG_NS}polyline")]
    swept = [
        a for a in expected if sum(r["attack_model"] == a for r in report["results"]) > 1
    ]  # single points: no line
    assert len(strokes) == len(swept) and len(set(strokes)) == len(swept)
    assert set(strokes) <= set(PALETTE)
    # the chance line at 0.5 is dashed
    assert any(line.get("stroke-dasharray") for line in chart.iter(f"{SVG_NS}line"))
    # a marker per result row, one shape per attack model, the strongest ringed
    markers = [node for node in chart.iter() if node.get("class") == "point"]
    assert len(markers) == len(report["results"])
    assert sum(1 for m in markers if m.get("stroke") == "#000") == 1
    shapes = {m.get("data-attack"): (m.tag, m.get("fill"), _shape(m)) for m in markers}
    assert len(set(shapes.values())) == len(expected)
    # a single-point attack is a marker without a line in the legend too; a swept one has both
    legend_points = {n.get("data-attack") for n in chart.iter() if n.get("class") == "legend-point"}
    assert legend_points == set(expected)
    legend_lines = [line for line in chart.iter(f"{SVG_NS}line") if line.get("stroke-width") == "2.5"]
    assert len(legend_lines) == len(swept)


def test_optional_sections_drawn_from_curves_per_class_and_extras(full_report):
    page = render_html(full_report)
    text = _check_html(page)
    charts = _svgs(page)
    assert set(charts) == {"auc", "roc", "per_class", "what_if"}
    width, height = _viewbox(charts["roc"])
    lines = list(charts["roc"].iter(f"{SVG_NS}polyline"))
    assert len(lines) == len(full_report["curves"])
    for line in lines:  # FPR 0 / TPR 0 clamped to the axis floor: every point stays on the drawing
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        assert len(points) >= 2
        assert all(0 <= x <= width and 0 <= y <= height for x, y in points)
    assert "nan" not in page.lower().replace("non-", "").replace("financ", "")
    bars = list(charts["per_class"].iter(f"{SVG_NS}rect"))
    assert len(bars) == 2 * len(full_report["per_class"])
    for entry in full_report["per_class"]:
        assert entry["label"] in text
    assert "95% confidence intervals" in text and "0.660 to 0.720" in text
    assert "ε ≥ 0.84" in text
    assert "Most exposed records" in text
    top_row = str(full_report["exposed_records"]["top"][0]["row"])
    assert f"<td>{top_row}</td>" in page
    assert full_report["warnings"][0] in text


def test_every_report_string_is_escaped(full_report):
    report = copy.deepcopy(full_report)
    report["per_class"][0]["label"] = EVIL
    report["curves"][0]["attack_model"] = EVIL
    for row in report["results"][:3]:
        row["attack_model"] = EVIL
    report["summary"]["strongest_attack"] = EVIL
    report["summary"]["sentences"].append(EVIL)
    report["summary"]["risk_level"] = EVIL
    report["target"]["classes"] = [EVIL, '"><b>']
    report["target"]["model_class"] = EVIL
    report["data"]["label_column"] = EVIL
    report["settings"]["label_column"] = EVIL
    report["warnings"] = [EVIL]
    report["timings"][EVIL] = 1.0
    report["tool_version"] = EVIL
    report["remediation"]["variants"][0]["name"] = EVIL
    report["remediation"]["recommended"] = {"variant": EVIL, "sentence": EVIL}
    report["remediation"]["rules"][0]["why"] = EVIL
    page = render_html(report)
    assert "<script" not in page.lower()
    assert '"><b>' not in page
    assert html.escape(EVIL, quote=True) in page
    text = _check_html(page)
    assert EVIL in text  # shown to the reader as text
    charts = _svgs(page)  # and the SVGs stay well-formed XML
    assert {"auc", "roc", "per_class", "what_if"} <= set(charts)


def test_renders_without_optional_parts():
    report = _without_optional(_sample())
    for key in ("warnings", "timings", "settings", "target", "data"):
        report.pop(key)
    page = render_html(report)
    _check_html(page)
    assert set(_svgs(page)) == {"auc"}
    for section in (
        "roc-chart",
        "per-class",
        "exposed",
        "what-if",
        "warnings",
        "settings",
        "timings",
        "facts",
    ):
        assert f'id="{section}"' not in page
    # a bare report: no results, summary only
    bare = render_html(
        {"summary": {"risk_level": "minimal", "robustness_score": 100, "sentences": ["Nothing leaks."]}}
    )
    text = _check_html(bare)
    assert "Nothing leaks." in text and "MINIMAL" in text and _svgs(bare) == {}
    # malformed optional parts are skipped, not fatal; non-finite figures are shown as a dash
    broken = _without_optional(_sample())
    broken["curves"] = [{"attack_model": "nn", "fpr": [0, 0.5], "tpr": [1]}, "junk"]
    broken["per_class"] = "junk"
    broken["results"][0]["mean"]["auc"] = float("nan")
    page = render_html(broken)
    _check_html(page)
    assert set(_svgs(page)) == {"auc"}
    assert "nan" not in re.sub(r"non-|financ", "", page.lower())


def test_many_classes_are_capped_in_the_chart_but_listed(full_report):
    report = copy.deepcopy(full_report)
    base = report["per_class"][0]
    report["per_class"] = [dict(base, label=f"label {i}", auc=0.5 + i / 400) for i in range(80)]
    page = render_html(report)
    chart = _svgs(page)["per_class"]
    assert len(list(chart.iter(f"{SVG_NS}rect"))) == 2 * 30
    labels = {node.text for node in chart.iter(f"{SVG_NS}text")}
    assert "label 79" in labels and "label 0" not in labels  # the 30 most exposed are drawn
    assert "Showing the 30 classes with the highest attack AUC of 80" in page
    assert page.count('<td class="l wrap">label ') == 80


def test_text_lies_inside_each_chart(full_report):
    """Estimated text boxes (upper-bound character width) fit every viewBox: no label is cut off."""
    for report in (full_report, _stress(full_report)):
        for name, root in _svgs(render_html(report)).items():
            width, height = _viewbox(root)
            for text, x0, y0, x1, y1 in _text_boxes(root):
                assert x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height, (
                    name,
                    text,
                    (x0, y0, x1, y1),
                    (width, height),
                )


@pytest.mark.parametrize("what_if", [True, False, None])
def test_settings_reproduce_the_audit_options(what_if):
    """The printed command parses with the real CLI and gives the same options; so does the JSON (the
    what-if's switch as --what-if / --no-what-if, left out when unset)."""
    settings = _sample()["settings"]
    settings.update({"label_column": "income level", "seed": 7, "proportions": [0.25, 0.5, 1.0]})
    settings.update({"what_if": what_if, "utility_budget": 2.5})
    expected = options_from_mapping({k: v for k, v in settings.items() if k in OPTION_NAMES})
    words = shlex.split(cli_command(settings))
    assert words[:3] == ["mia-robustness", "audit", "BUNDLE"]
    args = build_parser().parse_args(words[1:])
    from_cli = options_from_mapping(
        {k: v for k, v in vars(args).items() if k in OPTION_NAMES and v is not None}
    )
    assert from_cli == expected
    page = render_html(dict(_sample(), settings=settings))
    block = re.search(r'<pre class="json"><code>(.*?)</code></pre>', page, flags=re.S).group(1)
    assert options_from_mapping(json.loads(html.unescape(block))) == expected
    shown = html.unescape(re.search(r'<pre class="cmd"><code>(.*?)</code></pre>', page, flags=re.S).group(1))
    assert "\\\n" in shown
    # the multi-line form is the same command once the shell joins its continued lines
    assert shlex.split(shown.replace("\\\n", " ")) == words
    assert "resolved_device = cpu" in page


def _what_if_rows(page: str) -> list[list[str]]:
    table = re.search(r'<section id="what-if">.*?<tbody>(.*?)</tbody>', page, flags=re.S).group(1)
    return [
        [html.unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S)
    ]


def test_what_if_section_charts_every_config_and_draws_the_frontier(full_report):
    section = full_report["remediation"]
    configs = [section["baseline"], *section["variants"]]
    page = render_html(full_report)
    text = _check_html(page)
    # after the exposed records, before the warnings
    assert page.index('id="exposed"') < page.index('id="what-if"') < page.index('id="warnings"')
    assert section["recommended"]["sentence"] in text
    chart = _svgs(page)["what_if"]
    points = [node for node in chart.iter() if node.get("class") == "config"]
    assert [p.get("data-name") for p in points] == [c["name"] for c in configs]
    kinds = {p.get("data-kind"): (p.tag, p.get("fill"), _shape(p)) for p in points}
    assert set(kinds) == {"baseline", "retrained", "serving"} and len(set(kinds.values())) == 3
    # the frontier joins the configs flagged pareto, left to right; the recommendation is ringed
    frontier = [c for c in configs if c["pareto"]]
    (line,) = [node for node in chart.iter(f"{SVG_NS}polyline") if node.get("class") == "frontier"]
    xs = [float(p.split(",")[0]) for p in line.get("points").split()]
    assert len(xs) == len(frontier) >= 2 and xs == sorted(xs)
    ringed = [p.get("data-name") for p in points if p.get("stroke") == "#D55E00"]
    assert ringed == [section["recommended"]["variant"]] and ringed[0] != "baseline"
    # lower AUC is drawn lower (larger y); the target as audited is a star of its own
    by_name = {p.get("data-name"): p for p in points}
    best = min(configs, key=lambda c: c["attack"]["auc"])
    worst = max(configs, key=lambda c: c["attack"]["auc"])
    assert _centre_y(by_name[best["name"]]) > _centre_y(by_name[worst["name"]])
    assert len([node for node in chart.iter() if node.get("class") == "target"]) == 1
    # the table: one numbered row per config, in the JSON's order, the recommendation highlighted
    rows = _what_if_rows(page)
    assert [row[0] for row in rows] == [f"{i}. {c['name']}" for i, c in enumerate(configs, 1)]
    baseline = rows[0]
    low, high = section["baseline"]["utility"]["ci95"]["accuracy"]
    assert baseline[1] == f"{section['baseline']['utility']['accuracy']:.1%} ({low:.1%}–{high:.1%})"
    assert baseline[4].startswith(f"{section['baseline']['attack']['auc']:.3f} (")
    assert [row[-1] for row in rows] == ["yes" if c["pareto"] else "no" for c in configs]
    chosen = next(c for c in configs if c["name"] == section["recommended"]["variant"])
    assert f"AUC {chosen['auc_change']:+.3f}, accuracy {chosen['accuracy_change'] * 100:+.1f} pts" in text
    assert page.count('<tr class="strongest">') == 2  # the results table's strongest row, and this one
    rule = section["rules"][0]
    assert f"{rule['parameter']} = {rule['value']}" in text and rule["why"] in text
    # its cost, in the timings table, says what it is
    timed = render_html(dict(full_report, timings={"what_if": 12.5}))
    assert (
        '<td class="l">the what-if: retraining the recipe and its variants, then attacking each</td>' in timed
    )


def _centre_y(marker: ET.Element) -> float:
    if marker.tag == f"{SVG_NS}circle":
        return float(marker.get("cy"))
    ys = [float(p.split(",")[1]) for p in marker.get("points").split()]
    return (min(ys) + max(ys)) / 2


def test_what_if_skipped_says_why_in_one_sentence_and_keeps_the_rules(full_report):
    report = copy.deepcopy(full_report)
    why = (
        "The what-if was skipped: this audit ran no reference attacks (lira, rmia); "
        "set what_if=true to run it anyway."
    )
    report["remediation"] = dict(
        report["remediation"],
        status="skipped",
        skipped=why,
        baseline=None,
        variants=[],
        recommended={"variant": None, "sentence": ""},
    )
    page = render_html(report)
    text = _check_html(page)
    section = re.search(r'<section id="what-if">(.*?)</section>', page, flags=re.S).group(1)
    assert html.unescape(re.sub(r"<[^>]+>", "", section)).count(why) == 1
    assert "what_if" not in _svgs(page) and "<table" not in section
    assert report["remediation"]["rules"][0]["why"] in text
    # skipped fits with the serving-side rows (measured on the target, no fit): drawn, but no frontier, and
    # no protocol of fits that did not happen
    serving = [v for v in full_report["remediation"]["variants"] if v["kind"] == "serving"]
    report["remediation"]["variants"] = serving
    page = render_html(report)
    _check_html(page)
    chart = _svgs(page)["what_if"]
    assert {n.get("data-kind") for n in chart.iter() if n.get("class") == "config"} == {"serving"}
    legend = [n.text for n in chart.iter(f"{SVG_NS}text") if n.get("class") == "legend"]
    assert legend == ["serving-side option", "target as audited"]
    assert "fitted" not in page and "Pareto" not in page and "without retraining" in page
    assert [row[0] for row in _what_if_rows(page)] == [f"{i}. {v['name']}" for i, v in enumerate(serving, 1)]
    # an old report (no section), or a malformed one, has no what-if section at all
    for value in (None, "junk", [1, 2]):
        report["remediation"] = value
        assert 'id="what-if"' not in render_html(report)
    # a config with no figures is listed but not drawn; a section with none drawable has no chart
    report["remediation"] = dict(full_report["remediation"], variants=[{"name": "x", "kind": "retrained"}])
    report["remediation"]["baseline"] = {
        "name": "baseline",
        "kind": "baseline",
        "utility": {"accuracy": "n/a"},
    }
    page = render_html(report)
    _check_html(page)
    assert "what_if" not in _svgs(page)
    assert [row[0] for row in _what_if_rows(page)] == ["1. baseline", "2. x"]


# ---------------------------------------------------------------- the browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run_chromium(
    binary: str, profile: Path, width: int, height: int, *args: str
) -> subprocess.CompletedProcess:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


# Test-only probe (the report itself has no scripts, and its CSP would block this): measures, in the laid-out
# page, whether any text of any chart falls outside its SVG, any chart outside the page column, and whether
# the page scrolls sideways; writes the findings into the DOM for --dump-dom.
PROBE = """<script>
(function () {
  const out = {charts: [], problems: [], scrollWidth: document.documentElement.scrollWidth,
               innerWidth: window.innerWidth};
  const main = document.querySelector("main").getBoundingClientRect();
  for (const svg of document.querySelectorAll("svg.chart")) {
    const box = svg.getBoundingClientRect();
    out.charts.push({name: svg.dataset.chart, width: box.width, height: box.height,
                     texts: svg.querySelectorAll("text").length});
    if (box.left < main.left - 1 || box.right > main.right + 1)
      out.problems.push(svg.dataset.chart + " outside the page column");
    for (const t of svg.querySelectorAll("text")) {
      const r = t.getBoundingClientRect();
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
        out.problems.push(svg.dataset.chart + ": '" + t.textContent + "' cut off");
    }
  }
  for (const el of document.querySelectorAll("main *")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > main.right + 1) out.problems.push(el.tagName + " sticks out of the page column");
    if (!(el instanceof SVGElement) && el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).display !== "inline")
      out.problems.push(el.tagName + " content overflows it: " + el.textContent.slice(0, 40));
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def _probe(binary: str, tmp_path: Path, page: str, width: int, script: str = PROBE) -> dict:
    """Lay ``page`` out at ``width`` with ``script`` (which writes its findings into ``pre#probe``) run in it."""
    probed = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page).replace(
        "</body>", script + "</body>"
    )
    path = tmp_path / f"probe-{width}.html"
    path.write_text(probed, encoding="utf-8")
    done = _run_chromium(binary, tmp_path / f"profile-{width}", width, 1200, "--dump-dom", path.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, flags=re.S)
    assert found, f"chromium gave no probe result (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def read_png(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB/RGBA, non-interlaced PNG (what Chromium writes) into an (h, w, channels) array."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
        elif kind == b"IDAT":
            chunks.append(body)
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.int64)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1).astype(np.int64)
        if kind == 0:
            row = line
        elif kind == 1:  # Sub: running sum per channel
            row = line.reshape(-1, bpp).cumsum(axis=0).reshape(-1) % 256
        elif kind == 2:  # Up
            row = (line + previous) % 256
        else:  # Average / Paeth depend on the reconstructed left byte: byte by byte
            cur, filt, up = [0] * stride, line.tolist(), previous.tolist()
            for i in range(stride):
                a = cur[i - bpp] if i >= bpp else 0
                b = up[i]
                if kind == 3:
                    cur[i] = (filt[i] + ((a + b) >> 1)) & 255
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (filt[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.array(cur, dtype=np.int64)
        image[y] = row
        previous = row
    return image.reshape(height, width, bpp)


def _screenshot(binary: str, tmp_path: Path, page: str, width: int, height: int, png: Path) -> np.ndarray:
    """The page as it is (CSP and all) in a ``width`` x ``height`` screenshot, decoded."""
    html_path = png.with_suffix(".html")
    html_path.write_text(page, encoding="utf-8")
    done = _run_chromium(
        binary, tmp_path / f"profile-{png.stem}", width, height, f"--screenshot={png}", html_path.as_uri()
    )
    assert png.exists(), f"no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    return read_png(png)


def _has_colour(image: np.ndarray, hex_colour: str, at_least: int = 50) -> bool:
    rgb = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    return int((image[:, :, :3] == rgb).all(axis=2).sum()) >= at_least


def test_in_a_headless_browser(tmp_path, full_report):
    """Chromium lays the page out at laptop and A4 widths with nothing cut off, and its screenshot shows the charts."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium) for the headless-browser check")
    report = _stress(full_report)
    page = render_html(report)

    for width in (1100, 794):  # a laptop window, and A4's width at 96 dpi
        found = _probe(binary, tmp_path, page, width)
        assert found["problems"] == [], found["problems"][:10]
        assert found["scrollWidth"] <= found["innerWidth"], found
        charts = {chart["name"]: chart for chart in found["charts"]}
        assert set(charts) == {"auc", "roc", "per_class", "what_if"}
        for chart in charts.values():
            assert chart["width"] > 300 and chart["height"] > 150 and chart["texts"] > 5, chart

    # the real page, CSP and all, as a screenshot
    png = tmp_path / "report.png"
    image = _screenshot(binary, tmp_path, page, 1100, 3000, png)
    assert png.stat().st_size > 100_000  # a blank page is a few kB
    assert image.shape[:2] == (3000, 1100)
    colours = np.unique(image[:, :, :3].reshape(-1, 3).astype(np.int64) @ np.array([65536, 256, 1]))
    assert len(colours) > 200
    badge = RISK_COLOURS[report["summary"]["risk_level"]]
    assert _has_colour(image, badge)  # the risk badge: the inline style survived the CSP
    first_models = list(dict.fromkeys(row["attack_model"] for row in report["results"]))[:4]
    for colour in PALETTE[: len(first_models)]:  # the chart lines were drawn
        assert _has_colour(image, colour), colour


# Test-only probe of the shipped sample page at a narrow window: every chart's text as rendered (font size
# times that SVG's scale on screen), where each attack's markers sit against the AUC chart's 100% tick,
# which attacks have a line, and the summary's text as shown.
NARROW_PROBE = """<script>
(function () {
  const svg = document.querySelector('svg.chart[data-chart="auc"]');
  const centre = (el) => { const r = el.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; };
  const out = {
    charts: [...document.querySelectorAll("svg.chart")].map((chart) => ({
      name: chart.dataset.chart, width: chart.getBoundingClientRect().width,
      texts: [...chart.querySelectorAll("text")].map((t) => ({
        text: t.textContent, px: parseFloat(getComputedStyle(t).fontSize) * chart.getScreenCTM().a}))})),
    ticks: Object.fromEntries([...svg.querySelectorAll("text.x-tick")].map((t) => [t.textContent, centre(t)[0]])),
    points: [...svg.querySelectorAll(".point")].map((p) => ({
      attack: p.dataset.attack, proportion: parseFloat(p.dataset.proportion), tag: p.tagName,
      fill: p.getAttribute("fill"), x: centre(p)[0]})),
    lines: [...svg.querySelectorAll("polyline")].map((l) => l.getAttribute("stroke")),
    legend_lines: [...svg.querySelectorAll('line[stroke-width="2.5"]')].map((l) => l.getAttribute("stroke")),
    summary: document.querySelector("#summary").innerText,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""
# Words of the report's JSON that must not reach a reader: metric and summary keys.
RAW_KEY = re.compile(
    r"\b(tpr_at\w*|\w*_fpr|ppv_at\w*|knowledge_needed|robustness_score|risk_level|"
    r"strongest_\w+|epsilon_\w+|ci95|member_accuracy|non_member_accuracy|accuracy_gap)\b"
)


def test_sample_report_at_700px_draws_reference_attacks_as_points_with_readable_text(tmp_path):
    """The shipped sample page in Chromium at 700 px: LiRA / RMIA are markers at 100% (none past the tick,
    no line of their own, a colour each), every chart's text renders at 11 px or more, and the summary
    reads without raw key names; its screenshot shows every attack's colour."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium) for the headless-browser check")
    page = (REPO_ROOT / "sample_input" / "report.html").read_text(encoding="utf-8")
    assert page == render_html(_sample()), (
        "sample_input/report.html is stale: rerun sample_input/make_sample.py"
    )
    probe = _probe(binary, tmp_path, page, 700, script=NARROW_PROBE)

    charts = {chart["name"]: chart for chart in probe["charts"]}
    assert set(charts) == _sample_charts(_sample())
    for name, chart in charts.items():
        small = [(t["text"], round(t["px"], 1)) for t in chart["texts"] if t["px"] < 11]
        assert not small, (name, small)
        assert len(chart["texts"]) > 10 and chart["width"] <= 700, (name, chart["width"])
    assert len(charts["auc"]["texts"]) > 20

    results = _sample()["results"]
    counts = {}
    for row in results:
        counts[row["attack_model"]] = counts.get(row["attack_model"], 0) + 1
    single = [name for name, n in counts.items() if n == 1]
    assert set(single) == {"lira", "lira_offline", "rmia", "rmia_offline"}
    hundred, ninety = probe["ticks"]["100%"], probe["ticks"]["90%"]
    fills = {}
    for point in probe["points"]:
        fills.setdefault(point["attack"], set()).add(point["fill"])
        if point["attack"] in single:
            assert point["tag"] in ("circle", "polygon") and point["proportion"] == 1.0, point
            # at the 100% tick, or stepped left of it towards 90% so that equal AUCs stay visible
            assert hundred - (hundred - ninety) / 2 <= point["x"] <= hundred + 0.5, (point, hundred)
    assert len(probe["points"]) == len(results)
    colours = {name: fill.pop() for name, fill in fills.items() if len(fill) == 1}
    assert len(colours) == len(counts) and len(set(colours.values())) == len(counts)  # one colour each
    for name in single:  # no line of their own, on the chart or in its legend
        assert colours[name] not in probe["lines"] and colours[name] not in probe["legend_lines"]
    assert len(probe["lines"]) == len(counts) - len(single)

    summary = probe["summary"]
    assert "members found with no false positives" in summary
    assert not RAW_KEY.findall(summary), RAW_KEY.findall(summary)
    for phrase in ("could know", "attackable", "training rows it"):
        assert phrase not in summary

    # the real page, CSP and all, as a 700 px screenshot: every attack's colour is drawn
    image = _screenshot(binary, tmp_path, page, 700, 2600, tmp_path / "sample.png")
    assert image.shape[:2] == (2600, 700)
    for name, colour in colours.items():
        assert _has_colour(image, colour, at_least=10), (name, colour)


def test_what_if_section_at_700px_draws_whole_with_readable_text(tmp_path, full_report):
    """Chromium at 700 px: the what-if chart and table fit the page column, nothing is cut off, the chart's
    text renders at 11.5 px or more, and the screenshot (CSP and all) shows the frontier and each kind."""
    binary = _chromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (apt-get install -y chromium) for the headless-browser check")
    page = render_html(full_report)
    sizes = _probe(binary, tmp_path, page, 700, script=NARROW_PROBE)
    (chart,) = [c for c in sizes["charts"] if c["name"] == "what_if"]
    small = [(t["text"], round(t["px"], 1)) for t in chart["texts"] if t["px"] < 11.5]
    assert not small and chart["width"] <= 700 and len(chart["texts"]) > 15, (small, chart["width"])
    # the section alone (the results table above it is wider than 700 px on its own)
    section = re.search(r'<section id="what-if">.*?</section>', page, flags=re.S).group(0)
    alone = page.replace(page[page.index("<main>") + 6 : page.index("</main>")], section)
    (tmp_path / "alone").mkdir()
    found = _probe(binary, tmp_path / "alone", alone, 700)
    assert found["problems"] == [], found["problems"][:10]
    assert found["scrollWidth"] <= found["innerWidth"], found
    assert [c["name"] for c in found["charts"]] == ["what_if"]
    image = _screenshot(binary, tmp_path, alone, 700, 1600, tmp_path / "what-if.png")
    for colour in ("#009E73", "#0072B2", "#E69F00", "#000000", "#CC79A7", "#D55E00"):
        assert _has_colour(image, colour, at_least=10), colour
