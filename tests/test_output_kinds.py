"""Output kinds (issue #11): margin-only and label-only targets audited end to end on Adult, the label-only
attacks gap and boundary, and the sandbox wire refusing a forged kind."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeClassifier
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OutputCodeClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from builders import adult_frame, needs_adult, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.engine import audit_estimator
from mia_robustness.errors import DataError, ModelError, OptionsError
from mia_robustness.label_robustness import label_robustness
from mia_robustness.sandbox.protocol import ProtocolError
from mia_robustness.sandbox.stage import scored_from_message, scored_to_message
from mia_robustness.signals import true_class_margin
from mia_robustness.sweep import split_for_repeat
from mia_robustness.target import ScoreRequest, query_outputs, score_target

pytestmark = needs_adult

LABEL = "income"
# Margin-threshold, learned and label-only attacks at two proportions, once: the cheapest audit that still
# has every kind of row.
OPTIONS = {
    "attack_models": "threshold,rf,gap,boundary",
    "repeats": 1,
    "proportions": "0.5,1",
    "label_column": LABEL,
    "boundary_queries": 8,
}
TOLERANCE = 0.03


@pytest.fixture(scope="module")
def adult():
    return adult_frame(1000, seed=3)


def _pipeline(frame: pd.DataFrame, estimator):
    categorical = [c for c in frame.columns if c != LABEL and not pd.api.types.is_numeric_dtype(frame[c])]
    numeric = [c for c in frame.columns if c != LABEL and c not in categorical]
    encode = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), categorical), (StandardScaler(), numeric)
    )
    return make_pipeline(encode, estimator)


def _reference_auc(report, members, non_members, score) -> float:
    """AUC of a no-training score (``score(frame) -> (n,)``) on the audit's first evaluation rows."""
    rows = pd.concat([members, non_members], ignore_index=True)
    is_member = np.r_[np.ones(len(members)), np.zeros(len(non_members))].astype(np.int8)
    evaluation = split_for_repeat(is_member, 0.3, 0, 0).evaluation
    assert report.data.rows_per_side == len(members) == len(non_members)
    return roc_auc_score(is_member[evaluation], score(rows)[evaluation])


def _true_margin(model):
    def score(rows: pd.DataFrame) -> np.ndarray:
        margins = np.asarray(model.decision_function(rows.drop(columns=LABEL)))
        margins = np.column_stack([-margins / 2, margins / 2]) if margins.ndim == 1 else margins
        classes = list(model.classes_)
        return true_class_margin(margins, np.array([classes.index(v) for v in rows[LABEL]]))

    return score


@pytest.mark.parametrize(
    "estimator",
    [SVC(C=10, gamma=0.1), RidgeClassifier(), LinearSVC()],
    ids=["svc_no_probability", "ridge", "pipeline_linear_svc"],
)
def test_margin_models_are_audited_in_process_and_their_strongest_attack_reaches_the_margin(adult, estimator):
    model, members, non_members = split_fit(adult, _pipeline(adult, estimator), label=LABEL)
    assert not hasattr(model, "predict_proba")
    report = audit_estimator(model, members, non_members, workers=1, **OPTIONS)
    assert report.target.output_kind == "margins"
    rows = {row.attack_model: row for row in report.results}
    assert set(rows) == {"threshold", "rf", "gap", "boundary"}
    assert rows["gap"].labels_only and rows["boundary"].labels_only and not rows["threshold"].labels_only
    # The headline is an attack on the margins; the label-only rows are the "labels only" view beside it.
    assert report.summary.strongest_attack in ("threshold", "rf")
    margin_auc = _reference_auc(report, members, non_members, _true_margin(model))
    assert report.summary.auc >= margin_auc - TOLERANCE
    assert report.result("threshold", 1.0).mean["auc"] == pytest.approx(margin_auc, abs=1e-9)
    text = " ".join(report.summary.sentences)
    assert "margins, not probabilities" in text and "only its predicted labels" in text
    assert report.remediation.status == "skipped" and "gives margins" in report.remediation.skipped
    data = report.to_dict()
    assert data["target"]["output_kind"] == "margins"


class LabelsOnly:
    """A served model that answers with labels only: ``classes_``, its input columns and ``predict``."""

    def __init__(self, model):
        self._model = model
        self.classes_ = model.classes_
        self.feature_names_in_ = model.feature_names_in_

    def predict(self, rows):
        return self._model.predict(rows)


def test_a_predict_only_model_gets_the_label_only_attacks_and_reaches_the_gap_attack(adult):
    tree, members, non_members = split_fit(
        adult, _pipeline(adult, DecisionTreeClassifier(random_state=0)), label=LABEL
    )
    model = LabelsOnly(tree)
    report = audit_estimator(model, members, non_members, workers=1, **(OPTIONS | {"attack_models": None}))
    assert report.target.output_kind == "labels"
    assert {row.attack_model for row in report.results} == {"gap", "boundary"}
    assert report.settings["attack_models"] == ["gap", "boundary"]  # what ran: passed back, it reproduces
    left_out = [note for note in report.warnings if "left out" in note]
    assert len(left_out) == 1 and "nn, rf, gb, threshold, class_threshold, lira, rmia" in left_out[0]
    assert "the model gives only predicted labels" in " ".join(report.summary.sentences).lower()
    assert report.remediation.status == "skipped" and "only labels" in report.remediation.skipped

    def correct(rows):
        return (tree.predict(rows.drop(columns=LABEL)) == rows[LABEL].to_numpy()).astype(float)

    assert report.summary.auc >= _reference_auc(report, members, non_members, correct) - TOLERANCE
    # Naming an attack a label-only model cannot feed is an error that says which can.
    with pytest.raises(OptionsError) as caught:
        audit_estimator(
            model, members, non_members, workers=1, **(OPTIONS | {"attack_models": "threshold,gap"})
        )
    assert caught.value.code == "attack_not_applicable" and "gap, boundary" in caught.value.message


def test_boundary_beats_gap_on_an_overfitted_svm(adult):
    """Measured (label_robustness.py): an RBF SVC, 500 rows a side, 16 queries per row."""
    model, members, non_members = split_fit(adult, _pipeline(adult, SVC(C=10, gamma=0.1)), label=LABEL)
    scored = score_target(
        model, members, non_members, ScoreRequest(LABEL, 0, boundary_queries=16), saved_version=None
    ).scored
    truth = scored.is_member
    correct = scored.outputs.argmax(axis=1) == scored.label_index
    gap, boundary = roc_auc_score(truth, correct), roc_auc_score(truth, scored.robustness)
    assert boundary > gap + 0.01, (gap, boundary)
    # The robustness counts the row itself and its 16 copies; the same seed draws the same copies.
    assert set(np.unique(scored.robustness * 17).round(6)) <= set(np.arange(18.0))
    # The same seed draws the same copies, however many query passes run at once (16 = 3 + 3 + ... + 1).
    again = score_target(
        model, members, non_members, ScoreRequest(LABEL, 0, 16, threads=3), saved_version=None
    ).scored
    np.testing.assert_array_equal(again.robustness, scored.robustness)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_model_that_refuses_the_perturbed_copies_is_a_boundary_error_whatever_the_query_threads(
    adult, workers
):
    """A one-hot encoder that errors on unseen categories, over an integer column: the copies' noise moves
    some education_num values past the ones seen in training."""
    encode = make_column_transformer((OneHotEncoder(handle_unknown="error"), ["education_num"]))
    model, members, non_members = split_fit(
        adult, make_pipeline(encode, LogisticRegression(max_iter=500)), label=LABEL
    )
    with pytest.raises(DataError) as raised:
        audit_estimator(
            model,
            members,
            non_members,
            label_column=LABEL,
            attack_models="threshold,boundary",
            workers=workers,
        )
    assert raised.value.code == "boundary_rejected"


@pytest.mark.parametrize(
    ("estimator", "kind", "attacks"),
    [
        (RidgeClassifier(), "margins", "threshold,gap,boundary"),
        # A scikit-learn classifier with predict alone; the default attacks, those it cannot feed left out.
        (OutputCodeClassifier(LogisticRegression(max_iter=200), random_state=0), "labels", None),
    ],
    ids=["ridge", "output_code"],
)
def test_margin_and_label_bundles_are_audited_through_the_sandbox(tmp_path, adult, estimator, kind, attacks):
    model, members, non_members = split_fit(adult, _pipeline(adult, estimator), label=LABEL)
    bundle = write_bundle(tmp_path, model, members, non_members)
    options = OPTIONS | {"attack_models": attacks}
    report = audit(bundle, options)
    in_process = audit_estimator(model, members, non_members, workers=1, **options)
    assert report.containment["sandbox"] is True and report.target.output_kind == kind
    # The child's margins / labels and boundary robustness give the figures the model gives in process.
    assert [(r.attack_model, r.proportion, r.mean) for r in report.results] == [
        (r.attack_model, r.proportion, r.mean) for r in in_process.results
    ]


def test_regressors_clusterers_and_transformers_are_still_refused_by_the_loader(tmp_path, adult):
    import joblib
    from sklearn.cluster import KMeans

    from mia_robustness.loading import load_model

    numeric = adult.select_dtypes("number").to_numpy()[:200]
    for name, model in {
        "regressor": LinearRegression().fit(numeric, np.arange(200)),
        "clusterer": KMeans(2, n_init=1, random_state=0).fit(numeric),
        "transformer": StandardScaler().fit(numeric),
    }.items():
        joblib.dump(model, tmp_path / f"{name}.pkl")
        with pytest.raises(ModelError) as caught:
            load_model(tmp_path / f"{name}.pkl")
        assert (
            caught.value.code == "not_a_classifier" and f"a {name}, not a classifier" in caught.value.message
        )
    # A label-only classifier passes the same check.
    joblib.dump(
        OutputCodeClassifier(LogisticRegression(), random_state=0).fit(
            numeric / numeric.max(axis=0), numeric[:, 0] > 40
        ),
        tmp_path / "ok.pkl",
    )
    assert not hasattr(load_model(tmp_path / "ok.pkl").estimator, "decision_function")


def _wire(kind: str, outputs: np.ndarray, robustness: np.ndarray | None = None):
    import json

    from mia_robustness.target import ScoredTarget

    n = len(outputs)
    scored = ScoredTarget(
        outputs=outputs,
        output_kind=kind,
        label_index=np.zeros(n, dtype=np.int64),
        classes=np.array(["a", "b"]),
        is_member=np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(np.int8),
        source_rows=np.arange(n),
        label_column="y",
        n_features=1,
        members_available=n // 2,
        non_members_available=n // 2,
        balancing="none",
        model_class="Pipeline",
        estimator_class="RidgeClassifier",
        saved_version=None,
        table_bytes=1,
        label_classes=2,
        robustness=robustness,
    )
    header, arrays = scored_to_message(scored)
    return json.loads(json.dumps(header)), arrays  # as the protocol carries it


def test_a_forged_kind_or_shape_from_the_child_is_refused():
    margins = np.array([[-1.5, 1.5], [2.0, -2.0], [0.1, -0.1], [-3.0, 3.0]])
    header, arrays = _wire("margins", margins)
    assert scored_from_message(header, arrays).output_kind == "margins"
    forged = [
        ({**header, "output_kind": "logits"}, arrays),  # no such kind
        ({**header, "output_kind": "probabilities"}, arrays),  # margins passed off as probabilities
        ({**header, "output_kind": "labels"}, arrays),  # margins passed off as one-hot labels
        (header, {**arrays, "outputs": margins[:, :1]}),  # one column for two classes
        (header, {**arrays, "outputs": np.where(margins > 2, np.inf, margins)}),  # not finite
        (header, {**arrays, "robustness": np.full(4, 0.5)}),  # robustness nobody asked for
    ]
    for forged_header, forged_arrays in forged:
        with pytest.raises(ProtocolError):
            scored_from_message(forged_header, forged_arrays)
    # Asked for 3 queries: shares of 4 answers, and nothing else.
    header, arrays = _wire("labels", np.eye(2)[[0, 1, 1, 0]], robustness=np.array([0.25, 1.0, 0.0, 0.75]))
    asked = ScoreRequest("y", 0, boundary_queries=3)
    assert scored_from_message(header, arrays, asked).robustness.tolist() == [
        0.25,
        1.0,
        0.0,
        0.75,
    ]
    for bad in (np.array([0.3, 1.0, 0.0, 0.75]), np.array([0.25, 1.25, 0.0, 0.75]), np.zeros(3)):
        with pytest.raises(ProtocolError):
            scored_from_message(header, {**arrays, "robustness": bad}, asked)
    with pytest.raises(ProtocolError):
        scored_from_message(header, {k: v for k, v in arrays.items() if k != "robustness"}, asked)


def test_the_boundary_row_limit_is_checked_on_the_wire():
    """Over ``boundary_max_rows`` a probability or margin target's child must leave the robustness out (and a
    label-only target's must send it): the parent holds it to the rule the child applied."""
    over = ScoreRequest("y", 0, boundary_queries=3, boundary_max_rows=1)  # 2 rows a side: over the limit
    margins = np.array([[-1.5, 1.5], [2.0, -2.0], [0.1, -0.1], [-3.0, 3.0]])
    robustness = np.array([0.25, 1.0, 0.0, 0.75])
    header, arrays = _wire("margins", margins)
    assert scored_from_message(header, arrays, over).robustness is None
    header, arrays = _wire("margins", margins, robustness=robustness)
    with pytest.raises(ProtocolError):  # queries made past the limit: not what was asked
        scored_from_message(header, arrays, over)
    assert scored_from_message(
        header, arrays, ScoreRequest("y", 0, 3, boundary_max_rows=2)
    ).robustness.tolist() == [
        0.25,
        1.0,
        0.0,
        0.75,
    ]
    header, arrays = _wire("labels", np.eye(2)[[0, 1, 1, 0]], robustness=robustness)
    assert scored_from_message(header, arrays, over).robustness is not None
    with pytest.raises(ProtocolError):  # a label-only target's boundary is its headline: never left out
        scored_from_message(header, {k: v for k, v in arrays.items() if k != "robustness"}, over)


def test_the_headline_of_a_probability_or_margin_target_leaves_the_labels_only_rows_beside_it():
    from mia_robustness.assemble import kind_sentences, served_rows
    from mia_robustness.report import ResultRow

    def row(name, auc, labels_only):
        mean = {"auc": auc, "tpr_at_1pct_fpr": 0.0}
        return ResultRow(name, 1.0, "", 10, 10, 1, "cpu", mean, mean, labels_only=labels_only)

    rows = [row("threshold", 0.6, False), row("boundary", 0.7, True)]
    assert [r.attack_model for r in served_rows(rows, "probabilities")] == ["threshold"]
    assert [r.attack_model for r in served_rows(rows, "labels")] == ["threshold", "boundary"]
    assert served_rows(rows[1:], "margins") == rows[1:]  # only label-only attacks ran: they are the headline
    said = kind_sentences(rows, served_rows(rows, "probabilities"), "probabilities")
    assert said == [
        "If the model served only its predicted labels, the strongest label-only attack, boundary, would tell "
        "members from non-members with ROC AUC 0.70 (the rows marked labels only)."
    ]


def _audit_with_boundary_limit(model, members, non_members, options, max_rows):
    """The audit of ``model`` in this process with the boundary row limit at ``max_rows`` rows per side;
    ``options`` as ``audit_estimator`` takes them, then the default attacks narrowed to threshold, gap and
    boundary without naming them (so the limit applies, as to the default list)."""
    from mia_robustness.deadline import Deadline
    from mia_robustness.engine import InProcessModel, Stopwatch, run_audit
    from mia_robustness.options import options_from_mapping

    audit_options = options_from_mapping(options)
    if "attack_models" not in audit_options.explicit:
        kept = [a for a in audit_options.attack_models if a in ("threshold", "gap", "boundary")]
        audit_options = dataclasses.replace(audit_options, attack_models=tuple(kept))
    deadline = Deadline(None)
    clock = Stopwatch(None, deadline)
    stage = InProcessModel(model, members, non_members, saved_version=None, progress=clock.progress)
    try:
        return run_audit(
            stage,
            audit_options,
            layout="in-memory",
            model_file_bytes=0,
            workers=1,
            max_memory_mb=None,
            deadline=deadline,
            clock=clock,
            boundary_max_rows=max_rows,
        )
    finally:
        stage.close()


BOUNDARY_LIMIT_OPTIONS = {"repeats": 1, "proportions": "0.5,1", "label_column": LABEL, "what_if": False}


def test_over_the_boundary_row_limit_a_probability_target_leaves_boundary_out_with_a_note(adult):
    forest, members, non_members = split_fit(
        adult, _pipeline(adult, LogisticRegression(max_iter=500)), label=LABEL
    )
    rows_per_side = min(len(members), len(non_members))
    report = _audit_with_boundary_limit(
        forest, members, non_members, BOUNDARY_LIMIT_OPTIONS, rows_per_side - 1
    )
    assert {row.attack_model for row in report.results} == {"threshold", "gap"}
    note = [w for w in report.warnings if w.startswith("boundary was left out")]
    assert len(note) == 1 and f"more than {rows_per_side - 1:,} rows per side" in note[0]
    assert "ask for it with attack_models" in note[0]
    # At the limit the queries are made; named explicitly, boundary runs whatever the rows.
    at_limit = _audit_with_boundary_limit(forest, members, non_members, BOUNDARY_LIMIT_OPTIONS, rows_per_side)
    named = _audit_with_boundary_limit(
        forest, members, non_members, BOUNDARY_LIMIT_OPTIONS | {"attack_models": "threshold,gap,boundary"}, 1
    )
    for kept in (at_limit, named):
        assert "boundary" in {row.attack_model for row in kept.results}
        assert not any(w.startswith("boundary was left out") for w in kept.warnings)


def test_over_the_boundary_row_limit_a_label_only_target_keeps_boundary(adult):
    tree, members, non_members = split_fit(
        adult, _pipeline(adult, DecisionTreeClassifier(random_state=0)), label=LABEL
    )
    report = _audit_with_boundary_limit(LabelsOnly(tree), members, non_members, BOUNDARY_LIMIT_OPTIONS, 1)
    assert {row.attack_model for row in report.results} == {"gap", "boundary"}
    assert not any(w.startswith("boundary was left out") for w in report.warnings)


def test_the_settings_of_an_audit_past_the_boundary_row_limit_reproduce_it(adult):
    """The report's settings, passed back, must give the same report: past the row limit boundary did not
    run, so the settings must not name it (named, it runs whatever the rows)."""
    from mia_robustness.options import options_from_mapping

    model, members, non_members = split_fit(
        adult, _pipeline(adult, LogisticRegression(max_iter=500)), label=LABEL
    )
    first = _audit_with_boundary_limit(model, members, non_members, BOUNDARY_LIMIT_OPTIONS, 1)
    assert "boundary" not in {row.attack_model for row in first.results}
    assert "boundary" not in first.settings["attack_models"]
    again = _audit_with_boundary_limit(model, members, non_members, first.settings, 1)
    assert options_from_mapping(again.settings) == options_from_mapping(first.settings)
    assert again.to_dict()["results"] == first.to_dict()["results"]


class _PassesOverlapLogistic(LogisticRegression):
    """A real logistic regression whose answers to two query passes made at once overlap: the first pass to
    ask waits for the second, then answers at once; the second answers 0.3 s later (first in, first out)."""

    def predict_proba(self, X):  # noqa: N803 - scikit-learn's name
        answers = super().predict_proba(X)
        if self.first_asked.acquire(blocking=False):
            assert self.second_asked.wait(10)
        else:
            self.second_asked.set()
            time.sleep(0.3)
        return answers


def test_query_passes_at_once_leave_the_warning_filters_as_they_were(adult):
    """Each pass silences the model's warnings (query_outputs: warnings.catch_warnings, which swaps one
    process-wide list); two passes that leave in the order they came in put back the second's copy, which
    holds the first's "ignore": every warning of the process (the sandbox child, or an in-process audit or
    server) was silenced after the boundary attack (found in review)."""
    features = adult[["age", "education_num", "hours_per_week"]].iloc[:200]
    labels = (adult[LABEL].iloc[:200] == ">50K").to_numpy().astype(int)
    model = _PassesOverlapLogistic(max_iter=500).fit(features, labels)
    model.first_asked, model.second_asked = threading.Lock(), threading.Event()
    before = list(warnings.filters)

    robustness = label_robustness(
        lambda rows: query_outputs(model, rows, "probabilities", model.classes_).argmax(axis=1),
        features,
        labels,
        labels,
        queries=2,
        seed=0,
        threads=2,
    )

    assert model.second_asked.is_set()  # the two passes did overlap
    assert warnings.filters == before
    assert robustness.shape == (200,)
