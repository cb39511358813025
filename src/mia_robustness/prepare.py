"""Shape the two tables for the target: pick the label column, align the feature columns to the order the
model expects, and balance members and non-members by subsampling the larger side."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError
from .json_config import shown, shown_names
from .sanity import RowOverlap, find_shared_rows

LABEL_CANDIDATES = ("label", "target", "class", "y")
MIN_ROWS_PER_SIDE = 100
# A message lists a table's columns up to this many (a table may have 10,000).
MAX_LISTED_COLUMNS = 200


def nearest_name(requested: str, columns) -> str:
    """``"; did you mean 'Income'?"`` for the column closest to ``requested`` (a difference of case
    first, then ``difflib``'s closest match, case ignored), or ``""`` when none is close."""
    names = [str(c) for c in columns]
    by_lower = {name.lower(): name for name in reversed(names)}  # the first of names equal but for case
    if requested.lower() in by_lower:
        return f"; did you mean {shown(by_lower[requested.lower()])} (the case differs)?"
    close = difflib.get_close_matches(requested.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {shown(by_lower[close[0]])}?" if close else ""


def resolve_label_column(frame: pd.DataFrame, requested: str | None, role: str) -> str:
    """The label column: ``requested``, else ``label``/``target``/``class``/``y`` (any case), else the last."""
    if requested is not None:
        if requested not in frame.columns:
            raise DataError(
                f"label column {shown(requested)} is not in the {role} table{nearest_name(requested, frame.columns)} "
                f"(its {len(frame.columns)} columns: {shown_names(frame.columns, MAX_LISTED_COLUMNS)}); set "
                "label_column to one of them",
                code="missing_label_column",
            )
        return requested
    lowered = {str(c).lower(): c for c in frame.columns}
    for candidate in LABEL_CANDIDATES:
        if candidate in lowered:
            return lowered[candidate]
    return frame.columns[-1]


@dataclass(frozen=True)
class PreparedData:
    """Members and non-members ready for the target, balanced.

    Attributes
    ----------
    features:
        Feature rows for the model, members first then non-members, in the model's column order.
    labels:
        True labels as given in the tables (same order as ``features``).
    is_member:
        1 for a member row, 0 for a non-member.
    source_rows:
        Row number (0-based, data rows) of each row in its own table, to point at exposed records.
    """

    features: pd.DataFrame
    labels: np.ndarray
    is_member: np.ndarray
    source_rows: np.ndarray
    label_column: str
    feature_columns: tuple[str, ...]
    members_available: int
    non_members_available: int
    balancing: str
    shared: RowOverlap


def prepare_data(
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    model: object,
    label_column: str | None,
    rng: np.random.Generator,
) -> PreparedData:
    """Pick the label column, align features to ``model``, refuse tables that are mostly the same rows
    (``sanity.find_shared_rows``), and balance the two sides by subsampling."""
    label = resolve_label_column(members, label_column, "members")
    if label not in non_members.columns:
        raise DataError(
            f"the non-members table has no label column {shown(str(label))}{nearest_name(str(label), non_members.columns)}; "
            "both tables need the same columns",
            code="missing_label_column",
        )
    feature_columns = _feature_columns(members, non_members, model, label)
    for frame, role in ((members, "members"), (non_members, "non-members")):
        if frame[label].isna().any():
            raise DataError(
                f"the {role} table has {int(frame[label].isna().sum())} rows without a label in {shown(str(label))}; drop or fill them",
                code="missing_labels",
            )
    n_members, n_non_members = len(members), len(non_members)
    if min(n_members, n_non_members) < MIN_ROWS_PER_SIDE:
        raise DataError(
            f"too few rows: {n_members} members and {n_non_members} non-members; an audit needs at least "
            f"{MIN_ROWS_PER_SIDE} of each",
            code="too_few_rows",
        )
    # Before balancing, over the whole tables: row numbers in messages are each table's own.
    shared = find_shared_rows(members, non_members, [*feature_columns, label])
    n = min(n_members, n_non_members)
    member_rows = np.sort(rng.choice(n_members, size=n, replace=False)) if n_members > n else np.arange(n)
    non_member_rows = (
        np.sort(rng.choice(n_non_members, size=n, replace=False)) if n_non_members > n else np.arange(n)
    )
    if n_members > n:
        balancing = f"members subsampled from {n_members} to {n} to match the non-members"
    elif n_non_members > n:
        balancing = f"non-members subsampled from {n_non_members} to {n} to match the members"
    else:
        balancing = "none (equal sizes)"
    features = pd.concat(
        [
            members.iloc[member_rows][list(feature_columns)],
            non_members.iloc[non_member_rows][list(feature_columns)],
        ],
        ignore_index=True,
    )
    labels = np.concatenate(
        [members[label].to_numpy()[member_rows], non_members[label].to_numpy()[non_member_rows]]
    )
    return PreparedData(
        features=features,
        labels=labels,
        is_member=np.concatenate([np.ones(n, dtype=np.int8), np.zeros(n, dtype=np.int8)]),
        source_rows=np.concatenate([member_rows, non_member_rows]),
        label_column=str(label),
        feature_columns=feature_columns,
        members_available=n_members,
        non_members_available=n_non_members,
        balancing=balancing,
        shared=shared,
    )


# How encoders name a one-hot column made from column "sex" and its value "Male": pandas.get_dummies
# and OneHotEncoder's feature names give sex_Male, DictVectorizer / feature-engine sex=Male.
ONE_HOT_SEPARATORS = ("_", "=")


def _one_hot_hint(missing: list[str], columns) -> str:
    """A hint when the missing features look like one-hot columns of columns the table has (``sex_Male``
    while the table has ``sex``): the model was fitted on encoded data, the tables hold it raw. Only the
    table's own column names are shown."""
    bases = sorted(
        {
            str(column)
            for column in columns
            for name in missing
            if any(name.startswith(f"{column}{separator}") for separator in ONE_HOT_SEPARATORS)
        }
    )
    if not bases:
        return ""
    return (
        f"; the model looks fitted on one-hot encoded columns made from {shown_names(bases)}: put the encoding "
        "inside a Pipeline (a OneHotEncoder in a ColumnTransformer before the classifier), fit and save the "
        "whole Pipeline, so the model takes the tables' own columns"
    )


def _feature_columns(
    members: pd.DataFrame, non_members: pd.DataFrame, model: object, label: str
) -> tuple[str, ...]:
    expected = getattr(model, "feature_names_in_", None)
    if expected is not None:
        expected = [str(c) for c in expected]
        for frame, role in ((members, "members"), (non_members, "non-members")):
            missing = [c for c in expected if c not in frame.columns]
            if missing:
                raise DataError(
                    f"the {role} table lacks {len(missing)} feature column(s) the model was trained on: "
                    f"{model_columns_named(missing, (members, non_members))}"
                    f"{_one_hot_hint(missing, frame.columns)}",
                    code="feature_mismatch",
                )
        return tuple(expected)
    columns = [c for c in members.columns if c != label]
    other = [c for c in non_members.columns if c != label]
    if set(columns) != set(other):
        only = sorted(set(columns) ^ set(other))
        raise DataError(
            f"members and non-members tables have different columns ({shown_names(only)}); give both the same columns",
            code="feature_mismatch",
        )
    expected_count = getattr(model, "n_features_in_", None)
    if expected_count is not None and expected_count != len(columns):
        raise DataError(
            f"the model expects {expected_count} features but the tables have {len(columns)} besides the label "
            f"column {shown(str(label))}; check label_column and drop extra columns",
            code="feature_mismatch",
        )
    return tuple(columns)


def describe_non_finite(
    members: pd.DataFrame, non_members: pd.DataFrame, columns: tuple[str, ...]
) -> str | None:
    """Where the tables first hold a missing (NaN) or infinite value in a feature column, as a clause for a
    message ("the members table has ... in column 'x3', first at row 5 (0-based)..."), or ``None``.

    Members are searched first, then non-members; within a table, the column whose first such value comes
    earliest (ties: the model's column order).
    """
    for frame, role in ((members, "members"), (non_members, "non-members")):
        found = None
        for column in columns:
            values = frame[column]
            missing = values.isna().to_numpy()
            infinite = (
                np.isinf(values.to_numpy(dtype=np.float64, na_value=0.0))
                if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
                else np.zeros(len(values), dtype=bool)
            )
            bad = missing | infinite
            if bad.any():
                row = int(np.argmax(bad))
                if found is None or row < found[1]:
                    kind = "an infinite value" if infinite[row] else "a missing value (NaN or empty)"
                    found = (column, row, kind, int(bad.sum()))
        if found is not None:
            column, row, kind, count = found
            return (
                f"the {role} table has {kind} in column {shown(str(column))}, first at row {row} (0-based data "
                f"row; {count:,} row{'s' if count != 1 else ''} in that column)"
            )
    return None


def model_columns_named(missing: list[str], tables: tuple[pd.DataFrame, ...]) -> str:
    """The model's feature columns that a table lacks, for a message.

    Each is named only where one of the user's ``tables`` has a column of that name (it is then the user's
    own text, and the likely mix-up is between the two tables); the others are only counted: their names
    are the model file's text (``feature_names_in_``), and no text from the model reaches the user.
    """
    known = {str(column) for table in tables for column in table.columns}
    named = [column for column in missing if column in known]
    parts = [shown_names(named)] if named else []
    if len(named) < len(missing):
        parts.append(f"{len(missing) - len(named)} in neither table: see the model's feature_names_in_")
    return "; ".join(parts)
