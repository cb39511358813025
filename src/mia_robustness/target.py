"""Querying the target model: one vectorised pass over every row, in chunks, with its outputs checked.

A target answers in one of three kinds (:data:`OUTPUT_KINDS`), found from the methods it has (duck-typed, so
scikit-learn estimators, pipelines and the ONNX / booster adapters are asked alike):

* ``probabilities``: ``predict_proba``, ``(n, n_classes)`` rows that sum to 1;
* ``margins``: ``decision_function`` only (``SVC(probability=False)``, ``LinearSVC``, ``RidgeClassifier``,
  ``SGDClassifier(loss="hinge")``, pipelines ending in one), ``(n, n_classes)`` finite scores. A binary
  model's ``(n,)`` score ``d`` (positive for ``classes_[1]``) becomes the two columns ``[-d / 2, d / 2]``:
  the true class's margin over the other is then ``+-d``, and their softmax is the logistic ``sigmoid(d)``;
* ``labels``: ``predict`` only, kept as the ``(n, n_classes)`` one-hot rows of the predicted labels, each
  of which must be one of ``classes_``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .boosting import NamedClasses
from .errors import DataError, MiaError, ModelError, raised_by_model

if TYPE_CHECKING:
    from .prepare import PreparedData

log = logging.getLogger("mia_robustness.target")

CHUNK_ROWS = 50_000
PROBABILITY_TOLERANCE = 1e-3


#: The kinds of answer a target gives, in the order they are preferred when it has several methods.
OUTPUT_KINDS = ("probabilities", "margins", "labels")
_METHODS = {"probabilities": "predict_proba", "margins": "decision_function", "labels": "predict"}


@dataclass(frozen=True)
class TargetOutputs:
    """What the target said about every row.

    Attributes
    ----------
    outputs:
        ``(n_rows, n_classes)`` float64, columns in the order of ``classes``: probabilities, margins, or the
        one-hot predicted labels, as ``kind`` says (module docstring).
    kind:
        One of :data:`OUTPUT_KINDS`.
    label_index:
        Position of each row's true label in ``classes``.
    classes:
        The model's ``classes_``.
    """

    outputs: np.ndarray
    kind: str
    label_index: np.ndarray
    classes: np.ndarray


def output_kind(model: object) -> str:
    """The richest answer ``model`` gives: ``probabilities``, else ``margins``, else ``labels``."""
    for kind in OUTPUT_KINDS:
        if getattr(model, _METHODS[kind], None) is not None:
            return kind
    raise ModelError(
        "the model has none of predict_proba, decision_function or predict; the audit needs a fitted classifier",
        code="not_a_classifier",
    )


def model_classes(model: object) -> np.ndarray:
    """The model's ``classes_`` (a pipeline exposes its final step's)."""
    classes = getattr(model, "classes_", None)
    if classes is None:
        raise ModelError(
            "the model has no classes_: it is not a fitted classifier; fit it before saving",
            code="not_fitted",
        )
    try:
        classes = np.asarray(classes)
    except (TypeError, ValueError):  # ragged or odd values (a hostile file's): no traceback, no echo of them
        classes = None
    if classes is None or classes.ndim != 1 or len(classes) < 2:
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
        text_lookup = {canonical_label(value): i for i, value in enumerate(classes.tolist())}
        positions = np.fromiter(
            (text_lookup.get(canonical_label(v), -1) for v in labels.tolist()),
            dtype=np.int64,
            count=len(labels),
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


def canonical_label(value: object) -> str:
    """A label as text, so ``1``, ``1.0`` and ``"1"`` compare equal (CSV labels and a model's ``classes_``
    may differ in type)."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def query_target(model: object, features: pd.DataFrame, labels: np.ndarray) -> TargetOutputs:
    """Ask the model once per row (in chunks of ``CHUNK_ROWS``), in its richest kind, and validate the answers."""
    classes = model_classes(model)
    positions = label_positions(labels, classes)
    kind = output_kind(model)
    outputs = query_outputs(model, features, kind, classes)
    return TargetOutputs(outputs=outputs, kind=kind, label_index=positions, classes=classes)


def query_outputs(model: object, features: pd.DataFrame, kind: str, classes: np.ndarray) -> np.ndarray:
    """``(n_rows, n_classes)`` answers of ``kind`` for ``features``, checked (see the module docstring)."""
    takes_names = getattr(model, "feature_names_in_", None) is not None
    inputs = features if takes_names else features.to_numpy()
    chunks = []
    for start in range(0, len(features), CHUNK_ROWS):
        chunk = inputs.iloc[start : start + CHUNK_ROWS] if takes_names else inputs[start : start + CHUNK_ROWS]
        chunks.append(_answer_chunk(model, chunk, kind))
    answers = np.concatenate(chunks) if chunks else np.empty((0, len(classes)))
    if kind == "labels":
        return _one_hot_labels(answers, len(features), classes)
    answers = answers.astype(np.float64, copy=False)
    if kind == "margins":
        return _check_margins(answers, len(features), len(classes))
    _check_probabilities(answers, len(features), len(classes))
    return answers


def _answer_chunk(model: object, chunk, kind: str) -> np.ndarray:
    method = _METHODS[kind]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(getattr(model, method)(chunk))
    except (
        MemoryError,
        MiaError,
    ):  # our own adapters' (ONNX, supplied outputs) errors already say what to fix
        raise
    # The exception's text comes from the model's own code: it may hold memory addresses (reprs of
    # functions) or anything the model chose, so only its class name reaches the user (the log keeps all).
    except (ValueError, TypeError) as exc:
        log.debug("%s rejected the rows", method, exc_info=True)
        message = (
            f"the model could not score the rows ({{}} in {method}). Check that the tables hold the same kind "
            "of values the model was trained on (numbers where it expects numbers, no missing values unless it "
            "handles them), in columns of the same names"
        )
        raise raised_by_model(DataError, exc, message, code="model_rejected_data") from None
    except Exception as exc:
        log.debug("%s failed", method, exc_info=True)
        message = f"the model's {method} failed ({{}}); check that the model scores these tables where it was trained"
        raise raised_by_model(ModelError, exc, message, code="predict_failed") from None


def _check_margins(margins: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """The ``(n_rows, n_classes)`` margins, a binary model's ``(n_rows,)`` score spread over two columns."""
    if n_classes == 2 and margins.shape == (n_rows,):
        half = margins / 2.0
        margins = np.column_stack([-half, half])
    if margins.shape != (n_rows, n_classes):
        raise ModelError(
            f"decision_function returned shape {margins.shape}, expected ({n_rows}, {n_classes}) (rows x classes_)"
            + ("" if n_classes == 2 else "; a one-vs-one SVC needs decision_function_shape='ovr'"),
            code="bad_margins",
        )
    if not np.isfinite(margins).all():
        raise ModelError(
            "decision_function returned NaN or infinite values; the model is broken for these rows",
            code="bad_margins",
        )
    return margins


def _one_hot_labels(predicted: np.ndarray, n_rows: int, classes: np.ndarray) -> np.ndarray:
    """``(n_rows, n_classes)`` one-hot rows of the predicted labels; a label outside ``classes`` is an error."""
    if predicted.shape != (n_rows,):
        raise ModelError(
            f"predict returned shape {predicted.shape}, expected ({n_rows},) (one label per row)",
            code="bad_labels",
        )
    lookup = {value: i for i, value in enumerate(classes.tolist())}
    try:
        positions = np.fromiter((lookup.get(v, -1) for v in predicted.tolist()), dtype=np.int64, count=n_rows)
    except TypeError:  # an unhashable "label"
        positions = np.full(n_rows, -1)
    if (positions < 0).any():
        raise ModelError(
            f"predict returned labels that are not among the model's classes_ ({int((positions < 0).sum())} "
            "rows); the model is broken or its classes_ do not describe it",
            code="bad_labels",
        )
    one_hot = np.zeros((n_rows, len(classes)))
    one_hot[np.arange(n_rows), positions] = 1.0
    return one_hot


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
    """What the first stage needs: how to find the label, the audit's seed (balancing and the boundary
    attack's perturbations), how many perturbed copies of each row the boundary attack queries (0: it
    does not run), and the rows per side above which those queries are not made for a target that answers
    probabilities or margins (``None``: no limit).

    The limit is applied where the model runs, because only that side knows what the target answers
    (:meth:`boundary_queries_for`); the parent checks the answer against the same rule."""

    label_column: str | None
    seed: int
    boundary_queries: int = 0
    boundary_max_rows: int | None = None
    # The boundary attack's query passes made at once (the audit's workers); the answer does not depend on it.
    threads: int = 1

    def boundary_queries_for(self, output_kind: str, rows_per_side: int) -> int:
        """The perturbed queries per row to make for a target answering ``output_kind`` on ``rows_per_side``
        rows a side: 0 when the boundary attack was not asked for, or when the target answers probabilities
        or margins (boundary is then only the informational labels-only row, which ``gap`` also gives, at no
        extra query) and has more rows than ``boundary_max_rows``. For a label-only target boundary is the
        headline attack: its queries are always made."""
        over = self.boundary_max_rows is not None and rows_per_side > self.boundary_max_rows
        return 0 if over and output_kind != "labels" else self.boundary_queries


@dataclass(frozen=True)
class ScoredTarget:
    """The target's answers for every audited row, and what the report says about the model and tables.

    Attributes
    ----------
    outputs:
        ``(n_rows, n_classes)`` float64 in the order of ``classes``: probabilities, margins, or one-hot
        predicted labels, as ``output_kind`` says (module docstring).
    output_kind:
        One of :data:`OUTPUT_KINDS`.
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
    robustness:
        ``(n_rows,)`` float64 in [0, 1], the boundary attack's per-row label robustness (``label_robustness``),
        or ``None`` when it was not asked for.
    outputs_source:
        ``measured`` (the audit queried the model) or ``supplied`` (a predictions bundle's columns:
        ``supplied.py``). A sandbox child's answer is always ``measured``: the parent does not read it.
    has_recipe:
        Whether the model holds a training recipe the reference attacks and the what-if can retrain
        (``False`` for an ONNX graph: its adapter says so).
    """

    outputs: np.ndarray
    output_kind: str
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
    robustness: np.ndarray | None = None
    outputs_source: str = "measured"
    # Whether the model carries a recipe the reference attacks can retrain (recipe.has_recipe; set by the
    # model stage): an ONNX graph or another adapter does not, and lira / rmia then need a reference_recipe.
    has_recipe: bool = True

    @property
    def rows_per_side(self) -> int:
        return len(self.is_member) // 2

    @classmethod
    def of_rows(
        cls,
        data: PreparedData,
        members: pd.DataFrame,
        non_members: pd.DataFrame,
        label: str,
        answers: TargetOutputs,
        **about: Any,
    ) -> ScoredTarget:
        """The scored rows of ``data`` (``prepare.prepare_data``'s balanced rows, members first), from the
        tables as read (``label`` their label column) and the answers for those rows.

        ``about`` gives what depends on where the answers came from: ``model_class``, ``estimator_class``
        and ``saved_version``, and where they differ from the defaults, ``robustness``, ``outputs_source``
        and ``shared`` (a ``sanity.RowOverlap``; ``data.shared`` when not given). The model stage's answer
        from a sandbox child is not built here: the parent checks it field by field
        (``sandbox.stage.scored_from_message``)."""
        shared = about.pop("shared", data.shared)
        return cls(
            outputs=answers.outputs,
            output_kind=answers.kind,
            label_index=answers.label_index,
            classes=answers.classes,
            is_member=data.is_member,
            source_rows=data.source_rows,
            label_column=data.label_column,
            n_features=len(data.feature_columns),
            members_available=data.members_available,
            non_members_available=data.non_members_available,
            balancing=data.balancing,
            table_bytes=int(
                members.memory_usage(deep=True).sum() + non_members.memory_usage(deep=True).sum()
            ),
            label_classes=int(members[label].nunique()),
            members_shared=shared.members_shared,
            non_members_shared=shared.non_members_shared,
            shared_examples=tuple((member, other) for member, other in shared.examples),
            **about,
        )


@dataclass
class LoadedTarget:
    """What the stage keeps between its steps (never sent anywhere)."""

    model: Any
    features: pd.DataFrame
    labels: np.ndarray
    scored: ScoredTarget
    # The reference stage's refits on every audited row, by :func:`~mia_robustness.recipe.refit_key`:
    # ``(confidence, correct)``, each ``(n,)``; the what-if's baseline reuses them instead of refitting.
    refits: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


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
        A fitted classifier with ``predict_proba``, ``decision_function`` or ``predict``.
    members, non_members:
        The tables as read, each with the label column.
    request:
        The label column, the audit's seed, and the boundary attack's queries per row and row limit.
    saved_version:
        The scikit-learn version the model was saved with (for the report), when known.
    """
    from .label_robustness import label_robustness
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
    robustness = None
    queries = request.boundary_queries_for(outputs.kind, len(data.is_member) // 2)
    if queries:
        robustness = label_robustness(
            lambda rows: query_outputs(model, rows, outputs.kind, outputs.classes).argmax(axis=1),
            data.features,
            outputs.label_index,
            outputs.outputs.argmax(axis=1),
            queries=queries,
            seed=request.seed,
            threads=request.threads,
        )
    label = resolve_label_column(members, request.label_column, "members")
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    if isinstance(final, NamedClasses):  # a native booster given class names: the booster is the estimator
        final = final.estimator
    scored = ScoredTarget.of_rows(
        data,
        members,
        non_members,
        label,
        outputs,
        model_class=type(model).__name__,
        estimator_class=type(final).__name__,
        saved_version=saved_version,
        robustness=robustness,
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
