"""The audit engine on real models and data: signal, chance, isolation, determinism, layouts.

The bundles are the tests' own, so the tests of figures, renderings and options audit them in this process
(``sandbox=False``: no child start-up of a second or more each); test_sandbox checks that the sandboxed
path gives the same figures. The tests of layouts, table formats, thread counts and the bundle path
against ``audit_estimator`` keep the sandbox, as do one pipeline and the refusals elsewhere.
"""

from __future__ import annotations

import importlib
import json
import shutil
import zipfile

import joblib
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from builders import (
    FAST,
    REPO_ROOT,
    SEED_SAMPLE,
    adult_frame,
    archive_bytes,
    folder_files,
    needs_adult,
    needs_seed_sample,
    noisy_numeric_frame,
    split_fit,
    write_bundle,
)
from mia_robustness import AuditOptions, audit, audit_estimator, render
from mia_robustness.metrics import METRIC_NAMES


def test_overfit_tree_is_clearly_attackable(overfit_bundle):
    report = audit(overfit_bundle, {"attack_models": "threshold,rf,gb,nn", "repeats": 2}, sandbox=False)
    assert report.summary.auc > 0.6
    assert report.summary.risk_level in ("medium", "high")
    assert report.target.member_accuracy == 1.0
    assert report.target.accuracy_gap > 0.2
    # every attack model and proportion is present, each with mean and std of every metric
    assert {(r.attack_model, r.proportion) for r in report.results} == {
        (a, p) for a in ("threshold", "rf", "gb", "nn") for p in (0.2, 0.6, 1.0)
    }
    for row in report.results:
        assert set(row.mean) == set(METRIC_NAMES) == set(row.std)
        assert row.repeats == 2
        assert row.train_rows + row.eval_rows <= 2 * report.data.rows_per_side


def test_dummy_classifier_stays_at_chance(tmp_path):
    model, members, non_members = split_fit(
        noisy_numeric_frame(1000, seed=3), DummyClassifier(strategy="prior")
    )
    bundle = write_bundle(tmp_path, model, members, non_members, kind="zip")
    report = audit(bundle, {"repeats": 2, "proportions": "0.3,1"}, sandbox=False)
    for row in report.results:
        assert abs(row.mean["auc"] - 0.5) <= 0.05, (row.attack_model, row.proportion, row.mean["auc"])
    assert report.summary.risk_level in ("minimal", "low")
    assert report.summary.knowledge_needed is None


def _without_timings(report) -> dict:
    data = report.to_dict()
    data.pop("timings")
    return data


def test_same_seed_same_report_different_seed_different(overfit_bundle):
    options = {"attack_models": "threshold,rf,gb,nn", "repeats": 2, "proportions": "0.5,1"}
    first = _without_timings(audit(overfit_bundle, options, sandbox=False))
    second = _without_timings(audit(overfit_bundle, options, sandbox=False))
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    other = _without_timings(audit(overfit_bundle, options | {"seed": 1}, sandbox=False))
    assert other["results"] != first["results"]


def test_report_renderings(overfit_bundle):
    report = audit(overfit_bundle, sandbox=False)
    data = json.loads(render(report, "json"))
    assert data["schema_version"] == "1.3"
    # what the audit chose at run time sits beside the options, not among them (rf and threshold: cpu)
    assert "resolved_device" not in data["settings"] and data["resolved"] == {"device": "cpu"}
    assert data["settings"]["proportions"] == [0.2, 0.6, 1.0]  # from the bundle's config.json
    assert 3 <= len(data["summary"]["sentences"]) <= 5
    lines = render(report, "csv").splitlines()
    header = lines[0].split(",")
    assert len(lines) == 1 + len(report.results) == 1 + 2 * 3
    assert {
        "attack_model",
        "proportion",
        "auc_mean",
        "auc_std",
        "tpr_at_0_1pct_fpr_mean",
        "member_accuracy_mean",
    } <= set(header)


def test_overrides_win_over_config_json(overfit_bundle):
    report = audit(overfit_bundle, {"proportions": "1", "attack_models": "threshold"}, sandbox=False)
    assert [(r.attack_model, r.proportion) for r in report.results] == [("threshold", 1.0)]
    assert report.settings["repeats"] == 1  # still from config.json
    complete = AuditOptions(proportions=(1.0,), attack_models=("rf",), repeats=1)
    assert [r.attack_model for r in audit(overfit_bundle, complete, sandbox=False).results] == ["rf"]


def test_unequal_sides_are_balanced_and_reported(tmp_path):
    model, members, non_members = split_fit(
        noisy_numeric_frame(900, seed=4), DecisionTreeClassifier(random_state=0), 600
    )
    report = audit(write_bundle(tmp_path, model, members, non_members), FAST, sandbox=False)
    assert report.data.rows_per_side == 300
    assert report.data.members_available == 600
    assert "members subsampled from 600 to 300" in report.data.balancing
    assert any("balanced" in w for w in report.warnings)


@needs_adult
@pytest.mark.parametrize(
    ("estimator", "memorises"),
    [
        ("RandomForestClassifier(n_estimators=20, random_state=0)", True),
        ("DecisionTreeClassifier(random_state=0)", True),
        ("AdaBoostClassifier(n_estimators=20, random_state=0)", False),
        ("GradientBoostingClassifier(n_estimators=20, random_state=0)", False),
        ("ExtraTreesClassifier(n_estimators=20, random_state=0)", True),
        ("HistGradientBoostingClassifier(max_iter=20, random_state=0)", False),
        ("LogisticRegression(max_iter=500)", False),
    ],
)
def test_pipelines_on_raw_adult_frames(tmp_path, estimator, memorises):
    from sklearn import ensemble, linear_model, tree
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    namespace = vars(ensemble) | vars(linear_model) | vars(tree)
    frame = adult_frame(600, seed=2)
    features = frame.drop(columns="income")
    categorical = list(features.select_dtypes(exclude="number").columns)
    numeric = [c for c in features.columns if c not in categorical]
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
                        ("num", StandardScaler(), numeric),
                    ]
                ),
            ),
            ("clf", eval(estimator, namespace)),
        ]
    )
    model, members, non_members = split_fit(frame, pipeline, label="income")
    bundle = write_bundle(tmp_path, model, members, non_members, kind="tar.gz")
    # One pipeline goes through the sandbox: the child imports compose, preprocessing and linear_model
    # after it has confined itself. The others check the engine's figures, in this process.
    report = audit(bundle, FAST, sandbox=estimator.startswith("LogisticRegression"))
    assert report.data.label_column == "income"  # the last column
    assert report.target.estimator_class == estimator.split("(")[0]
    assert report.target.n_features == 14
    assert report.target.classes == ["<=50K", ">50K"]
    # the rows reached the pipeline in the right columns: it predicts better than the majority class (76%)
    assert report.target.member_accuracy > 0.8 and report.target.non_member_accuracy > 0.75
    assert report.summary.auc == max(row.mean["auc"] for row in report.results)
    if memorises:  # an unpruned tree or forest: right on (nearly) every member, so the audit finds a leak
        assert report.target.member_accuracy > 0.99 and report.summary.auc > 0.6, report.summary.auc
    else:  # a model that generalises (accuracy gap ~0.1 on 300 rows) leaks little
        assert abs(report.summary.auc - 0.5) < 0.1, report.summary.auc


@needs_seed_sample
def test_replaced_products_layout_is_audited_unchanged(tmp_path):
    """model.pkl beside the publisher's data.zip (train_mia.csv / test_mia.csv), as a folder and as a zip."""
    with zipfile.ZipFile(SEED_SAMPLE / "data.zip") as archive:
        members = pd.read_csv(archive.open("train_mia.csv"))
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(
        members.drop(columns="label"), members["label"]
    )
    folder = tmp_path / "training"
    folder.mkdir()
    shutil.copy(SEED_SAMPLE / "data.zip", folder / "data.zip")
    import joblib

    joblib.dump(model, folder / "model.pkl")
    options = {"repeats": 1, "proportions": "0.1,1", "attack_models": "gb,threshold"}
    report = audit(folder, options)
    assert report.data.layout == "legacy"
    assert report.data.rows_per_side == 6479
    assert report.target.n_classes == 4
    assert report.summary.auc > 0.55
    packed = tmp_path / "channel.zip"
    packed.write_bytes(archive_bytes(folder_files(folder)))
    assert _without_timings(audit(packed, options)) == _without_timings(report)


def test_parquet_tables_and_named_label_column(tmp_path):
    frame = noisy_numeric_frame(600, seed=6).rename(columns={"label": "outcome"})
    frame = frame[
        ["outcome"] + [c for c in frame.columns if c != "outcome"]
    ]  # label first: not the last column
    model, members, non_members = split_fit(
        frame, DecisionTreeClassifier(random_state=0), label="outcome", arrays=True
    )
    folder = tmp_path / "b"
    folder.mkdir()
    import joblib

    joblib.dump(model, folder / "model.pkl")
    members.to_parquet(folder / "train.parquet")
    non_members.to_parquet(folder / "subject.parquet")
    report = audit(folder, FAST | {"label_column": "outcome"})
    assert report.data.label_column == "outcome"
    assert report.summary.auc > 0.6


def test_figures_do_not_depend_on_the_number_of_threads(overfit_bundle, monkeypatch):
    """The CLI, a server child and a training job get different thread counts; the report must not change."""
    monkeypatch.setattr(importlib.import_module("mia_robustness.sweep"), "PARALLEL_MIN_DISTINCT_ROWS", 0)
    options = {"attack_models": "nn,gb,class_threshold,rmia", "repeats": 1, "proportions": "0.5,1"}
    one = _without_timings(audit(overfit_bundle, options, workers=1))
    two = _without_timings(audit(overfit_bundle, options, workers=2))
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)


def test_audit_estimator_gives_the_figures_of_audit_on_the_sample():
    """The engine's in-memory entry point and the bundle path run the same audit."""
    sample = REPO_ROOT / "sample_input"
    model = joblib.load(sample / "model.joblib")  # the repository's own file: trusted
    members, non_members = pd.read_csv(sample / "train.csv"), pd.read_csv(sample / "subject.csv")
    options = {"repeats": 1, "proportions": "0.5,1", "attack_models": "threshold,rf,lira"}
    from_bundle = _without_timings(audit(sample, options))
    in_memory = _without_timings(audit_estimator(model, members, non_members, **options))
    assert in_memory["results"] == from_bundle["results"] and in_memory["summary"] == from_bundle["summary"]
    assert in_memory["curves"] == from_bundle["curves"]
    assert in_memory["exposed_records"] == from_bundle["exposed_records"]
    for section in ("target", "data"):
        mismatched = {k for k in from_bundle[section] if in_memory[section][k] != from_bundle[section][k]}
        assert mismatched <= {"sklearn_version_saved", "layout"}, (section, mismatched)
    assert in_memory["data"]["layout"] == "in-memory" and in_memory["containment"] == {"sandbox": False}
