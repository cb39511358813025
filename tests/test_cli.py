"""The command-line shell as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import CHEAPEST, FAST, REPO_ROOT, as_flags, noisy_numeric_frame, split_fit, write_bundle
from mia_robustness.report_html import render_html

CLI = [sys.executable, "-m", "mia_robustness.cli"]
FAST_FLAGS = as_flags(FAST)


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_audit_writes_json_and_csv(tmp_path, overfit_bundle):
    out = tmp_path / "out" / "report.json"
    records = tmp_path / "out" / "records.csv"
    done = run("audit", overfit_bundle, "-o", out, "--records", records, *FAST_FLAGS)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["settings"]["attack_models"] == ["threshold", "rf"]
    assert "attacks" in done.stderr  # progress on stderr
    # --records: every evaluated member once, most exposed first, the JSON's top ten leading
    table = list(csv.DictReader(records.read_text().splitlines()))
    exposed = report["exposed_records"]
    assert len(table) == exposed["members_evaluated"] == report["data"]["eval_rows_per_side"]
    strongest = report["summary"]["strongest_attack"]
    assert list(table[0])[:5] == ["rank", "row", "label", "mean_rank", f"{strongest}_score"]
    assert {f"{name}_score" for name in ("threshold", "rf")} <= set(table[0])
    rows = [int(r["row"]) for r in table]
    assert len(set(rows)) == len(rows) and all(0 <= r < report["data"]["members_available"] for r in rows)
    assert rows[:10] == [r["row"] for r in exposed["top"]]
    assert [float(r[f"{strongest}_score"]) for r in table] == sorted(
        (float(r[f"{strongest}_score"]) for r in table), reverse=True
    )
    done = run("audit", overfit_bundle, "--format", "csv", "-q", *FAST_FLAGS)
    assert done.returncode == 0 and done.stderr == ""
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert len(rows) == 4 and {r["attack_model"] for r in rows} == {"threshold", "rf"}


def test_bad_input_exits_2_with_one_line(tmp_path, overfit_bundle):
    for args in (
        ("audit", tmp_path / "missing.zip"),
        ("audit", overfit_bundle, "--repeats", "many"),
        ("audit", overfit_bundle, "--attack-models", "svm"),
        ("audit", overfit_bundle, "--utility-budget", "99"),
        ("audit", overfit_bundle, "--label-column", "nope", *FAST_FLAGS),
        ("audit",),
        ("summary", overfit_bundle / "train.csv"),
    ):
        done = run(*args)
        assert done.returncode == 2, (args, done.stderr)
        lines = [
            line for line in done.stderr.strip().splitlines() if not line.startswith("[")
        ]  # minus progress
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_classes_that_a_pickle_does_not_have_are_refused(tmp_path, overfit_bundle, overfit_tree_data):
    """A pickle carries its own classes (0 and 1 here): a --classes / config.json classes that names other
    ones is a mistaken belief about the model, refused in one line before any attack runs; the same classes
    in any order and type (1.0 is 1) are accepted, since nothing is taken from the option."""
    from mia_robustness.loading import load_model

    for classes, named in (("no,yes", "'no', 'yes'"), ("1,7", "'7'"), ("0,1,2", "'2'")):
        done = run("audit", overfit_bundle, "--classes", classes, *FAST_FLAGS)
        assert done.returncode == 2, (classes, done.stderr)
        lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("[")]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "classes option" in lines[0] and named in lines[0], lines[0]
    model = load_model(overfit_bundle / "model.pkl", classes=("1", 0.0)).estimator
    assert model.classes_.tolist() == overfit_tree_data[0].classes_.tolist() == [0, 1]


def test_a_pickle_whose_classes_are_ragged_is_refused_in_one_line(tmp_path, overfit_tree_data):
    """A hostile pickle's classes_ that numpy cannot make one list of (ragged) is an unsupported model:
    with a classes option (checked against them at loading) or without, sandboxed or not, exit 2 and one
    line, not an internal error quoting numpy."""
    import joblib

    model, members, non_members = overfit_tree_data
    folder = write_bundle(tmp_path, model, members, non_members)
    forged = joblib.load(folder / "model.pkl")
    forged.classes_ = [[0, 1], [2]]
    joblib.dump(forged, folder / "model.pkl")
    for extra in (("--classes", "0,1", "--no-sandbox"), ("--no-sandbox",)):
        done = run("audit", folder, *extra, *FAST_FLAGS)
        assert done.returncode == 2, (extra, done.stderr)
        lines = [line for line in done.stderr.strip().splitlines() if line.startswith("error")]
        assert len(lines) == 1 and "classes_" in lines[0] and "internal error" not in done.stderr, done.stderr


def test_device_cuda_without_cuda_is_an_error_only_when_nn_runs(tmp_path, overfit_bundle):
    """nn is the only attack that uses the device: a label-only model leaves it out, so --device cuda on a
    machine without CUDA audits it; a probability model whose audit runs nn is refused in one line."""
    import os

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OutputCodeClassifier

    no_cuda = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    labels_only = OutputCodeClassifier(LogisticRegression(max_iter=200), random_state=0)
    folder = write_bundle(tmp_path / "labels", *split_fit(noisy_numeric_frame(400, seed=2), labels_only))
    out = tmp_path / "report.json"
    cheap = ["--repeats", "1", "--proportions", "1", "--boundary-queries", "8"]
    done = run("audit", folder, "--device", "cuda", "-o", out, *cheap, env=no_cuda)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["target"]["output_kind"] == "labels" and report["resolved"]["device"] == "cpu"
    assert "nn" not in report["settings"]["attack_models"]
    done = run("audit", overfit_bundle, "--device", "cuda", "--attack-models", "nn", *cheap, env=no_cuda)
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("[")]
    assert done.returncode == 2 and len(lines) == 1 and "no CUDA GPU" in lines[0], done.stderr


def test_a_reference_recipe_value_its_class_refuses_stops_the_audit_before_it_starts(
    tmp_path, overfit_tree_data
):
    """scikit-learn checks parameter values only in fit, which for a recipe runs in the sandbox deep into
    the audit: a value it would refuse is refused before the model is loaded, naming the parameter and what
    it must be."""
    config = {"reference_recipe": {"estimator": "RandomForestClassifier", "params": {"max_depth": "deep"}}}
    folder = write_bundle(tmp_path, *overfit_tree_data, config=config)
    done = run("audit", folder, *FAST_FLAGS)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr  # no progress line: nothing ran
    assert "parameter max_depth the value 'deep'" in lines[0], lines[0]
    assert "must be an int in the range [1, inf) or None" in lines[0], lines[0]


def test_bundle_command_then_audit_and_summary(tmp_path, overfit_tree_data):
    model, members, non_members = overfit_tree_data
    folder = write_bundle(tmp_path / "parts", model, members, non_members)
    packed = tmp_path / "packed.zip"
    done = run(
        "bundle",
        "--model",
        folder / "model.pkl",
        "--train",
        folder / "train.csv",
        "--subject",
        folder / "subject.csv",
        "--label-column",
        "label",
        "-o",
        packed,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(zipfile.ZipFile(packed).namelist()) == [
        "config.json",
        "model.pkl",
        "subject.csv",
        "train.csv",
    ]
    report = tmp_path / "r.json"
    assert run("audit", packed, "-o", report, "-q", *FAST_FLAGS).returncode == 0
    done = run("summary", report)
    assert done.returncode == 0
    assert "robustness score" in done.stdout and "threshold" in done.stdout
    done = run(
        "bundle",
        "--model",
        folder / "train.csv",
        "--train",
        folder / "train.csv",
        "--subject",
        folder / "subject.csv",
        "-o",
        packed,
    )
    assert done.returncode == 2 and "model file" in done.stderr


def test_console_script_is_installed():
    script = REPO_ROOT / ".venv" / "bin" / "mia-robustness"
    if not script.exists():
        pytest.skip(f"no console script at {script}: the tests run outside `make test`'s virtual environment")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "mia-robustness" in done.stdout


def test_records_csv_never_hands_a_spreadsheet_a_formula(tmp_path):
    """Labels go into --records as text: one a spreadsheet would run (``=...``, ``@...``, ``-2+3``) gets a
    leading ``'``; a signed number stays a number; every row keeps its own table's label."""
    labels = np.array(['=HYPERLINK("http://x.example","open")', "-1", "@SUM(A1)"], dtype=object)
    frame = noisy_numeric_frame(600, n_classes=3, seed=4)
    frame["label"] = labels[frame["label"]]
    model, members, non_members = split_fit(frame, DecisionTreeClassifier(random_state=0))
    records = tmp_path / "records.csv"
    done = run("audit", write_bundle(tmp_path, model, members, non_members), "-o", tmp_path / "r.json",
               "--records", records, "-q", *as_flags(CHEAPEST))  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = list(csv.DictReader(records.read_text().splitlines()))
    written = {'\'=HYPERLINK("http://x.example","open")': labels[0], "-1": "-1", "'@SUM(A1)": "@SUM(A1)"}
    assert {line["label"] for line in table} == set(written)
    assert all(written[line["label"]] == members["label"][int(line["row"])] for line in table)


def test_unwritable_outputs_are_refused_in_one_line(tmp_path, overfit_bundle):
    """A folder's name or one file for two of -o, --records and --what-if-csv: refused before the audit runs (exit 2, one
    line, no report written); a file under a path that is a file: one line after it, never a traceback."""
    report = tmp_path / "report.json"
    for args, fragment in (
        (("--records", tmp_path), "is a folder"),
        (("--what-if-csv", tmp_path), "--what-if-csv"),
        (("-o", report, "--records", tmp_path / "." / "report.json"), "name the same file"),
        (("-o", report, "--what-if-csv", tmp_path / "." / "report.json"), "-o and --what-if-csv name"),
        (
            ("-o", report, "--records", tmp_path / "r.csv", "--what-if-csv", tmp_path / "r.csv"),
            "--records and --what-if-csv name",
        ),
    ):
        done = run("audit", overfit_bundle, *args, "-q", *FAST_FLAGS)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
        assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1
        assert not report.exists()
    (tmp_path / "plain").write_text("a file, not a folder")
    done = run(
        "audit", overfit_bundle, "-o", report, "--records", tmp_path / "plain" / "r.csv", "-q", *FAST_FLAGS
    )
    assert done.returncode == 2 and done.stderr.startswith("error: cannot write"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_what_if_csv_html_and_summary_from_one_audit(tmp_path, overfit_bundle):
    """--what-if on an overfit tree: the CSV lists the JSON section's configs with its figures, its HTML
    page draws the what-if chart, and `summary` prints the frontier; without --what-if a threshold-only audit
    skips its fits, says how to ask for them, and the CSV lists the serving-side rows only."""
    out, table = tmp_path / "report.json", tmp_path / "what-if.csv"
    done = run("audit", overfit_bundle, "-o", out, "--what-if", "--what-if-csv", table, *as_flags(CHEAPEST))
    assert done.returncode == 0, done.stderr
    assert f"what-if configurations written to {table}" in done.stderr
    section = json.loads(out.read_text())["remediation"]
    assert section["status"] == "ran" and section["family"] == "tree"
    configs = [section["baseline"], *section["variants"]]
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [r["name"] for r in rows] == [c["name"] for c in configs] and len(rows) >= 4
    for row, config in zip(rows, configs, strict=True):
        assert row["kind"] == config["kind"] and row["attack_model"] == config["attack"]["attack_model"]
        assert float(row["auc"]) == pytest.approx(config["attack"]["auc"], abs=1e-6)
        assert float(row["accuracy"]) == pytest.approx(config["utility"]["accuracy"], abs=1e-6)
        assert row["pareto"] == ("true" if config["pareto"] else "false")
    done = run("summary", out)
    assert done.returncode == 0 and "What would reduce the risk (what-if):" in done.stdout
    on_frontier = [c["name"] for c in configs if c["pareto"]]
    assert on_frontier and all(f"  {name} " in done.stdout for name in on_frontier)
    page = render_html(json.loads(out.read_text()))  # what `-o report.html` writes, from the same dict
    assert 'data-chart="what_if"' in page and 'id="what-if"' in page

    done = run("audit", overfit_bundle, "-o", out, "--what-if-csv", table, "-q", *as_flags(CHEAPEST))
    assert done.returncode == 0, done.stderr
    section = json.loads(out.read_text())["remediation"]
    assert section["status"] == "skipped" and "what_if=true" in section["skipped"]
    # skipped fits: the serving-side rows (measured on the target itself, no fit) are still listed
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert section["baseline"] is None and rows and {r["kind"] for r in rows} == {"serving"}
    assert [r["name"] for r in rows] == [v["name"] for v in section["variants"]]
    assert section["skipped"][1:] in run("summary", out).stdout  # as a sentence: capitalised
