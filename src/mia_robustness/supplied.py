"""The model stage of a predictions bundle: the target's outputs read from the tables, no model to run.

A predictions bundle (``config.json``'s ``predictions``, :mod:`mia_robustness.predictions`) holds the
target's answers for every row as table columns. :class:`SuppliedOutputs` is the engine's
:class:`~mia_robustness.engine.ModelStage` for it: ``score()`` checks those columns and builds the same
:class:`~mia_robustness.target.ScoredTarget` a model's stage builds by querying the model, so the sweep,
the metrics and the report are the same code. Nothing runs that a sandbox would contain. There is no
recipe to retrain, so the reference attacks and the what-if's fits are not asked of it (``engine.py``
leaves them out and says why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError
from .json_config import shown
from .predictions import PredictionsSpec
from .prepare import nearest_name, prepare_data, resolve_label_column
from .remediation.family import Plan
from .remediation.fits import WhatIfFits, WhatIfRequest
from .sanity import RowOverlap
from .target import PROBABILITY_TOLERANCE, ScoredTarget, ScoreRequest, TargetOutputs, label_positions

ProgressCallback = Callable[[str, int, int], None]

SUPPLIED = "supplied"
#: What the report names as the model: there is none, only its outputs.
MODEL_CLASS = "SuppliedOutputs"


class SuppliedOutputs:
    """The model stage for outputs supplied in the tables.

    Parameters
    ----------
    spec:
        The output columns and the classes, from ``config.json``.
    members, non_members:
        The two tables as read, each with the feature columns (any number, none included), the label
        column and the output columns.
    progress:
        Receives the stage's progress.
    """

    containment: dict[str, Any] = {
        "sandbox": False,
        "model": "none: the bundle supplies the model's outputs, so no code of the user's runs",
    }

    def __init__(
        self,
        spec: PredictionsSpec,
        members: pd.DataFrame,
        non_members: pd.DataFrame,
        *,
        progress: ProgressCallback,
    ) -> None:
        self._inputs = (spec, members, non_members)
        self._progress = progress

    def score(self, request: ScoreRequest) -> ScoredTarget:
        self._progress("loading", 1, 1)
        scored = supplied_target(*self._inputs, request)
        self._progress("target_scoring", 1, 1)
        return scored

    def reference(self, request: Any, eval_rows: int) -> list:
        raise RuntimeError(
            "supplied outputs have no recipe: the engine does not run reference attacks on them"
        )

    def what_if(self, request: WhatIfRequest) -> WhatIfFits:
        if request.fit:
            raise RuntimeError(
                "supplied outputs have no recipe: the engine does not ask for the what-if's fits"
            )
        empty = np.empty((0, request.models_per_config, 0))
        return WhatIfFits(Plan(None, None, (), ()), "not_asked", empty, empty.astype(bool))

    def close(self) -> None:
        self._inputs = ()


def supplied_target(
    spec: PredictionsSpec, members: pd.DataFrame, non_members: pd.DataFrame, request: ScoreRequest
) -> ScoredTarget:
    """Check the supplied outputs and build the :class:`ScoredTarget` of the audited rows.

    The rows are balanced and the feature columns found exactly as for a model (``prepare.prepare_data``,
    the same seeded stream), with the output columns set aside first, so they are never features.
    """
    _check_columns(spec, request.label_column, members, non_members)
    # Without label_column the label is found among the other columns (by default the last one would be
    # an output column).
    label = resolve_label_column(members.drop(columns=list(spec.columns)), request.label_column, "members")
    outputs = list(spec.columns)
    member_outputs = _outputs(members, spec, "members")
    non_member_outputs = _outputs(non_members, spec, "non-members")
    rng = np.random.default_rng([request.seed, 2**31 - 1])  # target.score_target's balancing stream
    data = prepare_data(members.drop(columns=outputs), non_members.drop(columns=outputs), None, label, rng)
    side = data.is_member == 1
    outputs_of_rows = np.empty((len(data.labels), len(spec.classes)))
    outputs_of_rows[side] = member_outputs[data.source_rows[side]]
    outputs_of_rows[~side] = non_member_outputs[data.source_rows[~side]]
    classes = np.asarray(spec.classes)
    # Rows are compared over the features and the label: with no feature column every row of a label
    # would match, which says nothing about the tables.
    shared = data.shared if data.feature_columns else RowOverlap()
    where = f"the label column {shown(label)}"
    answers = TargetOutputs(
        outputs=outputs_of_rows,
        kind=spec.kind,
        label_index=_label_index(data.labels, classes, where),
        classes=classes,
    )
    return ScoredTarget.of_rows(
        data,
        members,
        non_members,
        label,
        answers,
        model_class=MODEL_CLASS,
        estimator_class=MODEL_CLASS,
        saved_version=None,
        shared=shared,
        outputs_source=SUPPLIED,
    )


def _check_columns(
    spec: PredictionsSpec, label: str | None, members: pd.DataFrame, non_members: pd.DataFrame
) -> None:
    """Every output column in both tables, and none of them the label column (when one is named)."""
    if label is not None and label in spec.columns:
        raise DataError(
            f"config.json's predictions name the label column {shown(label)} as an output column; the label is "
            "the rows' true class: name the columns holding the model's outputs (or set label_column)",
            code="label_is_output",
        )
    for frame, role in ((members, "members"), (non_members, "non-members")):
        missing = [column for column in spec.columns if column not in frame.columns]
        if missing:
            raise DataError(
                f"the {role} table has no column {shown(missing[0])}, which config.json's predictions name for the "
                f"model's outputs{nearest_name(missing[0], frame.columns)}; both tables need every output column "
                f"({len(missing)} missing)",
                code="missing_prediction_column",
            )


def _first_row(bad: np.ndarray) -> tuple[int, int]:
    """``(row, column position)`` of the first true cell of ``bad`` ``(n_rows, n_columns)``, rows first."""
    row = int(np.flatnonzero(bad.any(axis=1))[0])
    return row, int(np.flatnonzero(bad[row])[0])


def _outputs(frame: pd.DataFrame, spec: PredictionsSpec, role: str) -> np.ndarray:
    """``(n_rows, n_classes)`` float64 outputs of one table in ``target.py``'s form for the kind: probabilities
    (numbers, finite, in [0, 1], rows summing to 1 within ``PROBABILITY_TOLERANCE``, as a model's are
    checked), margins (finite numbers; a binary model's one column ``d`` as ``[-d / 2, d / 2]``), or the
    one-hot predicted labels (each one of the classes)."""
    if spec.kind == "labels":
        (column,) = spec.columns
        values = frame[column]
        if values.isna().any():
            raise DataError(
                f"the {role} table's predicted-label column {shown(column)} is empty at row "
                f"{int(np.argmax(values.isna().to_numpy()))} (0-based data row; {int(values.isna().sum()):,} row(s) "
                "in all); supplied labels need a predicted class for every row",
                code="bad_predictions",
            )
        where = f"the {role} table's predicted-label column {shown(column)}"
        positions = _label_index(values.to_numpy(), np.asarray(spec.classes), where, "predicted labels")
        one_hot = np.zeros((len(frame), len(spec.classes)))
        one_hot[np.arange(len(frame)), positions] = 1.0
        return one_hot
    for column in spec.columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            text = pd.to_numeric(values, errors="coerce").isna() & values.notna()
            where = (
                f", first at row {int(np.argmax(text.to_numpy()))} (0-based data row)" if text.any() else ""
            )
            raise DataError(
                f"the {role} table's output column {shown(column)} holds values that are not numbers{where}; "
                f"supplied {spec.kind} must be numbers",
                code="bad_predictions",
            )
    values = frame[list(spec.columns)].to_numpy(dtype=np.float64, na_value=np.nan)
    where = f"(0-based data row; {{count:,}} row(s) in all) of the {role} table"
    bad = ~np.isfinite(values)
    if bad.any():
        row, column = _first_row(bad)
        raise DataError(
            f"column {shown(spec.columns[column])} holds a missing (NaN or empty) or infinite value at row {row} "
            f"{where.format(count=int(bad.any(axis=1).sum()))}; supplied {spec.kind} must be finite numbers",
            code="bad_predictions",
        )
    if spec.kind == "margins":
        # A binary model's decision_function, as target.py spreads it: the true class's margin is then +-d.
        return np.column_stack([-values[:, 0] / 2, values[:, 0] / 2]) if len(spec.columns) == 1 else values
    bad = (values < -PROBABILITY_TOLERANCE) | (values > 1 + PROBABILITY_TOLERANCE)
    if bad.any():
        row, column = _first_row(bad)
        raise DataError(
            f"column {shown(spec.columns[column])} holds {values[row, column]:g} at row {row} "
            f"{where.format(count=int(bad.any(axis=1).sum()))}; supplied probabilities must be in [0, 1] (margins "
            'or scores are kind "margins")',
            code="bad_predictions",
        )
    sums = values.sum(axis=1)
    bad = np.abs(sums - 1) > PROBABILITY_TOLERANCE
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"the probabilities at row {row} {where.format(count=int(bad.sum()))} sum to {sums[row]:.4f} over the "
            f"{len(spec.columns)} class columns; each row's must sum to 1 (within {PROBABILITY_TOLERANCE:g}): name "
            "a column for every class of the model",
            code="bad_predictions",
        )
    return values


def _label_index(labels: np.ndarray, classes: np.ndarray, where: str, what: str = "labels") -> np.ndarray:
    """Each of ``labels`` (true labels, or predicted ones) as a position in ``classes``; labels outside them
    are refused, with the classes as ``config.json`` names them (the user's own text). ``where`` names the
    column for messages."""
    try:
        return label_positions(labels, classes)
    except DataError:
        pass
    values = pd.unique(pd.Series(labels, dtype=object))
    unknown = []
    for value in values:
        try:
            label_positions(np.asarray([value], dtype=object), classes)
        except DataError:
            unknown.append(value)
    named = ", ".join(shown(str(c), 40) for c in classes.tolist()[:10])
    seen = ", ".join(shown(str(v), 40) for v in unknown[:5])
    if len(unknown) == len(values) and what == "labels":
        raise DataError(
            f"none of the {what} in {where} ({seen}) is a class config.json's predictions name ({named}); name "
            "the classes exactly as the label column spells them",
            code="classes_mismatch",
        )
    rows = int(pd.Series(labels, dtype=object).isin(unknown).sum())
    raise DataError(
        f"{rows} rows have {what} in {where} that config.json's predictions do not name ({seen}); the classes "
        f"named are {named}. Name every class of the model, or drop those rows",
        code="unknown_label" if what == "labels" else "unknown_predicted_label",
    )
