"""Each bad input gets its own clear error (a MiaError with a specific code), never a crash."""

from __future__ import annotations

import importlib

import joblib
import numpy as np
import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import CHEAPEST, noisy_numeric_frame, raised, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.errors import BundleError, DataError, LimitError, MiaError, ModelError, OptionsError


@pytest.fixture(scope="module")
def frames():
    return split_fit(noisy_numeric_frame(600, seed=2), DecisionTreeClassifier(max_depth=4, random_state=0))


def expect(error_type, code, source, options=CHEAPEST, contains=None):
    error = raised(error_type, code, audit, source, options)
    assert error.http_status == 400
    if contains:
        assert contains in error.message
    return error


def test_labels_the_model_never_saw(tmp_path, frames):
    model, members, non_members = frames
    non_members = non_members.assign(label=non_members["label"].where(non_members.index % 7 != 0, 9))
    expect(DataError, "unknown_label", write_bundle(tmp_path, model, members, non_members), contains="9")


def test_feature_mismatch(tmp_path, frames):
    model, members, non_members = frames
    error = expect(
        DataError,
        "feature_mismatch",
        write_bundle(tmp_path, model, members.drop(columns="x2"), non_members.drop(columns="x2")),
    )
    # x2 is in neither table: its name is the model file's text (feature_names_in_), so it is only counted.
    assert "x2" not in error.message and "1 in neither table" in error.message
    error = expect(
        DataError,
        "feature_mismatch",
        write_bundle(tmp_path / "one", model, members.drop(columns="x2"), non_members),
    )
    assert "'x2'" in error.message  # the non-members table has it: the user's own text


def test_non_numeric_values(tmp_path, frames):
    model, members, non_members = frames
    members = members.astype({"x1": object})
    members.loc[3, "x1"] = "seven"
    expect(DataError, "model_rejected_data", write_bundle(tmp_path, model, members, non_members))


def test_too_few_rows_states_the_minimum(tmp_path, frames):
    model, members, non_members = frames
    expect(
        DataError,
        "too_few_rows",
        write_bundle(tmp_path, model, members.iloc[:60], non_members),
        contains="at least 100",
    )


def test_missing_label_column_option(tmp_path, frames):
    model, members, non_members = frames
    expect(
        DataError,
        "missing_label_column",
        write_bundle(tmp_path, model, members, non_members),
        CHEAPEST | {"label_column": "nope"},
    )


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"repeats": "zero"}, "integer"),
        ({"proportions": "0.5,2"}, "(0, 1]"),
        ({"attack_models": "nn,svm"}, "svm"),
        ({"device": "tpu"}, "device"),
        ({"colour": "red"}, "unknown option"),
        ({"eval_fraction": "0.9"}, "between"),
    ],
)
def test_bad_options(tmp_path, frames, options, fragment):
    model, members, non_members = frames
    with pytest.raises(OptionsError) as caught:
        audit(write_bundle(tmp_path, model, members, non_members), options)
    assert fragment in caught.value.message


def test_bad_config_json(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    (bundle / "config.json").write_text("{repeats: 1")
    expect(BundleError, "bad_config", bundle)


def test_missing_parts(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    (bundle / "subject.csv").unlink()
    expect(BundleError, "missing_non_members", bundle)
    (bundle / "train.csv").unlink()
    expect(BundleError, "missing_tables", bundle)
    (bundle / "model.pkl").unlink()
    expect(BundleError, "missing_model", bundle)
    expect(BundleError, "bundle_not_found", tmp_path / "nowhere")


def test_two_model_files(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    joblib.dump(model, bundle / "other.joblib")
    expect(BundleError, "ambiguous_model", bundle)


def test_broken_csv_files(tmp_path, frames):
    model, members, non_members = frames
    bundle = write_bundle(tmp_path, model, members, non_members)
    good = (bundle / "train.csv").read_text()
    (bundle / "train.csv").write_text(good + "1,2,3,4,5,6,7,8,9\n")
    expect(DataError, "ragged_rows", bundle)
    header, rest = good.split("\n", 1)
    (bundle / "train.csv").write_text(header.replace("x1", "x0") + "\n" + rest)
    expect(DataError, "duplicate_columns", bundle, contains="x0")
    (bundle / "train.csv").write_bytes(good.encode("utf-16"))
    expect(DataError, "unreadable_table", bundle)
    (bundle / "train.csv").write_text("")
    expect(DataError, "empty_table", bundle)
    wide = ",".join(f"c{i}" for i in range(10_001)) + "\n" + ",".join("1" for _ in range(10_001)) + "\n"
    (bundle / "train.csv").write_text(wide)
    expect(DataError, "too_many_columns", bundle)


def test_nan_values_for_a_model_that_cannot_take_them(tmp_path, frames):
    from sklearn.linear_model import LogisticRegression

    _, members, non_members = frames
    model = LogisticRegression().fit(
        members.drop(columns="label"), members["label"]
    )  # trees take NaN; this does not
    members = members.copy()
    members.loc[[5, 40], "x3"] = np.nan
    members.loc[9, "x1"] = np.inf
    error = expect(DataError, "non_finite_values", write_bundle(tmp_path, model, members, non_members))
    assert error.message.startswith(
        "the model could not score the rows: the members table has a missing value (NaN or empty) in column "
        "'x3', first at row 5 (0-based data row; 2 rows in that column). This model"
    )
    assert ".." not in error.message and "imputer" in error.message
    members.loc[[5, 40], "x3"] = 0.0
    error = expect(DataError, "non_finite_values", write_bundle(tmp_path, model, members, non_members))
    assert "an infinite value in column 'x1', first at row 9" in error.message


class ExplodingProbabilities(DecisionTreeClassifier):
    """An allowlisted-looking classifier whose predict_proba misbehaves in a chosen way."""

    def __init__(self, mode="raise", **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def predict_proba(self, X):
        p = super().predict_proba(X)
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "shape":
            return p[:, :1]
        if self.mode == "nan":
            p[0, 0] = np.nan
            return p
        return p * 0.5  # rows no longer sum to 1


@pytest.mark.parametrize("mode", ["raise", "shape", "nan", "sum"])
def test_misbehaving_models(tmp_path, frames, mode, monkeypatch):
    """predict_proba that raises or returns wrong shapes, NaN or non-probabilities: a clear ModelError."""
    honest, members, non_members = frames
    loading = importlib.import_module("mia_robustness.loading")
    model = ExplodingProbabilities(mode=mode, random_state=0).fit(
        members.drop(columns="label"), members["label"]
    )
    # This class is test code, not in the allowlist: it is handed to the model stage in this process.
    monkeypatch.setattr(loading, "load_model", lambda path, **_: loading.LoadedModel(model, None))
    with pytest.raises(ModelError) as caught:
        audit(write_bundle(tmp_path, honest, members, non_members), CHEAPEST, sandbox=False)
    assert caught.value.code in ("predict_failed", "bad_probabilities")
    assert "boom" not in caught.value.message  # the model's own text never reaches the user


def test_every_error_is_a_mia_error_with_a_message(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(MiaError) as caught:
        audit(tmp_path / "junk.zip", CHEAPEST)
    assert caught.value.http_status == 400 and caught.value.message


def test_an_audit_over_the_memory_limit_is_refused_up_front(tmp_path, frames, monkeypatch):
    model, members, non_members = frames
    engine = importlib.import_module("mia_robustness.engine")
    ran = []
    monkeypatch.setattr(engine, "run_sweep", lambda *a, **k: ran.append(1))
    with pytest.raises(LimitError) as caught:
        audit(write_bundle(tmp_path, model, members, non_members), CHEAPEST, max_memory_mb=50)
    assert caught.value.code == "memory_limit" and "MB" in caught.value.message
    assert not ran  # refused before any attack ran
