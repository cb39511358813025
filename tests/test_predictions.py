"""Predictions bundles (issue #11): the target's outputs supplied in the tables instead of a model file.

The central test fits a real model on Adult, writes its own ``predict_proba`` into the tables, and audits
that predictions bundle and the model bundle with the same seed: every attack that needs only outputs
gets the same figures. The others check the ``predictions`` section of ``config.json`` and the columns
it names, each mistake with its own error.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import RidgeClassifier

from builders import (
    CHEAPEST,
    adult_encoded,
    adult_frame,
    archive_bytes,
    as_header,
    folder_files,
    needs_adult,
    raised,
    write_bundle,
)
from mia_robustness import audit, check_bundle, training
from mia_robustness.cli import main as cli_main
from mia_robustness.errors import BundleError, DataError, OptionsError
from mia_robustness.predictions import PredictionsSpec, predictions_spec
from mia_robustness.report_html import render_html
from mia_robustness.sagemaker.packing import bundle_archives
from mia_robustness.serving.app import create_app
from mia_robustness.serving.runner import AuditRunner
from mia_robustness.serving.settings import ServerSettings

LABEL = "income"
ROWS = 600  # 300 members and 300 non-members
OUTPUT_ATTACKS = ("nn", "rf", "gb", "threshold", "class_threshold", "gap")
OPTIONS = {"repeats": 1, "proportions": [0.5, 1.0], "label_column": LABEL, "seed": 7}


@pytest.fixture(scope="module")
def adult_outputs():
    """(model, members, non_members, columns): a forest fitted on Adult's members, and both tables with its
    own ``predict_proba`` added as one column per class (``columns``: class -> column)."""
    frame = adult_frame(ROWS, seed=11)
    members, non_members = (
        frame.iloc[: ROWS // 2].reset_index(drop=True),
        frame.iloc[ROWS // 2 :].reset_index(drop=True),
    )
    model = adult_encoded(RandomForestClassifier(n_estimators=30, random_state=0, n_jobs=1))
    model.fit(members.drop(columns=LABEL), members[LABEL])
    columns = {str(c): f"p_{i}" for i, c in enumerate(model.classes_)}
    tables = []
    for table in (members, non_members):
        probabilities = model.predict_proba(table.drop(columns=LABEL))
        tables.append(
            table.assign(**{column: probabilities[:, i] for i, column in enumerate(columns.values())})
        )
    return model, members, non_members, columns, tables[0], tables[1]


def write_predictions(folder, members, non_members, predictions, config=None):
    """A predictions bundle folder: the two tables and a config.json holding ``predictions``."""
    folder.mkdir(parents=True, exist_ok=True)
    members.to_csv(folder / "train.csv", index=False)
    non_members.to_csv(folder / "subject.csv", index=False)
    (folder / "config.json").write_text(json.dumps({**(config or {}), "predictions": predictions}))
    return folder


@needs_adult
def test_same_figures_as_the_model_for_every_output_attack(tmp_path, adult_outputs):
    model, members, non_members, columns, with_members, with_non_members = adult_outputs
    model_bundle = write_bundle(tmp_path / "model", model, members, non_members)
    measured = audit(
        model_bundle, {**OPTIONS, "attack_models": list(OUTPUT_ATTACKS), "what_if": False}, workers=2
    )
    predictions = {"kind": "probabilities", "columns": columns}
    folder = write_predictions(tmp_path / "preds", with_members, with_non_members, predictions, OPTIONS)
    supplied = audit(folder, workers=2)  # the default attack models: lira, rmia and boundary among them

    figures = {(r.attack_model, r.proportion): r.mean for r in measured.results}
    assert {(r.attack_model, r.proportion): r.mean for r in supplied.results} == figures
    assert {r.attack_model for r in supplied.results} == set(OUTPUT_ATTACKS)
    assert supplied.summary.auc == measured.summary.auc
    assert supplied.target.member_accuracy == measured.target.member_accuracy
    assert supplied.target.n_features == measured.target.n_features == 14  # the outputs are not features
    assert [c.auc for c in supplied.per_class] == [c.auc for c in measured.per_class]
    assert supplied.exposed_records == measured.exposed_records

    # The report records that the outputs were supplied, and says what was left out and why.
    assert (measured.target.outputs_source, supplied.target.outputs_source) == ("measured", "supplied")
    data = supplied.to_dict()
    assert data["target"]["outputs_source"] == "supplied" and data["containment"]["sandbox"] is False
    assert data["target"]["output_kind"] == "probabilities"
    assert any("supplied with the bundle, not measured" in s for s in supplied.summary.sentences)
    assert "boundary, lira, rmia were left out: the bundle supplies the model's outputs" in " ".join(
        supplied.warnings
    )
    assert supplied.remediation.status == "skipped"
    assert "supplies the model's outputs, not the model" in supplied.remediation.skipped
    assert supplied.remediation.variants  # the serving-side options need only the outputs
    assert "supplied with the bundle (no model was queried)" in render_html(data)

    # The same model's predicted labels alone: the label-only attack that needs no queries, gap, gets the
    # same figures (boundary queries the model, so it is left out too).
    predicted = {"kind": "labels", "column": "predicted", "classes": list(columns)}
    labels = [
        table.assign(predicted=model.predict(table.drop(columns=LABEL))) for table in (members, non_members)
    ]
    folder = write_predictions(tmp_path / "labels", *labels, predicted, OPTIONS)
    only_labels = audit(folder, workers=2)
    assert only_labels.target.output_kind == "labels" and only_labels.target.outputs_source == "supplied"
    assert {(r.attack_model, r.proportion): r.mean for r in only_labels.results} == {
        key: mean for key, mean in figures.items() if key[0] == "gap"
    }
    assert "boundary was left out: the bundle supplies" in " ".join(only_labels.warnings)


@needs_adult
def test_margins_give_the_same_figures_as_the_margin_model(tmp_path, adult_outputs):
    """A binary model's one decision_function column, and the same as one margin column per class."""
    _, members, non_members, *_ = adult_outputs
    model = adult_encoded(RidgeClassifier(alpha=1.0))
    model.fit(members.drop(columns=LABEL), members[LABEL])
    options = {**OPTIONS, "attack_models": ["threshold", "class_threshold", "gap"], "what_if": False}
    measured = audit(write_bundle(tmp_path / "model", model, members, non_members), options, workers=2)
    assert measured.target.output_kind == "margins"
    figures = {(r.attack_model, r.proportion): r.mean for r in measured.results}

    classes = [str(c) for c in model.classes_]
    one_column = [
        table.assign(margin=model.decision_function(table.drop(columns=LABEL)))
        for table in (members, non_members)
    ]
    spec = {"kind": "margins", "column": "margin", "classes": classes}
    supplied = audit(write_predictions(tmp_path / "one", *one_column, spec, options), workers=2)
    assert supplied.target.output_kind == "margins" and supplied.target.outputs_source == "supplied"
    assert {(r.attack_model, r.proportion): r.mean for r in supplied.results} == figures

    per_class = [
        table.drop(columns="margin").assign(m_low=-table["margin"] / 2, m_high=table["margin"] / 2)
        for table in one_column
    ]
    spec = {"kind": "margins", "columns": {classes[0]: "m_low", classes[1]: "m_high"}}
    per_class[1].loc[3, "m_high"] = np.nan
    raised(
        DataError, "bad_predictions", audit, write_predictions(tmp_path / "nan", *per_class, spec, options)
    )
    per_class[1].loc[3, "m_high"] = -per_class[1].loc[3, "m_low"]
    supplied = audit(write_predictions(tmp_path / "two", *per_class, spec, options), workers=2)
    assert {r.attack_model for r in supplied.results} == {"threshold", "class_threshold", "gap"}


@needs_adult
def test_cli_training_job_and_invocations(tmp_path, adult_outputs, capsys, monkeypatch):
    """The shells all reach it through ``audit``: the CLI (and its one-line exit 2), the training job, and
    ``POST /invocations`` with a zip (and its JSON 400)."""
    *_, columns, members, non_members = adult_outputs
    predictions = {"kind": "probabilities", "columns": columns}
    folder = write_predictions(tmp_path / "preds", members, non_members, predictions, {"label_column": LABEL})
    output = tmp_path / "report.json"
    flags = ["--repeats", "1", "--proportions", "1", "--output", str(output), "--quiet"]
    assert cli_main(["audit", str(folder), "--attack-models", "threshold", *flags]) == 0
    assert json.loads(output.read_text())["target"]["outputs_source"] == "supplied"
    capsys.readouterr()
    assert cli_main(["audit", str(folder), "--attack-models", "lira,rmia", *flags]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and "choose from nn, rf, gb, threshold, class_threshold, gap" in line

    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(CHEAPEST))
    (root / "input" / "data").mkdir(parents=True)
    shutil.copytree(folder, root / "input" / "data" / "training")
    monkeypatch.setenv("MIA_OPT_ML", str(root))
    assert training.main([]) == 0
    assert json.loads((root / "model" / "report.json").read_text())["target"]["outputs_source"] == "supplied"

    zipped = archive_bytes(folder_files(folder))
    broken = archive_bytes(
        {**folder_files(folder), "subject.csv": non_members.drop(columns=columns[">50K"]).to_csv(index=False)}
    )
    settings = ServerSettings.from_env({"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}, cpus=2)
    runner = AuditRunner(settings)
    client = create_app(settings, runner).test_client()
    try:
        headers = {"X-Amzn-SageMaker-Custom-Attributes": as_header(CHEAPEST)}
        answer = client.post("/invocations", data=zipped, content_type="application/zip", headers=headers)
        assert answer.status_code == 200 and answer.get_json()["target"]["outputs_source"] == "supplied"
        answer = client.post("/invocations", data=broken, content_type="application/zip", headers=headers)
        assert answer.status_code == 400 and answer.get_json()["error"] == "missing_prediction_column"
    finally:
        runner.shutdown()


# ---- config.json's predictions section --------------------------------------------------------------


def test_the_three_kinds_parse():
    spec = predictions_spec({"kind": "probabilities", "columns": {"no": "p_no", "yes": "p_yes"}})
    assert spec == PredictionsSpec("probabilities", ("no", "yes"), ("p_no", "p_yes"))
    spec = predictions_spec({"kind": "margins", "columns": {"a": "m_a", "b": "m_b", "c": "m_c"}})
    assert spec == PredictionsSpec("margins", ("a", "b", "c"), ("m_a", "m_b", "m_c"))
    spec = predictions_spec({"kind": "margins", "column": "margin", "classes": ["no", "yes"]})
    assert spec == PredictionsSpec("margins", ("no", "yes"), ("margin",))
    spec = predictions_spec({"kind": "labels", "column": "predicted", "classes": [0, 1, 2]})
    assert spec == PredictionsSpec("labels", (0, 1, 2), ("predicted",))


@pytest.mark.parametrize(
    ("section", "says"),
    [
        (["p_no", "p_yes"], "must be an object"),
        ({"kind": "scores", "columns": {"a": "x", "b": "y"}}, '"kind" must be one of'),
        ({"kind": "probabilities", "columns": {"a": "x", "b": "y"}, "extra": 1}, "unknown key 'extra'"),
        ({"kind": "probabilities", "columns": {"a": "x"}}, "1 class;"),
        ({"kind": "probabilities", "columns": {"a": "x", "b": "x"}}, "for two classes"),
        ({"kind": "probabilities", "columns": {"a": "x", "b": 3}}, "must be a column name"),
        ({"kind": "probabilities", "column": "x"}, 'one column per class in "columns"'),
        ({"kind": "labels", "column": "predicted"}, 'in "classes"'),
        ({"kind": "labels", "column": "predicted", "classes": ["1", 1]}, "more than once"),
        ({"kind": "labels", "column": "predicted", "classes": [True, False]}, "class names"),
        ({"kind": "margins", "column": "m", "classes": ["a", "b", "c"]}, "binary model's"),
    ],
)
def test_a_bad_predictions_section_says_how_to_fix_it(section, says):
    error = raised(BundleError, "bad_predictions_config", predictions_spec, section)
    assert says in error.message and error.message.startswith("config.json's predictions")


@needs_adult
def test_a_bundle_with_a_model_and_predictions_or_neither(tmp_path, adult_outputs):
    model, members, non_members, columns, *_ = adult_outputs
    predictions = {"kind": "probabilities", "columns": columns}
    both = write_bundle(tmp_path / "both", model, members, non_members, config={"predictions": predictions})
    error = raised(BundleError, "model_and_predictions", audit, both)
    assert "model.pkl" in error.message and "keep one" in error.message
    neither = write_predictions(tmp_path / "neither", members, non_members, predictions)
    (neither / "config.json").write_text("{}")
    error = raised(BundleError, "missing_model", audit, neither)
    assert error.message.startswith("the bundle has no model file") and '"predictions"' in error.message


# ---- the columns it names -----------------------------------------------------------------------------


def _broken(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    frame = frame.copy()
    frame[column] = frame[column].astype(object if isinstance(value, str) else float)
    frame.loc[row, column] = value
    return frame


@needs_adult
@pytest.mark.parametrize(
    ("change", "code", "says"),
    [
        (
            lambda m, n, c: (m.drop(columns=c[">50K"]), n, c),
            "missing_prediction_column",
            "members table has no column",
        ),
        (
            lambda m, n, c: (m, n.drop(columns=c["<=50K"]), c),
            "missing_prediction_column",
            "non-members table",
        ),
        (lambda m, n, c: (_broken(m, c[">50K"], 5, 0.7), n, c), "bad_predictions", "at row 5"),
        (
            lambda m, n, c: (m, _broken(n, c["<=50K"], 9, np.nan), c),
            "bad_predictions",
            "missing (NaN or empty)",
        ),
        (
            lambda m, n, c: (_broken(m, c[">50K"], 2, np.inf), n, c),
            "bad_predictions",
            "infinite value at row 2",
        ),
        (lambda m, n, c: (_broken(m, c[">50K"], 0, 3.5), n, c), "bad_predictions", "holds 3.5 at row 0"),
        (
            lambda m, n, c: (_broken(m, c[">50K"], 4, "high"), n, c),
            "bad_predictions",
            "not numbers, first at row 4",
        ),
        (lambda m, n, c: (m, n, {"<=50K": c["<=50K"], LABEL: c[">50K"]}), "unknown_label", "'>50K'"),
        (lambda m, n, c: (m, n, {"0": c["<=50K"], "1": c[">50K"]}), "classes_mismatch", "spells them"),
        (lambda m, n, c: (m, n, {"<=50K": c["<=50K"], ">50K": LABEL}), "label_is_output", "label column"),
        (
            lambda m, n, c: (m.assign(guess=">50K"), n.assign(guess="yes"), "guess"),
            "unknown_predicted_label",
            "'yes'",
        ),
        (
            lambda m, n, c: (m.assign(guess=None), n.assign(guess=">50K"), "guess"),
            "bad_predictions",
            "is empty",
        ),
    ],
    ids=[
        "missing-class-column",
        "missing-in-non-members",
        "row-not-summing-to-1",
        "nan",
        "infinite",
        "out-of-range",
        "text",
        "unknown-label",
        "classes-the-labels-do-not-use",
        "label-as-output",
        "unknown-predicted-label",
        "empty-predicted-label",
    ],
)
def test_mixed_up_outputs_get_clear_errors(tmp_path, adult_outputs, change, code, says):
    *_, columns, members, non_members = adult_outputs
    members, non_members, columns = change(members, non_members, columns)
    if isinstance(columns, str):  # a predicted-label column
        predictions = {"kind": "labels", "column": columns, "classes": ["<=50K", ">50K"]}
    else:
        predictions = {"kind": "probabilities", "columns": columns}
    folder = write_predictions(tmp_path / "preds", members, non_members, predictions, OPTIONS)
    error = raised(DataError, code, audit, folder, {"attack_models": "gap", "proportions": "1"})
    assert says in error.message, error.message


@needs_adult
def test_check_and_pack_a_predictions_folder(tmp_path, adult_outputs):
    *_, columns, members, non_members = adult_outputs
    predictions = {"kind": "probabilities", "columns": columns}
    folder = write_predictions(tmp_path / "preds", members, non_members, predictions, {"label_column": LABEL})
    checked = check_bundle(folder)
    assert (checked.model_class, checked.n_classes, checked.n_features, checked.rows_scored) == (
        "SuppliedOutputs",
        2,
        14,
        len(members),
    )
    assert checked.output_kind == "probabilities" and "answers with class probabilities" in checked.describe()
    archive = bundle_archives([folder], tmp_path / "scratch")["preds"]
    with zipfile.ZipFile(archive) as packed:
        assert sorted(packed.namelist()) == ["config.json", "subject.csv", "train.csv"]
        assert json.loads(packed.read("config.json"))["predictions"] == predictions
    broken = write_predictions(
        tmp_path / "broken", members.drop(columns=columns[">50K"]), non_members, predictions
    )
    raised(DataError, "missing_prediction_column", check_bundle, broken)


@needs_adult
def test_tables_of_labels_and_outputs_only(tmp_path, adult_outputs):
    """No feature column at all: the outputs and the label are all an output-only attack needs (and rows
    are not compared for sharing, which over the label alone would match every row of a class)."""
    *_, columns, members, non_members = adult_outputs
    kept = [LABEL, *columns.values()]
    predictions = {"kind": "probabilities", "columns": columns}
    folder = write_predictions(tmp_path / "bare", members[kept], non_members[kept], predictions)
    report = audit(folder, {"attack_models": "threshold", "repeats": 1, "proportions": "1"})
    assert report.target.n_features == 0 and report.data.label_column == LABEL
    assert report.data.sanity.overlap.members_shared == 0


@needs_adult
def test_only_reference_attacks_asked_for(tmp_path, adult_outputs):
    *_, columns, members, non_members = adult_outputs
    folder = write_predictions(
        tmp_path / "preds", members, non_members, {"kind": "probabilities", "columns": columns}, OPTIONS
    )
    error = raised(OptionsError, "attack_not_applicable", audit, folder, {"attack_models": "gap,boundary"})
    assert "boundary queries it on perturbed copies of each record" in error.message
