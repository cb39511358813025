"""Shape the two tables for the target: pick the label column, align the feature columns to the order the
model expects, and balance members and non-members by subsampling the larger side."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError
from .options import shown, shown_names

LABEL_CANDIDATES = ("label", "target", "class", "y")
MIN_ROWS_PER_SIDE = 100


def resolve_label_column(frame: pd.DataFrame, requested: str | None, role: str) -> str:
    """The label column: ``requested``, else ``label``/``target``/``class``/``y`` (any case), else the last."""
    if requested is not None:
        if requested not in frame.columns:
            raise DataError(
                f"label column {shown(requested)} is not in the {role} table (columns: "
                f"{shown_names(frame.columns, 10)}); set label_column to one of them",
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


def prepare_data(
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    model: object,
    label_column: str | None,
    rng: np.random.Generator,
) -> PreparedData:
    """Pick the label column, align features to ``model``, and balance the two sides by subsampling."""
    label = resolve_label_column(members, label_column, "members")
    if label not in non_members.columns:
        raise DataError(
            f"the non-members table has no label column {shown(str(label))}; both tables need the same columns",
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
                    f"{model_columns_named(missing, (members, non_members))}",
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
