"""Querying the target model: one vectorised pass over every row, in chunks, with its outputs checked."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError, ModelError

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
            f"{', '.join(map(str, classes.tolist()[:10]))}. Check label_column or drop those rows",
            code="unknown_label",
        )
    return positions


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
        raise DataError(
            f"the model could not score the rows ({type(exc).__name__} in predict_proba). Check that the tables hold "
            "the same kind of values the model was trained on (numbers where it expects numbers, no missing values "
            "unless it handles them), in columns of the same names",
            code="model_rejected_data",
        ) from None
    except Exception as exc:
        log.debug("predict_proba failed", exc_info=True)
        raise ModelError(
            f"the model's predict_proba failed ({type(exc).__name__}); check that the model scores these tables "
            "where it was trained",
            code="predict_failed",
        ) from None


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
