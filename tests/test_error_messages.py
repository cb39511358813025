"""Errors that say where and what (issue 15), each through the real path: a bundle audited in the sandbox.

The tables are the shipped sample's (1,500 + 1,500 Adult rows); no message may echo text the model file
carries (step names, a script's lines).
"""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from builders import CHEAPEST, REPO_ROOT, noisy_numeric_frame, raised, write_bundle
from mia_robustness import audit
from mia_robustness.errors import DataError, ModelError

SAMPLE = REPO_ROOT / "sample_input"


@pytest.fixture(scope="module")
def tables():
    return pd.read_csv(SAMPLE / "train.csv"), pd.read_csv(SAMPLE / "subject.csv")


def test_a_label_column_that_differs_in_case_is_suggested_among_all_columns(tmp_path, tables):
    members, non_members = tables
    bundle = write_bundle(tmp_path, RandomForestClassifier(n_estimators=2), members, non_members)
    (bundle / "model.pkl").write_bytes((SAMPLE / "model.joblib").read_bytes())
    error = raised(DataError, "missing_label_column", audit, bundle, {**CHEAPEST, "label_column": "Income"})
    assert "label column 'Income' is not in the members table; did you mean 'income' (the case differs)?" in (
        error.message
    )
    assert f"its {members.shape[1]} columns: 'age', " in error.message
    assert all(repr(column) in error.message for column in members.columns)  # every one, 'income' last


@pytest.mark.parametrize(
    ("steps", "what"),
    [
        (
            [("scale", StandardScaler()), ("secret_step", LinearRegression())],
            "a LinearRegression, a regressor",
        ),
        ([("secret_step", StandardScaler())], "a StandardScaler, a transformer"),
    ],
)
def test_a_pipeline_that_ends_without_a_classifier_names_its_last_step(tmp_path, steps, what):
    frame = noisy_numeric_frame(400, seed=3)
    model = Pipeline(steps).fit(frame.drop(columns="label"), frame["label"])
    bundle = write_bundle(tmp_path, model, frame.iloc[:200], frame.iloc[200:])
    error = raised(ModelError, "not_a_classifier", audit, bundle, CHEAPEST)
    assert f"holds a Pipeline whose last step (step {len(steps)} of {len(steps)}) is {what}" in error.message
    assert "make a classifier the pipeline's last step" in error.message
    assert "secret_step" not in error.message  # the step's name comes from the file


def test_a_model_fitted_on_one_hot_columns_is_told_to_encode_inside_a_pipeline(tmp_path, tables):
    members, non_members = tables
    encoded = pd.get_dummies(members.drop(columns="income"))
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(encoded, members["income"])
    error = raised(
        DataError, "feature_mismatch", audit, write_bundle(tmp_path, model, members, non_members), CHEAPEST
    )
    assert "one-hot encoded columns made from 'education', 'marital_status'" in error.message
    assert "put the encoding inside a Pipeline" in error.message


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"import time\nimport pandas as pd\n\nmodel = train()\n", "Python source code"),
        (b"age,income\n39,<=50K\n50,>50K\n", "a CSV table"),
        (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n", "an HTML page"),
        (b"Error: access denied\n", "plain text"),
    ],
)
def test_a_file_that_is_not_a_pickle_says_what_it_looks_like(tmp_path, tables, content, what):
    members, non_members = tables
    bundle = write_bundle(tmp_path, RandomForestClassifier(n_estimators=2), members, non_members)
    (bundle / "model.pkl").write_bytes(content)
    error = raised(ModelError, "corrupt_model", audit, bundle, CHEAPEST)
    assert error.message.startswith(f"model.pkl is not a saved model: it looks like {what}.")
    for word in ("mport", "pandas", "39", "Sign in", "denied"):
        assert word not in error.message
