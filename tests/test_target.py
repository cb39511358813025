"""target.py on tiny fitted models: one predict_proba pass (in chunks), each true label mapped to its column,
and a clear error for every way a model's answers can be unusable."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

import mia_robustness.target as target
from mia_robustness.errors import DataError, ModelError
from mia_robustness.target import ScoreRequest, label_positions, model_classes, query_target, score_target

ROWS = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "y": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
LABELS = np.array(["no", "no", "no", "yes", "yes", "yes"], dtype=object)


@pytest.fixture(scope="module")
def fitted() -> LogisticRegression:
    return LogisticRegression().fit(ROWS, LABELS)


# ---------------------------------------------------------------- one pass, checked


def test_query_target_returns_predict_proba_and_label_columns(fitted):
    outputs = query_target(fitted, ROWS, LABELS)
    np.testing.assert_array_equal(outputs.outputs, fitted.predict_proba(ROWS))
    assert outputs.outputs.dtype == np.float64
    assert outputs.classes.tolist() == ["no", "yes"]
    assert outputs.label_index.tolist() == [0, 0, 0, 1, 1, 1]


def test_chunks_give_the_same_answers_as_one_call(fitted, monkeypatch):
    calls = []
    original = type(fitted).predict_proba

    def counting(self, rows):
        calls.append(len(rows))
        return original(self, rows)

    monkeypatch.setattr(type(fitted), "predict_proba", counting)
    whole = query_target(fitted, ROWS, LABELS).outputs
    monkeypatch.setattr(target, "CHUNK_ROWS", 4)
    calls.clear()
    chunked = query_target(fitted, ROWS, LABELS).outputs
    assert calls == [4, 2]  # 6 rows in chunks of at most 4
    np.testing.assert_array_equal(chunked, whole)


def test_rows_go_in_as_a_frame_only_to_a_model_fitted_on_one():
    seen = []

    class Recording(DecisionTreeClassifier):
        def predict_proba(self, rows, check_input=True):
            seen.append(type(rows))
            return super().predict_proba(rows)

    query_target(Recording().fit(ROWS, LABELS), ROWS, LABELS)  # fitted on a DataFrame: names matter
    query_target(Recording().fit(ROWS.to_numpy(), LABELS), ROWS, LABELS)  # fitted on an array
    assert seen == [pd.DataFrame, np.ndarray]


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("classes", "labels", "expected"),
    [
        ([0, 1, 2], [2, 0, 1], [2, 0, 1]),
        ([0, 1], ["1", "0"], [1, 0]),  # read from CSV as text
        ([0, 1], [1.0, 0.0], [1, 0]),  # read as floats
        (["0", "1"], [1, 0], [1, 0]),  # the other way round
        (["a", "b"], [" b", "a "], [1, 0]),  # stray spaces
        ([1.5, 2.5], [2.5, 1.5], [1, 0]),
    ],
)
def test_label_positions_match_labels_of_another_type(classes, labels, expected):
    positions = label_positions(np.array(labels, dtype=object), np.array(classes))
    assert positions.tolist() == expected and positions.dtype == np.int64


def test_labels_the_model_never_saw_are_counted_and_named():
    with pytest.raises(DataError) as caught:
        label_positions(np.array([0, 1, 7, 7, 9], dtype=object), np.array([0, 1]))
    assert caught.value.code == "unknown_label"
    message = caught.value.message
    assert message.startswith("3 rows have labels the model never saw (7, 9)")
    assert "the model knows 0, 1" in message and "Check label_column" in message


def test_class_names_only_the_model_holds_are_counted_not_echoed():
    """``classes_`` is the model file's text: a class no table row has is counted, never quoted."""
    classes = np.array(["no", "yes", "VISIT evil.example"], dtype=object)
    with pytest.raises(DataError) as caught:
        label_positions(np.array(["no", "yes", "maybe"], dtype=object), classes)
    message = caught.value.message
    assert (
        "never saw (maybe)" in message and "the model knows no, yes and 1 class no table row has" in message
    )
    assert "evil" not in message.lower()
    with pytest.raises(DataError) as caught:
        label_positions(np.array(["maybe"], dtype=object), classes)
    assert "the model knows 3 classes no table row has." in caught.value.message


def test_model_classes():
    assert model_classes(
        make_pipeline(StandardScaler(), LogisticRegression()).fit(ROWS, LABELS)
    ).tolist() == [
        "no",
        "yes",
    ]
    with pytest.raises(ModelError) as caught:
        model_classes(LogisticRegression())  # not fitted
    assert caught.value.code == "not_fitted" and "fit it before saving" in caught.value.message

    class OneClass:
        classes_ = np.array([1])

    class MultiOutput:
        classes_ = [np.array([0, 1]), np.array([0, 1])]

    for model in (OneClass(), MultiOutput()):
        with pytest.raises(ModelError) as caught:
            model_classes(model)
        assert caught.value.code == "unsupported_model"


# ---------------------------------------------------------------- answers that cannot be used


class Fixed:
    """A "fitted classifier" whose predict_proba returns ``answer`` (or raises it)."""

    classes_ = np.array(["no", "yes"], dtype=object)

    def __init__(self, answer) -> None:
        self.answer = answer

    def predict_proba(self, rows):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


GOOD = np.tile([0.25, 0.75], (6, 1))


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (GOOD[:5], "shape (5, 2), expected (6, 2)"),
        (GOOD[:, :1], "shape (6, 1)"),
        (np.where(np.eye(6, 2, dtype=bool), np.nan, GOOD), "NaN or infinite"),
        (np.where(np.eye(6, 2, dtype=bool), np.inf, GOOD), "NaN or infinite"),
        (np.tile([-0.5, 1.5], (6, 1)), "outside [0, 1]"),
        (np.tile([0.5, 0.6], (6, 1)), "one sums to 1.1000"),
    ],
    ids=["too-few-rows", "one-column", "nan", "inf", "outside-0-1", "sum"],
)
def test_bad_probabilities(answer, fragment):
    with pytest.raises(ModelError) as caught:
        query_target(Fixed(answer), ROWS, LABELS)
    assert caught.value.code == "bad_probabilities" and fragment in caught.value.message


def test_rounding_within_the_tolerance_is_accepted():
    nearly = GOOD + np.array([[0.0004, 0.0]])  # rows sum to 1.0004
    assert query_target(Fixed(nearly), ROWS, LABELS).outputs.shape == (6, 2)


@pytest.mark.parametrize(
    ("raised", "error", "code"),
    [
        (ValueError("could not convert 'secret-value' at 0x7f00"), DataError, "model_rejected_data"),
        (TypeError("bad type at 0x7f00"), DataError, "model_rejected_data"),
        (RuntimeError("secret-value at 0x7f00"), ModelError, "predict_failed"),
    ],
)
def test_a_failing_predict_proba_is_named_by_class_only(raised, error, code):
    with pytest.raises(error) as caught:
        query_target(Fixed(raised), ROWS, LABELS)
    assert caught.value.code == code and type(raised).__name__ in caught.value.message
    assert "secret-value" not in caught.value.message and "0x7f00" not in caught.value.message


def test_a_model_without_predict_proba():
    class NoProba:
        classes_ = np.array([0, 1])

    with pytest.raises(ModelError) as caught:
        query_target(NoProba(), ROWS, np.array([0, 1, 0, 1, 0, 1]))
    assert caught.value.code == "not_a_classifier"


# ---------------------------------------------------------------- the stage


def test_score_target_balances_aligns_and_describes(fitted):
    members = pd.DataFrame(
        {"y": np.arange(150) % 2, "x": np.arange(150.0), "label": ["no"] * 75 + ["yes"] * 75}
    )
    non_members = members.iloc[:120][["label", "x", "y"]].assign(
        x=lambda f: f["x"] + 1000
    )  # columns reordered
    loaded = score_target(fitted, members, non_members, ScoreRequest(None, seed=3), saved_version="1.5.0")
    scored = loaded.scored
    assert scored.rows_per_side == 120 and scored.members_available == 150
    assert list(loaded.features.columns) == ["x", "y"]  # the model's order
    np.testing.assert_array_equal(scored.outputs, fitted.predict_proba(loaded.features))
    np.testing.assert_array_equal(scored.label_index, (loaded.labels == "yes").astype(int))
    assert (scored.label_column, scored.n_features, scored.label_classes) == ("label", 2, 2)
    assert (scored.model_class, scored.estimator_class, scored.saved_version) == (
        "LogisticRegression",
        "LogisticRegression",
        "1.5.0",
    )
    again = score_target(fitted, members, non_members, ScoreRequest(None, seed=3), saved_version=None)
    np.testing.assert_array_equal(again.scored.source_rows, scored.source_rows)  # the seed decides
