"""prepare.py on small DataFrames: which column is the label, feature columns in the model's order, and
balancing the two sides (deterministic for a seed, reported in words)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from mia_robustness.errors import DataError
from mia_robustness.prepare import MIN_ROWS_PER_SIDE, prepare_data, resolve_label_column


def frame(rows: int, columns=("a", "b", "c"), label: str = "label", start: int = 0) -> pd.DataFrame:
    """``rows`` rows whose values say where they came from: column ``a`` of row r holds ``start + r``,
    ``b`` 1000 more, ``c`` 2000 more (by the name's first letter), wherever the column stands."""
    data = {name: 1000 * (ord(name[0]) - ord("a")) + start + np.arange(rows) for name in columns}
    data[label] = (start + np.arange(rows)) % 2
    return pd.DataFrame(data)


class NoNames:
    """A fitted model that knows only how many features it takes (as one fitted on a bare array)."""

    def __init__(self, n_features: int) -> None:
        self.n_features_in_ = n_features


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- the label column


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["x", "label", "y"], "label"),  # label before target, class and y
        (["Target", "x", "CLASS"], "Target"),  # any case; target before class
        (["x", "class", "y"], "class"),
        (["x", "Y"], "Y"),
        (["x", "z", "outcome"], "outcome"),  # none of the names: the last column
    ],
)
def test_label_column_found_by_name_else_the_last(columns, expected):
    assert resolve_label_column(pd.DataFrame(columns=columns), None, "members") == expected


def test_a_requested_label_column_wins_or_is_refused_with_the_columns_listed():
    table = pd.DataFrame(columns=["label", "outcome", "x"])
    assert resolve_label_column(table, "outcome", "members") == "outcome"
    with pytest.raises(DataError) as caught:
        resolve_label_column(table, "Outcome", "members")  # exact name only
    assert caught.value.code == "missing_label_column"
    message = caught.value.message
    assert "'Outcome'" in message and "members table" in message and "'label', 'outcome', 'x'" in message
    assert "did you mean 'outcome' (the case differs)?" in message
    assert "set label_column to one of them" in message


def test_a_missing_label_column_lists_every_column_and_suggests_the_nearest():
    columns = [f"feature_{i}" for i in range(30)] + ["income_bracket"]
    table = pd.DataFrame(columns=columns)
    with pytest.raises(DataError) as caught:
        resolve_label_column(table, "income-braket", "members")
    message = caught.value.message
    assert "did you mean 'income_bracket'?" in message
    assert "its 31 columns: 'feature_0', " in message and "'feature_29', 'income_bracket')" in message
    with pytest.raises(DataError) as caught:
        resolve_label_column(table, "zzz", "members")
    assert "did you mean" not in caught.value.message


def test_the_non_members_need_the_same_label_column():
    with pytest.raises(DataError) as caught:
        prepare_data(frame(120), frame(120, label="target"), NoNames(3), None, rng())
    assert caught.value.code == "missing_label_column" and "non-members table" in caught.value.message


# ---------------------------------------------------------------- feature alignment


def test_features_follow_the_models_column_order_and_extra_columns_are_dropped():
    members = frame(120, columns=("a", "b", "c", "extra"))
    non_members = frame(120, columns=("c", "extra", "b", "a"), start=500)  # another order
    model = DecisionTreeClassifier().fit(members[["c", "a", "b"]], members["label"])
    data = prepare_data(members, non_members, model, None, rng())
    assert data.feature_columns == ("c", "a", "b")
    assert list(data.features.columns) == ["c", "a", "b"]
    # every row keeps its own values: column c of member row r holds 2000 + r
    np.testing.assert_array_equal(data.features["c"].to_numpy()[:120], 2000 + np.arange(120))
    np.testing.assert_array_equal(data.features["a"].to_numpy()[120:], 500 + np.arange(120))


def test_a_feature_the_model_needs_is_missing():
    members = frame(120)
    model = DecisionTreeClassifier().fit(members[["a", "b", "c"]], members["label"])
    with pytest.raises(DataError) as caught:
        prepare_data(members, frame(120).drop(columns="b"), model, None, rng())
    assert caught.value.code == "feature_mismatch"
    assert "non-members table lacks 1 feature column(s)" in caught.value.message
    assert "'b'" in caught.value.message


def test_without_feature_names_the_tables_must_match_each_other_and_the_model():
    data = prepare_data(frame(120), frame(120, columns=("c", "a", "b"), start=500), NoNames(3), None, rng())
    assert data.feature_columns == ("a", "b", "c")  # the members' order
    np.testing.assert_array_equal(data.features["c"].to_numpy()[120:], 2500 + np.arange(120))
    with pytest.raises(DataError) as caught:
        prepare_data(frame(120), frame(120, columns=("a", "b", "d")), NoNames(3), None, rng())
    assert caught.value.code == "feature_mismatch" and "'c', 'd'" in caught.value.message
    with pytest.raises(DataError) as caught:
        prepare_data(frame(120), frame(120), NoNames(4), None, rng())
    assert caught.value.code == "feature_mismatch"
    assert "expects 4 features but the tables have 3" in caught.value.message
    assert "check label_column" in caught.value.message


# ---------------------------------------------------------------- rows


def test_rows_without_a_label_are_counted():
    non_members = frame(120).astype({"label": float})
    non_members.loc[[3, 7], "label"] = np.nan
    with pytest.raises(DataError) as caught:
        prepare_data(frame(120), non_members, NoNames(3), None, rng())
    assert caught.value.code == "missing_labels" and "non-members table has 2 rows" in caught.value.message


def test_too_few_rows_on_either_side():
    prepare_data(
        frame(MIN_ROWS_PER_SIDE), frame(MIN_ROWS_PER_SIDE, start=900), NoNames(3), None, rng()
    )  # enough
    with pytest.raises(DataError) as caught:
        prepare_data(frame(500), frame(MIN_ROWS_PER_SIDE - 1), NoNames(3), None, rng())
    assert caught.value.code == "too_few_rows"
    assert f"500 members and {MIN_ROWS_PER_SIDE - 1} non-members" in caught.value.message
    assert f"at least {MIN_ROWS_PER_SIDE} of each" in caught.value.message


# ---------------------------------------------------------------- balancing


def test_equal_sides_are_kept_whole_in_order():
    data = prepare_data(frame(150), frame(150, start=900), NoNames(3), None, rng())
    assert data.balancing == "none (equal sizes)"
    np.testing.assert_array_equal(data.is_member, np.r_[np.ones(150), np.zeros(150)])
    np.testing.assert_array_equal(data.source_rows, np.r_[np.arange(150), np.arange(150)])
    np.testing.assert_array_equal(data.labels, np.r_[np.arange(150) % 2, (900 + np.arange(150)) % 2])


@pytest.mark.parametrize("larger", ["members", "non-members"])
def test_the_larger_side_is_subsampled_without_replacement(larger):
    big, small = frame(400, start=0), frame(150, start=5000)
    members, non_members = (big, small) if larger == "members" else (small, big)
    data = prepare_data(members, non_members, NoNames(3), None, rng(7))
    assert len(data.features) == 300 and data.is_member.sum() == 150
    assert (data.members_available, data.non_members_available) == (len(members), len(non_members))
    assert (
        data.balancing
        == f"{larger} subsampled from 400 to 150 to match the {'non-members' if larger == 'members' else 'members'}"
    )
    side = slice(0, 150) if larger == "members" else slice(150, 300)
    picked = data.source_rows[side]
    assert len(set(picked)) == 150 and picked.max() < 400 and (np.diff(picked) > 0).all()  # sorted, distinct
    assert not np.array_equal(picked, np.arange(150))  # a random subset, not the first rows
    # each kept row is the row of the table it names
    source = members if larger == "members" else non_members
    np.testing.assert_array_equal(data.features["a"].to_numpy()[side], source["a"].to_numpy()[picked])
    # the same seed picks the same rows; another seed others
    again = prepare_data(members, non_members, NoNames(3), None, rng(7))
    np.testing.assert_array_equal(again.source_rows, data.source_rows)
    other = prepare_data(members, non_members, NoNames(3), None, rng(8))
    assert not np.array_equal(other.source_rows, data.source_rows)
