"""Querying the target model: one vectorised pass over every row, in chunks, with its outputs checked."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, ModelError, raised_by_model

log = logging.getLogger("mia_robustness.target")

CHUNK_ROWS = 50_000
PROBABILITY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class TargetOutputs:
    """What the target said about every row.

    Attributes
    ----------
    probabilities:
        ``(n_rows, n_classes)`` ``predict_proba`` output, columns in the order of ``classes``.
    label_index:
        Position of each row's true label in ``classes``.
    classes:
        The model's ``classes_``.
    """

    probabilities: np.ndarray
    label_index: np.ndarray
    classes: np.ndarray


def model_classes(model: object) -> np.ndarray:
    """The model's ``classes_`` (a pipeline exposes its final step's)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise ModelError(
            "the model has no classes_: it is not a fitted classifier; fit it before saving",
            code="not_fitted",
        )
    classes = np.asarray(classes)
    if classes.ndim != 1 or len(classes) < 2:
        raise ModelError(
            "the model's classes_ must list at least two classes (multi-output models are not supported)",
            code="unsupported_model",
        )
    return classes


def label_positions(labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Map each true label to its column in ``predict_proba``; unknown labels are an error.

    Labels read from CSV may differ in type from the model's classes (``1`` vs ``"1"``, ``1.0`` vs ``1``),
    so a failed exact match falls back to comparing canonical text.
    """
    lookup = {value: i for i, value in enumerate(classes.tolist())}
    positions = np.fromiter((lookup.get(v, -1) for v in labels.tolist()), dtype=np.int64, count=len(labels))
    if (positions < 0).any():
        text_lookup = {_canonical(value): i for i, value in enumerate(classes.tolist())}
        positions = np.fromiter(
            (text_lookup.get(_canonical(v), -1) for v in labels.tolist()), dtype=np.int64, count=len(labels)
        )
    unknown = positions < 0
    if unknown.any():
        unseen = sorted({str(v) for v in labels[unknown].tolist()})
        raise DataError(
            f"{int(unknown.sum())} rows have labels the model never saw ({', '.join(unseen[:5])}); the model knows "
            f"{_known_classes(classes, positions[~unknown])}. Check label_column or drop those rows",
            code="unknown_label",
        )
    return positions


def _known_classes(classes: np.ndarray, found: np.ndarray) -> str:
    """The model's classes for a message: those some table row has as its label (the user's own text), the
    others only counted, since their text is the model file's (``classes_``)."""
    used = set(found.tolist())
    named = [str(c) for i, c in enumerate(classes.tolist()) if i in used][:10]
    others = len(classes) - len(used)
    if not others:
        return ", ".join(named)
    counted = f"{others} class{'' if others == 1 else 'es'} no table row has"
    return ", ".join(named) + f" and {counted}" if named else counted


def _canonical(value: object) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def query_target(model: object, features: pd.DataFrame, labels: np.ndarray) -> TargetOutputs:
    """Call ``predict_proba`` once per row (in chunks of ``CHUNK_ROWS``) and validate what comes back."""
    classes = model_classes(model)
    positions = label_positions(labels, classes)
    takes_names = getattr(model, "feature_names_in_", None) is not None
    inputs = features if takes_names else features.to_numpy()
    chunks = []
    for start in range(0, len(features), CHUNK_ROWS):
        chunk = inputs.iloc[start : start + CHUNK_ROWS] if takes_names else inputs[start : start + CHUNK_ROWS]
        chunks.append(_predict_chunk(model, chunk))
    probabilities = np.vstack(chunks).astype(np.float64, copy=False)
    _check_probabilities(probabilities, len(features), len(classes))
    return TargetOutputs(probabilities=probabilities, label_index=positions, classes=classes)


def _predict_chunk(model: object, chunk) -> np.ndarray:
    predict_proba = getattr(model, "predict_proba", None)
    if predict_proba is None:
        raise ModelError(
            "the model has no predict_proba; the audit needs a classifier that outputs probabilities",
            code="not_a_classifier",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(predict_proba(chunk))
    except MemoryError:
        raise
    # The exception's text comes from the model's own code: it may hold memory addresses (reprs of
    # functions) or anything the model chose, so only its class name reaches the user (the log keeps all).
    except (ValueError, TypeError) as exc:
        log.debug("predict_proba rejected the rows", exc_info=True)
        message = (
            "the model could not score the rows ({} in predict_proba). Check that the tables hold the same kind "
            "of values the model was trained on (numbers where it expects numbers, no missing values unless it "
            "handles them), in columns of the same names"
        )
        raise raised_by_model(DataError, exc, message, code="model_rejected_data") from None
    except Exception as exc:
        log.debug("predict_proba failed", exc_info=True)
        message = "the model's predict_proba failed ({}); check that the model scores these tables where it was trained"
        raise raised_by_model(ModelError, exc, message, code="predict_failed") from None


def _check_probabilities(probabilities: np.ndarray, n_rows: int, n_classes: int) -> None:
    if probabilities.shape != (n_rows, n_classes):
        raise ModelError(
            f"predict_proba returned shape {probabilities.shape}, expected ({n_rows}, {n_classes}) (rows x classes_)",
            code="bad_probabilities",
        )
    if not np.isfinite(probabilities).all():
        raise ModelError(
            "predict_proba returned NaN or infinite values; the model is broken for these rows",
            code="bad_probabilities",
        )
    if (probabilities < -PROBABILITY_TOLERANCE).any() or (probabilities > 1 + PROBABILITY_TOLERANCE).any():
        raise ModelError(
            "predict_proba returned values outside [0, 1]; it must return class probabilities",
            code="bad_probabilities",
        )
    sums = probabilities.sum(axis=1)
    if np.abs(sums - 1).max() > PROBABILITY_TOLERANCE:
        raise ModelError(
            f"predict_proba rows do not sum to 1 (one sums to {sums[np.argmax(np.abs(sums - 1))]:.4f}); "
            "it must return class probabilities",
            code="bad_probabilities",
        )


@dataclass(frozen=True)
class ScoreRequest:
    """What the first stage needs: how to find the label, and the seed of the balancing stream."""

    label_column: str | None
    seed: int


@dataclass(frozen=True)
class ScoredTarget:
    """The target's answers for every audited row, and what the report says about the model and tables.

    Attributes
    ----------
    probabilities:
        ``(n_rows, n_classes)`` float64, ``predict_proba`` in the order of ``classes``.
    label_index:
        ``(n_rows,)`` int64, column of each row's true label.
    classes:
        ``(n_classes,)`` the model's ``classes_``.
    is_member:
        ``(n_rows,)`` int8, members first (1) then as many non-members (0).
    source_rows:
        ``(n_rows,)`` int64, each row's number in its own table.
    members_shared, non_members_shared, shared_examples:
        Rows both tables hold (``sanity.RowOverlap``): counts per table, and up to five
        ``(member_row, non_member_row)`` pairs of 0-based data rows.
    has_recipe:
        Whether the model holds a training recipe the reference attacks and the what-if can retrain
        (``False`` for an ONNX graph: its adapter says so).
    """

    probabilities: np.ndarray
    label_index: np.ndarray
    classes: np.ndarray
    is_member: np.ndarray
    source_rows: np.ndarray
    label_column: str
    n_features: int
    members_available: int
    non_members_available: int
    balancing: str
    model_class: str
    estimator_class: str
    saved_version: str | None
    table_bytes: int
    label_classes: int
    members_shared: int = 0
    non_members_shared: int = 0
    shared_examples: tuple[tuple[int, int], ...] = ()
    has_recipe: bool = True

    @property
    def rows_per_side(self) -> int:
        return len(self.is_member) // 2


@dataclass
class LoadedTarget:
    """What the stage keeps between its steps (never sent anywhere)."""

    model: Any
    features: pd.DataFrame
    labels: np.ndarray
    scored: ScoredTarget


def score_target(
    model: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    request: ScoreRequest,
    *,
    saved_version: str | None,
) -> LoadedTarget:
    """Balance the two tables, align them to ``model`` and query it once per row.

    Parameters
    ----------
    model:
        A fitted classifier with ``predict_proba``.
    members, non_members:
        The tables as read, each with the label column.
    request:
        The label column and the seed of the balancing stream.
    saved_version:
        The scikit-learn version the model was saved with (for the report), when known.
    """
    from .prepare import describe_non_finite, prepare_data, resolve_label_column

    rng = np.random.default_rng([request.seed, 2**31 - 1])  # a stream of its own for balancing
    data = prepare_data(members, non_members, model, request.label_column, rng)
    try:
        outputs = query_target(model, data.features, data.labels)
    except DataError as error:
        # Many models take no missing or infinite values: say where the first one is, not just that the
        # model refused (its own message is not shown).
        where = describe_non_finite(members, non_members, data.feature_columns)
        if error.code != "model_rejected_data" or where is None:
            raise
        raise DataError(
            f"the model could not score the rows: {where}. This model does not accept missing or infinite "
            "values; fill or drop them, or put an imputer in the Pipeline before the classifier",
            code="non_finite_values",
        ) from None
    label = resolve_label_column(members, request.label_column, "members")
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    scored = ScoredTarget(
        probabilities=outputs.probabilities,
        label_index=outputs.label_index,
        classes=outputs.classes,
        is_member=data.is_member,
        source_rows=data.source_rows,
        label_column=data.label_column,
        n_features=int(data.features.shape[1]),
        members_available=data.members_available,
        non_members_available=data.non_members_available,
        balancing=data.balancing,
        model_class=type(model).__name__,
        estimator_class=type(final).__name__,
        saved_version=saved_version,
        table_bytes=int(members.memory_usage(deep=True).sum() + non_members.memory_usage(deep=True).sum()),
        label_classes=int(members[label].nunique()),
        members_shared=data.shared.members_shared,
        non_members_shared=data.shared.non_members_shared,
        shared_examples=tuple((member, other) for member, other in data.shared.examples),
        has_recipe=getattr(model, "has_recipe", True) is not False,
    )
    return LoadedTarget(model=model, features=data.features, labels=data.labels, scored=scored)


def true_class_answers(
    model: object, features, label_index: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(n,)`` probability of each row's true label (0 for a class the model never saw in its training rows),
    and ``(n,)`` whether the model's top class is that label; ``classes`` is the audit's class order."""
    probabilities = np.asarray(model.predict_proba(features), dtype=np.float64)
    position = {value: i for i, value in enumerate(np.asarray(model.classes_).tolist())}
    columns = np.array([position.get(value, -1) for value in classes.tolist()])
    mapped = columns[label_index]
    confidence = probabilities[np.arange(len(label_index)), np.maximum(mapped, 0)]
    correct = (mapped >= 0) & (np.argmax(probabilities, axis=1) == mapped)
    return np.where(mapped >= 0, confidence, 0.0), correct
