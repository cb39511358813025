"""`audit --fail-on LEVEL` gates a build on the risk level (exit 3 after writing the report), and
`summary` prints the report's warnings."""

from __future__ import annotations

import json
import re

import pytest

from builders import REPO_ROOT
from mia_robustness.cli import EXIT_RISK, RISK_LEVELS, main

SAMPLE = REPO_ROOT / "sample_input"
CHEAP_FLAGS = ["--attack-models", "threshold", "--repeats", "1", "--proportions", "1", "-q"]


def test_fail_on_exits_3_at_or_above_the_level_after_writing_the_report(tmp_path, capsys):
    report = tmp_path / "gate" / "report.json"
    assert main(["audit", str(SAMPLE), *CHEAP_FLAGS, "-o", str(report)]) == 0
    level = json.loads(report.read_text())["summary"]["risk_level"]
    assert level == "medium"  # the sample's threshold attack: AUC 0.66
    report.unlink()

    assert (
        main(["audit", str(SAMPLE), *CHEAP_FLAGS, "--fail-on", "medium", "-o", str(report)]) == EXIT_RISK == 3
    )
    assert json.loads(report.read_text())["summary"]["risk_level"] == "medium"  # written before the exit
    assert "risk level medium is at or above --fail-on medium" in capsys.readouterr().err
    assert main(["audit", str(SAMPLE), *CHEAP_FLAGS, "--fail-on", "low", "-o", str(report)]) == 3
    assert main(["audit", str(SAMPLE), *CHEAP_FLAGS, "--fail-on", "high", "-o", str(report)]) == 0


def test_fail_on_levels_are_the_report_levels_and_a_bad_one_is_a_usage_error(capsys):
    assert RISK_LEVELS == ("minimal", "low", "medium", "high")
    with pytest.raises(SystemExit) as exited:
        main(["audit", str(SAMPLE), "--fail-on", "severe"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--fail-on" in err and "choose from 'low', 'medium', 'high'" in err and err.count("\n") == 1


def test_summary_prints_the_reports_warnings(tmp_path, capsys):
    report = tmp_path / "report.json"
    assert main(["audit", str(SAMPLE), *CHEAP_FLAGS, "-o", str(report)]) == 0
    assert main(["summary", str(report)]) == 0
    out = capsys.readouterr().out
    warnings = json.loads(report.read_text())["warnings"]
    assert any(warning.startswith("the evaluation set has 450 non-members") for warning in warnings)
    assert out.endswith("Warnings:\n" + "".join(f"  - {warning}\n" for warning in warnings))


def test_help_lists_each_format_once(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    assert "--format {csv,html,json}" in capsys.readouterr().out


def test_the_reports_reproduce_command_parses_allow_swapped(tmp_path):
    """The HTML page's command spells every setting as ``--name value`` (``--allow-swapped false``)."""
    from mia_robustness.cli import build_parser

    for flags, expected in (
        ([], None),
        (["--allow-swapped"], "true"),
        (["--allow-swapped", "false"], "false"),
    ):
        assert build_parser().parse_args(["audit", str(SAMPLE), *flags]).allow_swapped == expected
    html = (SAMPLE / "report.html").read_text()
    assert re.search(r"--allow-swapped false[\s\\<]", html)
