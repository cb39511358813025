"""The bundle check: will this model audit these tables? Answered on a few rows, before anything is packed.

:func:`check_model` runs the audit's own first steps (``prepare.prepare_data``, ``target.query_target``) on
a model and its two tables, with two differences: it first asks whether the model was fitted at all, and
whether the tables hold columns the model does not know (the audit drops those silently, so a mix-up
there would go unnoticed); and it scores only the first ``rows`` rows of each side. It runs wherever the
model is: in the sandbox child for a model file (``sandbox/``), in this process for a trusted one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from .attacks.registry import SERVED
from .errors import DataError, ModelError
from .json_config import shown, shown_names
from .prepare import model_columns_named, prepare_data, resolve_label_column
from .target import label_positions, model_classes, query_target

#: Rows of each table the check scores: enough to catch a model that rejects the tables' values.
CHECK_ROWS = 5
#: The balancing stream of the check (which rows are scored does not change what the check finds).
CHECK_SEED = 0


@dataclass(frozen=True)
class CheckRequest:
    """What the check needs besides the model and the tables.

    Attributes
    ----------
    label_column:
        The label column as the bundle's ``config.json`` will give it, or ``None`` for the audit's default.
    rows:
        Rows of each table to score (at least 1).
    """

    label_column: str | None
    rows: int = CHECK_ROWS


@dataclass(frozen=True)
class ModelCheck:
    """What a passed check found.

    Attributes
    ----------
    model_class, estimator_class:
        Class of the model, and of its final step for a pipeline.
    n_classes:
        Number of classes the model predicts.
    output_kind:
        What the model answers with, one of ``target.OUTPUT_KINDS`` (``probabilities``, ``margins`` or
        ``labels``); it decides which attacks the audit can run.
    label_column:
        The label column the audit will use.
    n_features:
        Feature columns the model is given (the tables' other columns, in the model's order).
    members_rows, non_members_rows:
        Rows in each table.
    rows_scored:
        Rows of each table the model scored.
    """

    model_class: str
    estimator_class: str
    n_classes: int
    output_kind: str
    label_column: str
    n_features: int
    members_rows: int
    non_members_rows: int
    rows_scored: int

    def describe(self) -> str:
        """One line for a person: what was checked."""
        model = (
            self.model_class
            if self.model_class == self.estimator_class
            else f"{self.model_class} ending in {self.estimator_class}"
        )
        return (
            f"{model}, {self.n_classes} classes, answers with {SERVED[self.output_kind]}, "
            f"{self.n_features} feature columns, label column "
            f"{shown(self.label_column)}; it scored {self.rows_scored} rows of each table "
            f"({self.members_rows:,} members, {self.non_members_rows:,} non-members)"
        )


def check_model(
    model: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    request: CheckRequest,
    *,
    model_name: str,
    table_names: tuple[str, str] = ("", ""),
) -> ModelCheck:
    """Check that ``model`` is a fitted classifier that scores the first rows of both tables.

    Parameters
    ----------
    model:
        The loaded model (its file passed the loader already).
    members, non_members:
        The tables as read, ``(n_members, n_columns)`` and ``(n_non_members, n_columns)``, each with the
        label column.
    request:
        The label column and how many rows of each table to score.
    model_name, table_names:
        The file names of the model and of the members and non-members tables as the user gave them, for
        messages.

    Raises
    ------
    ModelError
        ``not_fitted``: the model was saved before it was fitted; the loader's and the target's errors
        for a model that is no classifier or gives no probabilities.
    DataError
        ``missing_label_column``, ``feature_mismatch`` (missing and unexpected columns named),
        ``unknown_label``, ``too_few_rows``, ``model_rejected_data`` and the audit's other table errors.
    """
    _check_fitted(model, model_name)
    label = resolve_label_column(members, request.label_column, "members")
    _check_feature_names(model, {"members": members, "non-members": non_members}, table_names, label)
    data = prepare_data(members, non_members, model, request.label_column, np.random.default_rng(CHECK_SEED))
    classes = model_classes(model)
    label_positions(data.labels, classes)  # every row's label, not only the scored ones
    per_side = len(data.labels) // 2
    rows = min(max(request.rows, 1), per_side)
    scored = np.r_[0:rows, per_side : per_side + rows]
    answered = query_target(model, data.features.iloc[scored], data.labels[scored])
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return ModelCheck(
        model_class=type(model).__name__,
        estimator_class=type(final).__name__,
        n_classes=len(classes),
        output_kind=answered.kind,
        label_column=data.label_column,
        n_features=len(data.feature_columns),
        members_rows=data.members_available,
        non_members_rows=data.non_members_available,
        rows_scored=rows,
    )


def _check_fitted(model: Any, model_name: str) -> None:
    """Refuse a model saved before it was fitted (scikit-learn's own test, which a pipeline answers for
    all its steps); one without ``fit`` is left to the checks of what it can do."""
    if not hasattr(model, "fit"):
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            check_is_fitted(model)
    except NotFittedError:
        raise ModelError(
            f"{shown(model_name, 80)} holds a {type(model).__name__} that was never fitted; fit it on the "
            "members' rows, then save it",
            code="not_fitted",
        ) from None


def _check_feature_names(
    model: Any, tables: dict[str, pd.DataFrame], names: tuple[str, str], label: str
) -> None:
    """With the column names the model was fitted on, name the columns each table lacks and those it has
    besides them and the label (the audit would drop those without a word)."""
    expected = getattr(model, "feature_names_in_", None)
    if expected is None:
        return  # fitted on bare arrays: prepare_data compares the column counts
    expected = [str(c) for c in expected]
    for (role, frame), name in zip(tables.items(), names, strict=True):
        if label not in frame.columns:
            continue  # prepare_data says so first: a misnamed label would read as an unknown column
        columns = [c for c in frame.columns if c != label]
        missing = [c for c in expected if c not in frame.columns]
        unexpected = [c for c in columns if c not in set(expected)]
        if not missing and not unexpected:
            continue
        found = []
        if missing:
            named = model_columns_named(missing, tuple(tables.values()))
            found.append(f"lacks {_columns(len(missing))} the model was fitted on ({named})")
        if unexpected:
            found.append(
                f"has {_columns(len(unexpected))} the model does not know ({shown_names(unexpected)})"
            )
        hint = "give the tables exactly the model's feature columns and the label column"
        if label in expected:
            hint = (
                f"{shown(label)} is taken as the label column but the model uses it as a feature: "
                "set the label column (--label-column)"
            )
        raise DataError(
            f"the feature columns of the {role} table{' ' + name if name else ''} do not match the model's: it "
            f"{' and '.join(found)}; {hint}",
            code="feature_mismatch",
        )


def _columns(count: int) -> str:
    return f"{count} column" + ("" if count == 1 else "s")
