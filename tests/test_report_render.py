"""Report assembly, rules and renderers on small hand-made data: no model, no attack, no sandbox.

The cells, target answers and signals are built here from a few arrays (20 members and 20 non-members,
10 of each evaluated), so every expected figure below can be worked out by hand or by a line of numpy.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shlex
import time
from dataclasses import replace
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from builders import REPO_ROOT, measured_what_if_section, noisy_numeric_frame
from mia_robustness.assemble import aggregate, assemble_report, strongest_row, summarise
from mia_robustness.cli import main
from mia_robustness.errors import OptionsError
from mia_robustness.metrics import METRIC_NAMES, attack_metrics
from mia_robustness.options import AuditOptions
from mia_robustness.report import (
    CSV_LEAD_COLUMNS,
    REMEDIATION_CSV_COLUMNS,
    RENDERERS,
    ClassSlice,
    CorrectnessSlice,
    ExposedRecords,
    Report,
    RocCurve,
    render,
    render_csv,
    render_json,
    render_remediation_csv,
    render_text,
)
from mia_robustness.report_html import render_html
from mia_robustness.report_html.formatting import FONT
from mia_robustness.rules import CHANCE_MARGIN, KNOWLEDGE_SHARE, RISK_RULES, risk_level, robustness_score
from mia_robustness.signals import Signals
from mia_robustness.sweep import CellResult
from mia_robustness.target import ScoredTarget

EVIL = "<script>alert('x')</script>"
SIDE = 20  # rows per side
EVAL = np.r_[0:10, 20:30]  # the first repeat's evaluation rows: 10 members, 10 non-members
TRUTH = np.r_[np.ones(10), np.zeros(10)].astype(np.int8)
KNOWLEDGE = {"rf": "known rows, and a comma", "threshold": "known rows"}
DESCRIPTIONS = {"rf": "a random forest on the signals"}


def _scores(separation: float, seed: int) -> np.ndarray:
    """Scores on EVAL: members shifted up by ``separation``."""
    rng = np.random.default_rng(seed)
    return np.r_[rng.uniform(size=10) + separation, rng.uniform(size=10)]


def _cell(
    attack: str, proportion: float, repeat: int, scores: np.ndarray, seconds: float = 1.0
) -> CellResult:
    return CellResult(
        attack=attack,
        proportion=proportion,
        repeat=repeat,
        train_rows=int(2 * SIDE * proportion),
        eval_rows=len(EVAL),
        metrics=attack_metrics(TRUTH, scores, scores > np.median(scores)),
        device="cpu",
        seconds=seconds,
        detail="",
        scores=scores,
    )


MEMBER_SCORES = [0.9, 0.95, 0.95, 0.2, 0.3, 0.8, 0.1, 0.4, 0.6, 0.7]  # a tie at 0.95 (positions 1, 2)
STRONGEST = np.r_[MEMBER_SCORES, np.linspace(0.05, 0.5, 10)]  # rf at 1.0, first repeat


def _cells() -> list[CellResult]:
    """rf at 0.5 and 1.0 (two repeats each), threshold at 1.0 (two repeats); rf at 1.0 is the strongest."""
    return [
        _cell("rf", 0.5, 0, _scores(0.1, 1)),
        _cell("rf", 0.5, 1, _scores(0.2, 2)),
        _cell("rf", 1.0, 0, STRONGEST, seconds=2.0),
        _cell("rf", 1.0, 1, _scores(0.5, 3)),
        _cell("threshold", 1.0, 0, _scores(0.0, 4), seconds=0.5),
        _cell("threshold", 1.0, 1, _scores(0.05, 5), seconds=0.25),
    ]


def _scored(classes: tuple[str, ...] = ("<=50K", ">50K"), saved_version: str | None = None) -> ScoredTarget:
    is_member = np.r_[np.ones(SIDE), np.zeros(SIDE)].astype(np.int8)
    label_index = np.arange(2 * SIDE) % len(classes)
    return ScoredTarget(
        outputs=np.full((2 * SIDE, len(classes)), 1 / len(classes)),
        output_kind="probabilities",
        label_index=label_index,
        classes=np.array(classes, dtype=object),
        is_member=is_member,
        # row numbers in each table: members listed backwards, so a position is not its row number
        source_rows=np.r_[np.arange(SIDE)[::-1], np.arange(SIDE)],
        label_column="income",
        n_features=4,
        members_available=25,
        non_members_available=SIDE,
        balancing="members subsampled from 25 to 20",
        model_class="Pipeline",
        estimator_class="RandomForestClassifier",
        saved_version=saved_version,
        table_bytes=1000,
        label_classes=len(classes),
    )


def _signals() -> Signals:
    correct = np.ones(2 * SIDE, dtype=bool)
    correct[[25, 26, 27, 3]] = False  # three non-members and one member wrong
    return Signals(
        features=np.zeros((2 * SIDE, 1)),
        names=("x",),
        scores={},
        label_index=np.arange(2 * SIDE) % 2,
        correct=correct,
    )


def _assemble(**changes) -> Report:
    arguments = dict(
        cells=_cells(),
        scored=_scored(),
        signals=_signals(),
        options=AuditOptions(proportions=(0.5, 1.0), attack_models=("rf", "threshold"), repeats=2),
        eval_rows=EVAL,
        layout="folder",
        device="cpu",
        notes=["lira was skipped"],
        knowledge=KNOWLEDGE,
        descriptions=DESCRIPTIONS,
        containment={"sandbox": True},
        timings={"loading": 0.5},
        started=time.perf_counter() - 3.0,
        tool_version="9.9.9",
    )
    arguments.update(changes)
    return assemble_report(**arguments)


@pytest.fixture(scope="module")
def report() -> Report:
    return _assemble()


# ---------------------------------------------------------------- assembly


def test_aggregate_means_and_sample_std_per_attack_and_proportion_in_plan_order():
    cells = _cells()
    rows = aggregate(cells, KNOWLEDGE)
    assert [(r.attack_model, r.proportion, r.repeats) for r in rows] == [
        ("rf", 0.5, 2),
        ("rf", 1.0, 2),
        ("threshold", 1.0, 2),
    ]
    aucs = [c.metrics.auc for c in cells[2:4]]
    assert rows[1].mean["auc"] == pytest.approx(np.mean(aucs))
    assert rows[1].std["auc"] == pytest.approx(abs(aucs[0] - aucs[1]) / np.sqrt(2))  # ddof=1
    assert set(rows[0].mean) == set(METRIC_NAMES)
    assert rows[0].knowledge == "known rows, and a comma" and rows[0].train_rows == 20
    assert aggregate(cells[:1], {})[0].knowledge == "" and aggregate(cells[:1], {})[0].std["auc"] == 0.0


def test_strongest_row_is_the_highest_mean_auc_ties_broken_by_tpr():
    rows = aggregate(_cells(), KNOWLEDGE)
    assert (strongest_row(rows).attack_model, strongest_row(rows).proportion) == ("rf", 1.0)
    tied = [replace(r, mean=r.mean | {"auc": 0.7, "tpr_at_1pct_fpr": 0.1 * i}) for i, r in enumerate(rows)]
    assert strongest_row(tied) is tied[2]


def test_assembled_report_sections(report):
    assert report.summary.strongest_attack == "rf" and report.summary.strongest_proportion == 1.0
    assert report.summary.sentences[0].startswith(
        "The strongest attack, rf (a random forest on the signals),"
    )
    assert (
        report.settings
        == AuditOptions(proportions=(0.5, 1.0), attack_models=("rf", "threshold"), repeats=2).to_dict()
    )
    assert report.resolved == {"device": "cpu"} and "resolved_device" not in report.settings
    assert report.data.eval_rows_per_side == 10 and report.data.attacker_pool_per_side == 10
    assert report.target.member_accuracy == pytest.approx(19 / 20)
    assert report.target.non_member_accuracy == pytest.approx(17 / 20)
    # the engine's notes come after the assembly's own warnings
    assert report.warnings[0] == "tables were balanced: members subsampled from 25 to 20"
    assert report.warnings[-1] == "lira was skipped" and len(report.warnings) == 3  # + small evaluation set
    # per class: labels alternate over rows, so each class has 5 evaluated members and 5 non-members
    odd = np.arange(len(EVAL)) % 2 == 1
    assert [(s.label, s.members, s.non_members) for s in report.per_class] == [
        ("<=50K", 5, 5),
        (">50K", 5, 5),
    ]
    for piece, rows in zip(report.per_class, (~odd, odd), strict=True):
        assert isinstance(piece, ClassSlice)
        assert piece.auc == pytest.approx(roc_auc_score(TRUTH[rows], STRONGEST[rows]))
    # by correctness: evaluated rows 3 (member) and 25, 26, 27 (non-members) are the misclassified ones
    right, wrong = report.by_correctness
    assert (right.group, right.members, right.non_members) == ("correctly classified", 9, 7)
    assert (wrong.group, wrong.members, wrong.non_members) == ("misclassified", 1, 3)
    # one curve per attack model, at its best proportion
    assert [(c.attack_model, c.proportion) for c in report.curves] == [("rf", 1.0), ("threshold", 1.0)]
    assert all(len(c.fpr) == len(c.tpr) and c.tpr[-1] == 1.0 for c in report.curves)
    # timings: the stage so far, each attack's cells summed, the total since `started`
    assert report.timings["attack_rf_seconds"] == pytest.approx(1.0 + 1.0 + 2.0 + 1.0)
    assert report.timings["attack_threshold_seconds"] == pytest.approx(0.75)
    assert list(report.timings)[0] == "loading" and list(report.timings)[-1] == "total"
    assert report.timings["total"] >= 3.0
    assert report.containment == {"sandbox": True}


def _mean_ranks() -> np.ndarray:
    """Each evaluated row's rank share (1 = top) by rf and by threshold (first repeats), averaged."""
    shares = [
        np.array([(scores < v).sum() + ((scores == v).sum() + 1) / 2 for v in scores]) / len(scores)
        for scores in (STRONGEST, _scores(0.0, 4))
    ]
    return np.mean(shares, axis=0)


def test_exposed_records_are_the_surest_members_ties_broken_by_mean_rank(report):
    exposed = report.exposed_records
    assert isinstance(exposed, ExposedRecords)
    assert (exposed.attack_model, exposed.proportion, exposed.members_evaluated) == ("rf", 1.0, 10)
    assert exposed.share_of_members_at_1pct_fpr == report.result("rf", 1.0).mean["tpr_at_1pct_fpr"]
    assert exposed.tied_at_top == 2  # positions 1 and 2 share rf's top score, 0.95
    mean_rank = _mean_ranks()
    # rf's score first, then the mean rank over both attacks (higher first), then the row number
    order = sorted(range(10), key=lambda i: (-MEMBER_SCORES[i], -mean_rank[i], SIDE - 1 - i))
    tied = sorted((1, 2), key=lambda i: -mean_rank[i])
    assert order[:3] == [*tied, 0] and mean_rank[1] != mean_rank[2]
    # evaluated member at position i is row EVAL[i] = i, listed as row 19 - i of the members table
    assert [(r.row, r.score) for r in exposed.top] == [(SIDE - 1 - i, MEMBER_SCORES[i]) for i in order]
    assert [r.mean_rank for r in exposed.top] == pytest.approx([mean_rank[i] for i in order])


def test_member_scores_csv_lists_every_evaluated_member_in_the_exposed_order(report):
    records = report.records
    assert records.attacks == ("rf", "threshold") and records.proportions == (1.0, 1.0)
    table = list(csv.DictReader(io.StringIO(records.to_csv())))
    assert list(table[0]) == ["rank", "row", "label", "mean_rank", "rf_score", "threshold_score"]
    assert [int(r["rank"]) for r in table] == list(range(1, 11))
    assert [int(r["row"]) for r in table[:10]] == [r.row for r in report.exposed_records.top]
    threshold = _scores(0.0, 4)
    for line in table:
        position = SIDE - 1 - int(line["row"])  # members table row -> evaluation position
        assert float(line["rf_score"]) == pytest.approx(STRONGEST[position], abs=1e-6)
        assert float(line["threshold_score"]) == pytest.approx(threshold[position], abs=1e-6)
        assert float(line["mean_rank"]) == pytest.approx(_mean_ranks()[position], abs=1e-6)
        assert line["label"] == ("<=50K", ">50K")[position % 2]
    assert records.to_csv() == _assemble().records.to_csv()  # deterministic
    assert "records" not in report.to_dict()


def test_knowledge_sentence_names_the_attack_it_measured(report):
    rows = aggregate(_cells(), KNOWLEDGE)
    # threshold ran at full knowledge only: made the strongest, the sentence must still speak of rf
    lifted = [replace(r, mean=r.mean | {"auc": 0.99}) if r.attack_model == "threshold" else r for r in rows]
    sentences = summarise(lifted, report.target, DESCRIPTIONS).sentences
    assert sentences[0].startswith("The strongest attack, threshold, tells members")
    assert sentences[3].startswith(
        "The threshold attack ran with full knowledge only; the rf attack, the strongest run at several knowledge levels,"
    )
    assert "only when the attacker knows all of those training records" in sentences[3]  # rf needs 100%
    own = summarise(rows, report.target, DESCRIPTIONS).sentences[3]
    assert own.startswith("The rf attack gets 95% of its full-knowledge lead over guessing only when")
    full = rows[1].mean["auc"]  # rf at 1.0; rf at 0.5 made as strong
    early = [replace(r, mean=r.mean | {"auc": full}) if r is rows[0] else r for r in rows]
    assert summarise(early, report.target, DESCRIPTIONS).sentences[3] == (
        "The rf attack already gets 95% of its full-knowledge lead over guessing when the attacker knows only 50% "
        "of those training records, so limiting what an attacker knows helps only partly."
    )
    for sentence in report.summary.sentences:
        assert "could know" not in sentence and "attackable" not in sentence


def test_version_mismatch_is_warned():
    report = _assemble(scored=_scored(saved_version="0.1"))
    assert any("saved with scikit-learn 0.1" in w for w in report.warnings)


# ---------------------------------------------------------------- JSON


def test_typed_sections_serialise_as_the_1_0_dicts(report):
    data = report.to_dict()
    assert list(data) == [
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
    ]
    assert data["schema_version"] == "1.3" and data["resolved"] == {"device": "cpu"}
    # Assembled without the engine, the what-if section is there, saying it did not run.
    assert data["remediation"]["status"] == "skipped" and data["remediation"]["variants"] == []
    assert list(data["per_class"][0]) == ["label", "members", "non_members", "auc", "tpr_at_1pct_fpr"]
    assert list(data["by_correctness"][0]) == ["group", "members", "non_members", "auc", "tpr_at_1pct_fpr"]
    assert list(data["exposed_records"]) == [
        "attack_model",
        "proportion",
        "members_evaluated",
        "share_of_members_at_1pct_fpr",
        "top",
        "tied_at_top",
    ]
    assert list(data["exposed_records"]["top"][0]) == ["row", "score", "mean_rank"]
    assert data["exposed_records"]["top"][0]["score"] == 0.95
    assert list(data["curves"][0]) == ["attack_model", "proportion", "fpr", "tpr"]
    assert json.loads(render_json(report)) == data


def test_json_rounds_floats_and_writes_an_absent_exposed_section_as_an_object(report):
    slices = [CorrectnessSlice("misclassified", 0, 4, None, None)]
    curve = RocCurve("rf", 1.0, [0.0, 0.1234567891], [0.5, 1.0])
    bare = replace(report, exposed_records=None, by_correctness=slices, curves=[curve])
    data = json.loads(render_json(bare))
    assert data["exposed_records"] == {}
    assert data["by_correctness"] == [
        {"group": "misclassified", "members": 0, "non_members": 4, "auc": None, "tpr_at_1pct_fpr": None}
    ]
    assert data["curves"][0]["fpr"] == [0.0, 0.123457]


# ---------------------------------------------------------------- CSV and text


def test_csv_columns_and_rows(report):
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    header = rows[0]
    assert header == list(CSV_LEAD_COLUMNS) + [f"{m}_{s}" for m in METRIC_NAMES for s in ("mean", "std")]
    assert [r[:4] for r in rows[1:]] == [
        ["rf", "0.5", "50", "known rows, and a comma"],  # the comma is quoted, not a new column
        ["rf", "1", "100", "known rows, and a comma"],
        ["threshold", "1", "100", "known rows"],
    ]
    assert all(len(r) == len(header) for r in rows)
    row = dict(zip(header, rows[2], strict=True))
    assert row["auc_mean"] == f"{report.result('rf', 1.0).mean['auc']:.6f}"
    assert row["train_rows"] == "40" and row["repeats"] == "2" and row["device"] == "cpu"


def test_render_dispatches_to_every_format(report, monkeypatch):
    assert set(RENDERERS) == {"json", "csv", "html"}  # the server offers text/html because html is here
    assert render(report, "json") == render_json(report)
    assert render(report, "csv") == render_csv(report)
    assert render(report, "html") == render_html(report.to_dict())

    def broken(report):
        raise KeyError("auc")

    monkeypatch.setitem(RENDERERS, "csv", broken)
    with pytest.raises(KeyError):  # a renderer's own bug is not reported as an unknown format
        render(report, "csv")


def test_text_summary_and_unknown_format(report):
    text = render_text(report.to_dict())
    assert text.startswith(f"Membership-inference risk: {report.summary.risk_level.upper()}")
    table = 2 + len(report.summary.sentences) + 2 + len(report.results)
    # then why the what-if did not run (this report was assembled without one), then the report's
    # warnings, each on a line of its own
    why = report.remediation.skipped
    what_if = ["", "What would reduce the risk (what-if):", f"  {why[0].upper()}{why[1:].rstrip('.')}."]
    assert report.remediation.status == "skipped"
    warnings = text.splitlines()[table:]
    assert warnings == what_if + ["", "Warnings:", *[f"  - {warning}" for warning in report.warnings]]
    assert report.warnings  # the fixture's small evaluation set gives one
    with pytest.raises(OptionsError) as raised:
        render(report, "xml")
    assert raised.value.code == "unsupported_format"


@pytest.fixture(scope="module")
def what_if() -> dict:
    """A remediation section measured on real fits (a random forest and three variants of it)."""
    frame = noisy_numeric_frame(600, n_classes=2, noise=0.3, seed=5)
    return measured_what_if_section(frame.drop(columns="label").to_numpy(), frame["label"].to_numpy())


def test_what_if_csv_has_a_row_per_config_with_every_figure(report, what_if):
    data = dict(report.to_dict(), remediation=what_if)
    rows = list(csv.DictReader(io.StringIO(render_remediation_csv(data))))
    configs = [what_if["baseline"], *what_if["variants"]]
    assert list(rows[0]) == list(REMEDIATION_CSV_COLUMNS)
    assert [r["name"] for r in rows] == [c["name"] for c in configs]
    assert [r["kind"] for r in rows] == [c["kind"] for c in configs]
    for row, config in zip(rows, configs, strict=True):
        assert float(row["accuracy"]) == pytest.approx(config["utility"]["accuracy"], abs=1e-6)
        low, high = config["attack"]["ci95"]["auc"]
        assert float(row["auc_ci_low"]) == pytest.approx(low, abs=1e-6)
        assert float(row["auc_ci_high"]) == pytest.approx(high, abs=1e-6)
        assert float(row["auc_change"]) == pytest.approx(config["auc_change"], abs=1e-6)
        assert row["pareto"] == ("true" if config["pareto"] else "false")
        if config["utility"]["log_loss"] is None:
            assert row["log_loss"] == ""
        else:
            assert float(row["log_loss"]) == pytest.approx(config["utility"]["log_loss"], abs=1e-6)
    assert rows[0]["parameter"] == rows[0]["value"] == ""  # the baseline changes nothing
    assert [r["recommended"] for r in rows].count("true") == (1 if what_if["recommended"]["variant"] else 0)
    retrained = next(r for r in rows if r["kind"] == "retrained")
    assert retrained["name"] == f"{retrained['parameter']}={retrained['value']}"
    # no section (an older report, or a Report without one): the header only
    assert (
        render_remediation_csv(report.to_dict() | {"remediation": None})
        == ",".join(REMEDIATION_CSV_COLUMNS) + "\n"
    )


def test_what_if_csv_never_hands_a_spreadsheet_a_formula(what_if):
    section = dict(
        what_if, variants=[dict(what_if["variants"][0], name="=HYPERLINK(1)", attack={"attack_model": "@x"})]
    )
    rows = list(csv.DictReader(io.StringIO(render_remediation_csv({"remediation": section}))))
    assert rows[1]["name"] == "'=HYPERLINK(1)" and rows[1]["attack_model"] == "'@x"
    assert rows[1]["auc"] == ""  # a figure the section lacks is an empty cell
    assert rows[1]["auc_change"] == f"{round(what_if['variants'][0]['auc_change'], 6):.6f}"


def test_text_summary_prints_the_recommendation_and_the_frontier(report, what_if):
    text = render_text(dict(report.to_dict(), remediation=what_if))
    lines = text.splitlines()
    start = lines.index("What would reduce the risk (what-if):")
    assert lines[start + 1] == f"  {what_if['recommended']['sentence']}"
    frontier = [c for c in [what_if["baseline"], *what_if["variants"]] if c["pareto"]]
    listed = lines[start + 3 : start + 3 + len(frontier)]
    assert [line.split()[0] for line in listed] == [c["name"] for c in frontier]
    for line, config in zip(listed, frontier, strict=True):
        assert f"{config['attack']['auc']:.3f}" in line and f"{config['utility']['accuracy']:.3f}" in line
    assert "settings that let this recipe memorise: min_samples_leaf=1" in text
    assert text.index("What would reduce the risk") < text.index("Warnings:")
    skipped = dict(what_if, status="skipped", skipped="Skipped: no reference attacks ran; set what_if=true.",
                   baseline=None, variants=[], recommended={"variant": None, "sentence": ""}, rules=[])  # fmt: skip
    lines = render_text(dict(report.to_dict(), remediation=skipped)).splitlines()
    start = lines.index("What would reduce the risk (what-if):")
    assert lines[start + 1 : start + 3] == ["  Skipped: no reference attacks ran; set what_if=true.", ""]
    older = {k: v for k, v in report.to_dict().items() if k != "remediation"}
    assert "What would reduce" not in render_text(older)  # a report from before the what-if: nothing
    # the summary's sentences already give the recommendation: the what-if lines do not repeat it
    said = report.to_dict()
    said["summary"]["sentences"].append(what_if["recommended"]["sentence"])
    lines = render_text(dict(said, remediation=what_if)).splitlines()
    assert lines.count(f"  {what_if['recommended']['sentence']}") == 1
    start = lines.index("What would reduce the risk (what-if):")
    assert lines[start + 1].lstrip().startswith("on the frontier")


# ---------------------------------------------------------------- rules


def test_risk_rules_are_the_ones_the_readme_states():
    readme = (REPO_ROOT / "README.md").read_text()
    stated = re.findall(r"`(\w+)` if AUC ≥ ([\d.]+)\s+or TPR@1%FPR ≥ (\d+)%", readme)
    assert [(level, float(auc), int(tpr) / 100) for level, auc, tpr in stated] == list(RISK_RULES)
    assert "`minimal` otherwise" in readme
    assert f"reaches {KNOWLEDGE_SHARE:.0%} of its full-knowledge lift" in readme
    assert re.search(rf"within {CHANCE_MARGIN} of\s+chance", readme)


@pytest.mark.parametrize("level, auc_floor, tpr_floor", RISK_RULES)
def test_each_rule_starts_at_its_floors(level, auc_floor, tpr_floor):
    assert risk_level(auc_floor, 0.0) == level
    assert risk_level(0.5, tpr_floor) == level
    below = risk_level(auc_floor - 1e-9, tpr_floor - 1e-9)
    assert below != level and below in [r[0] for r in RISK_RULES] + ["minimal"]


def test_robustness_score():
    assert robustness_score(0.51) == 49
    assert robustness_score(-0.2) == 100 and robustness_score(1.5) == 0


# ---------------------------------------------------------------- HTML


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.parts.append(data)


def _parsed(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    parser.close()
    return parser


def test_html_escapes_hostile_names_everywhere():
    report = _assemble(
        scored=replace(_scored(classes=(EVIL, '"><b>x')), label_column=EVIL),
        cells=[replace(c, attack=EVIL) if c.attack == "threshold" else c for c in _cells()],
        knowledge=KNOWLEDGE | {EVIL: EVIL},
        notes=[EVIL],
        device=EVIL,
        tool_version=EVIL,
    )
    data = report.to_dict()
    data["settings"]["label_column"] = EVIL
    page = render_html(data)
    assert "<script" not in page.lower() and '"><b>' not in page
    parsed = _parsed(page)
    assert "script" not in parsed.tags and "b" in parsed.tags  # only the page's own <b>s
    text = "".join(parsed.parts)
    for shown in (
        f"{EVIL}",  # class label (table), attack name (table, legend), warning, version, label column
        f"resolved_device = {EVIL}",
        f"--label-column {shlex.quote(EVIL)}",  # in the command, shell-quoted
    ):
        assert shown in text, shown
    assert text.count(EVIL) >= 6
    # in the charts too: the class label and the attack name as SVG text, escaped
    svgs = re.findall(r"<svg\b.*?</svg>", page, flags=re.S)
    assert len(svgs) == 3 and all(html.escape(EVIL) in svg for svg in svgs)


def test_html_settings_show_options_and_resolved_values_apart(report):
    page = render_html(report.to_dict())
    text = "".join(_parsed(page).parts)
    assert "Resolved at run time: resolved_device = cpu." in text
    command = re.search(r'<pre class="cmd"><code>(.*?)</code></pre>', page, flags=re.S).group(1)
    assert "resolved" not in command and "--repeats 2" in command
    block = json.loads(
        html.unescape(re.search(r'<pre class="json"><code>(.*?)</code></pre>', page, re.S).group(1))
    )
    assert block == {k: v for k, v in report.settings.items()}
    # a schema 1.0 report (the value in settings) shows the same note and the same command
    old = report.to_dict()
    old["settings"]["resolved_device"] = old.pop("resolved")["device"]
    old_page = render_html(old)
    assert "Resolved at run time: resolved_device = cpu." in "".join(_parsed(old_page).parts)
    assert re.search(r'<pre class="cmd"><code>(.*?)</code></pre>', old_page, flags=re.S).group(1) == command


def test_html_howto_states_the_rules_module(report):
    text = "".join(_parsed(render_html(report.to_dict())).parts)
    for level, auc, tpr in RISK_RULES:
        assert f"{level} if AUC ≥ {auc:.2f} or members found at 1% FPR ≥ {tpr:.0%}" in text
    assert f"gives {KNOWLEDGE_SHARE:.0%} of the full-knowledge" in text
    assert f"within {CHANCE_MARGIN:.2f} AUC of guessing" in text


def test_html_sections_follow_the_report(report):
    page = render_html(report.to_dict())
    for section in ("summary", "auc-chart", "roc-chart", "per-class", "by-correctness", "results", "exposed"):
        assert f'id="{section}"' in page
    assert 'class="strongest"' in page and page.count('class="strongest"') == 1
    top = report.exposed_records.top[0]
    assert f"<tr><td>{top.row}</td><td>{top.score:.4f}</td><td>{top.mean_rank:.1%}</td></tr>" in page
    assert "share the highest score" in page and "from 0" in page
    assert "Mean over 2 repeats" in page


def test_css_and_templates_are_package_files_and_only_charts_are_unescaped(report):
    templates = resources.files("mia_robustness.report_html") / "templates"
    css = (templates / "report.css").read_text()
    assert FONT in css  # the charts' font stack is the page's
    assert css in render_html(report.to_dict())  # included verbatim (no template syntax in it)
    safe = []
    for name in ("report.html", "macros.html"):
        source = (templates / name).read_text()
        safe += re.findall(r"\{\{\s*([\w.]+)\s*\|\s*safe\s*\}\}", source)
        assert "autoescape false" not in source
    assert sorted(safe) == ["auc_chart.svg", "per_class.svg", "roc_chart", "what_if.svg"]


def test_package_data_is_declared_for_non_editable_installs():
    pyproject = (Path(REPO_ROOT) / "pyproject.toml").read_text()
    declared = re.search(r'"mia_robustness.report_html" = \[(.*?)\]', pyproject).group(1)
    templates = resources.files("mia_robustness.report_html") / "templates"
    for entry in templates.iterdir():
        if entry.is_file():
            assert f'"templates/*{Path(entry.name).suffix}"' in declared, entry.name


def test_summary_of_a_hand_edited_what_if_section_prints_dashes_not_an_internal_error(tmp_path, capsys):
    sample = json.loads((REPO_ROOT / "sample_input" / "report.json").read_text())
    frontier = next(row for row in sample["remediation"]["variants"] if row["pareto"])
    frontier["utility"], frontier["attack"] = "edited", ["edited"]
    sample["remediation"]["recommended"] = "edited"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(sample))
    assert main(["summary", str(path)]) == 0
    line = next(
        text for text in capsys.readouterr().out.splitlines() if text.strip().startswith(frontier["name"])
    )
    assert line.split()[1:] == ["-", "None", "-", f"{frontier['auc_change']:+.3f}"]
