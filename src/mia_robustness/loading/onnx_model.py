"""An onnxruntime session as the audit sees an estimator: ``classes_``, and ``predict_proba``,
``decision_function`` or only ``predict``, by what the graph outputs.

Inputs, by name and element type:

* one 2-D input takes every feature column in the table's order (``float``, ``double``, ``int64``,
  ``int32`` or ``bool`` elements), checked against its declared width (``n_features_in_``);
* several inputs take one table column each, by name (skl2onnx's per-column inputs of a
  ``ColumnTransformer`` pipeline, string tensors for categorical columns): ``feature_names_in_`` is their
  names, so the audit aligns the tables to them and names a missing column only when a table has it.

Outputs: a class-score output (a ``[N, K]`` tensor, or skl2onnx's ZipMap, a sequence of one map per row)
and/or a label output (``[N]`` or ``[N, 1]``). Scores are probabilities when a few table rows score in
``[0, 1]`` and sum to 1 (:func:`scores_are_probabilities`), else margins (``decision_function``); a graph
with only a label output is label-only (``predict``). Class order: the graph's own (ZipMap keys, the
classifier node's ``classlabels_*``), else ``config.json``'s ``classes``, else ``0..K-1``.

ONNX holds no training recipe: the adapters say so (``has_recipe``) and refuse to be cloned.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, MiaError, ModelError, raised_by_model
from .messages import refuse_other_classes

log = logging.getLogger("mia_robustness.loading")

# Element types a table column can feed, as onnxruntime names them.
_NUMERIC = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
_STRING = "tensor(string)"
_LABEL_TYPES = ("tensor(int64)", "tensor(int32)", "tensor(string)")
_SCORE_TYPES = ("tensor(float)", "tensor(double)")
_MAP_OUTPUT = re.compile(r"seq\(map\((string|int64),tensor\((float|double)\)\)\)")
PROBABILITY_TOLERANCE = 1e-3
#: Rows of a table scored to tell probabilities from margins.
SAMPLE_ROWS = 64
# What onnxruntime's allocator says (in a RuntimeException, not a MemoryError) when a buffer is refused.
_ALLOCATION_FAILED = "Failed to allocate memory"


def _width(shape: list[Any]) -> int | None:
    """The declared size of a 2-D shape's second axis (``None`` when symbolic)."""
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None


@dataclass(frozen=True)
class OnnxInput:
    """One graph input: its name (file text: never shown), element type and shape."""

    name: str
    type: str
    shape: tuple[Any, ...]

    @classmethod
    def of(cls, arg: Any) -> OnnxInput:
        shape = arg.shape if isinstance(arg.shape, list) else []
        return cls(str(arg.name), str(arg.type), tuple(shape))

    @property
    def feedable(self) -> bool:
        return self.type in _NUMERIC or self.type == _STRING

    @property
    def one_column(self) -> bool:
        return len(self.shape) == 1 or (len(self.shape) == 2 and self.shape[1] in (1, None))


@dataclass(frozen=True)
class OnnxOutputs:
    """Which graph outputs hold the class scores and the labels, and the classes the graph names.

    Attributes
    ----------
    scores, label:
        Output names, or ``None``.
    scores_as_maps:
        The scores are ZipMap's sequence of ``{class: score}`` maps.
    width:
        The declared number of score columns (``None``: symbolic or maps).
    classes:
        Class labels in score order from the graph, or ``None``.
    """

    scores: str | None
    label: str | None
    scores_as_maps: bool
    width: int | None
    classes: list[Any] | None

    @classmethod
    def of(cls, args: list[Any], classes: list[Any] | None) -> OnnxOutputs:
        scores = label = None
        maps = False
        width = None
        for position, arg in enumerate(args, 1):
            kind, shape = str(arg.type), arg.shape if isinstance(arg.shape, list) else []
            if _MAP_OUTPUT.fullmatch(kind) and scores is None:
                scores, maps = str(arg.name), True
            elif kind in _SCORE_TYPES and len(shape) == 2 and _width(shape) != 1 and scores is None:
                scores, width = str(arg.name), _width(shape)
            elif kind in _LABEL_TYPES and (len(shape) == 1 or _width(shape) == 1) and label is None:
                label = str(arg.name)
            else:
                raise ModelError(
                    f"output {position} of the ONNX graph's {len(args)} is neither the class scores (a [N, K] float "
                    "tensor with K >= 2, or ZipMap's maps) nor the predicted labels (an [N] integer or string "
                    "tensor), or repeats one; export a classifier with one of each (a single [N, 1] score is "
                    "ambiguous: export both classes' scores)",
                    code="unsupported_model",
                )
        return cls(scores, label, maps, width, classes)


def build_adapter(
    session: Any,
    inputs: tuple[OnnxInput, ...],
    outputs: OnnxOutputs,
    *,
    file_name: str,
    config_classes: list[Any] | None,
) -> OnnxClassifier:
    """The adapter for ``session``: probabilities (until :func:`settle_scores` has seen table rows) or labels
    only (see the module docstring)."""
    _check_inputs(inputs)
    classes = _classes(outputs, config_classes, file_name)
    if outputs.scores is None:
        return OnnxLabelClassifier(session, inputs, outputs, classes)
    return OnnxProbabilityClassifier(session, inputs, outputs, classes)


def settle_scores(model: Any, sample: pd.DataFrame) -> Any:
    """``model``, or for an ONNX graph whose scores on ``sample``'s first rows are not probabilities
    (:func:`scores_are_probabilities`), its margin adapter; any other model is returned as it is."""
    if type(model) is OnnxProbabilityClassifier and not scores_are_probabilities(model, sample):
        return OnnxMarginClassifier(model._session, model._inputs, model._outputs, model.classes_)
    return model


def _check_inputs(inputs: tuple[OnnxInput, ...]) -> None:
    if not inputs:
        raise ModelError(
            "the ONNX graph has no inputs; export it with the model's features as input",
            code="unsupported_model",
        )
    for position, item in enumerate(inputs, 1):
        if not item.feedable or not 1 <= len(item.shape) <= 2 or (len(inputs) > 1 and not item.one_column):
            what = (
                f"a {item.type.replace('tensor(', '').rstrip(')')} tensor"
                if item.type.startswith("tensor(") and len(item.type) < 40
                else "not a tensor"
            )
            need = (
                "the feature columns as one [N, features] tensor"
                if len(inputs) == 1
                else "one table column each ([N, 1] or [N] tensors, named after the columns)"
            )
            raise ModelError(
                f"input {position} of the ONNX graph's {len(inputs)} ({what}, {len(item.shape)} axes) cannot be fed "
                f"from the tables: the audit feeds {need}, as float, double, int64, int32, bool or (one column "
                "each) string tensors",
                code="unsupported_model",
            )


def _classes(outputs: OnnxOutputs, config_classes: list[Any] | None, file_name: str) -> np.ndarray:
    """The class order: the graph's, else ``config.json``'s ``classes``, else ``0..K-1``."""
    if outputs.classes is not None:
        classes = outputs.classes
        refuse_other_classes(file_name, classes, config_classes)
    elif config_classes is not None:
        classes = list(config_classes)
    elif outputs.width is not None:
        classes = list(range(outputs.width))
    else:
        raise ModelError(
            f"{file_name} does not say which class each output is (no classifier node names them, and the "
            "number of classes is not declared); list the classes in output order in config.json: "
            '"classes": [...]',
            code="unsupported_model",
        )
    if outputs.width is not None and len(classes) != outputs.width:
        raise ModelError(
            f"{file_name} scores {outputs.width} classes but {len(classes)} are named for it (config.json's "
            "classes or the graph's own); give one class per score column, in order",
            code="unsupported_model",
        )
    if len(classes) < 2 or len(set(map(str, classes))) != len(classes):
        raise ModelError(
            f"{file_name} needs at least two distinct classes, in output order; list them in config.json's classes",
            code="unsupported_model",
        )
    return np.asarray(classes)


class OnnxClassifier:
    """The session behind the adapters; one per graph, and never cloned (ONNX holds no recipe).

    Attributes
    ----------
    classes_:
        ``(K,)`` class labels in score order.
    feature_names_in_:
        ``(n_inputs,)`` input names when the graph takes one column per input (absent otherwise).
    n_features_in_:
        The declared width of a single 2-D input (absent when symbolic or per column).
    """

    has_recipe = False
    output_kind = "labels"

    def __init__(
        self, session: Any, inputs: tuple[OnnxInput, ...], outputs: OnnxOutputs, classes: np.ndarray
    ):
        self._session = session
        self._inputs = inputs
        self._outputs = outputs
        self.classes_ = classes
        if len(inputs) > 1:
            self.feature_names_in_ = np.asarray([item.name for item in inputs], dtype=object)
        elif _width(list(inputs[0].shape)) is not None:
            self.n_features_in_ = _width(list(inputs[0].shape))

    def __sklearn_clone__(self) -> Any:
        raise ModelError(
            "an ONNX model holds no training recipe, so it cannot be retrained for the reference attacks (lira, "
            "rmia) or the what-if; name one in config.json's reference_recipe, or drop those attacks",
            code="no_recipe",
        )

    def __getstate__(self) -> Any:
        raise TypeError("an ONNX session is not pickled")

    # -- feeding -----------------------------------------------------------------------------------------

    def _feed(self, features: Any) -> dict[str, np.ndarray]:
        """The graph's inputs from ``(n, n_features)`` rows: a DataFrame by name, or an array in order."""
        if len(self._inputs) == 1:
            item = self._inputs[0]
            values = features.to_numpy() if isinstance(features, pd.DataFrame) else np.asarray(features)
            if values.ndim != 2:
                raise DataError("the ONNX model takes a table of rows", code="feature_mismatch")
            width = _width(list(item.shape))
            if width is not None and values.shape[1] != width:
                raise DataError(
                    f"the ONNX model's input takes {width} feature columns, and the tables have {values.shape[1]} "
                    "besides the label column; check label_column and drop extra columns",
                    code="feature_mismatch",
                )
            return {item.name: _as_input(values, item, None)}
        if not isinstance(features, pd.DataFrame):
            raise DataError(
                "the ONNX model takes its columns by name: give it a table", code="feature_mismatch"
            )
        return {
            item.name: _as_input(features[item.name].to_numpy(), item, str(item.name))
            for item in self._inputs
        }

    def _run(self, features: Any) -> dict[str, Any]:
        wanted = [name for name in (self._outputs.scores, self._outputs.label) if name is not None]
        feed = self._feed(features)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = self._session.run(wanted, feed)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's text quotes the graph's names: class only
            log.debug("onnxruntime could not score the rows", exc_info=True)
            if _ALLOCATION_FAILED in str(exc):
                # a graph that asks for more than the sandbox's memory (a ConstantOfShape / Expand of
                # billions of elements): onnxruntime says so in its own words, the audit as a memory limit
                raise MemoryError from None
            message = (
                "the ONNX model could not score the rows ({}). Check that the tables hold the columns and kinds "
                "of values it was converted for"
            )
            raise raised_by_model(DataError, exc, message, code="model_rejected_data") from None
        return dict(zip(wanted, values, strict=True))

    # -- outputs -----------------------------------------------------------------------------------------

    def _scores(self, features: Any) -> np.ndarray:
        raw = self._run(features)[self._outputs.scores]
        if self._outputs.scores_as_maps:
            return _from_maps(raw, self.classes_)
        scores = np.asarray(raw, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] != len(self.classes_):
            raise ModelError(
                f"the ONNX model's scores have shape {scores.shape}, not (rows, {len(self.classes_)} classes)",
                code="bad_probabilities",
            )
        return scores

    def predict(self, features: Any) -> np.ndarray:
        """``(n,)`` predicted class labels (the label output, else the top score)."""
        if self._outputs.label is None:
            return self.classes_[np.argmax(self._scores(features), axis=1)]
        labels = np.asarray(self._run(features)[self._outputs.label]).reshape(-1)
        if self._outputs.classes is None and labels.dtype.kind in "iu":
            # A graph that names no classes (an argmax exported from PyTorch) answers with class positions:
            # position i is the i-th of the classes option's labels (or i itself without it).
            if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes_)):
                raise ModelError(
                    f"the ONNX model predicted class positions outside 0..{len(self.classes_) - 1}; list every "
                    "class in output order in config.json's classes",
                    code="bad_probabilities",
                )
            return self.classes_[labels]
        lookup = {str(c): c for c in self.classes_.tolist()}
        texts = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in labels.tolist()]
        unknown = sum(text not in lookup for text in texts)
        if unknown:
            raise ModelError(
                f"the ONNX model predicted {unknown} labels that are not among its {len(self.classes_)} classes; "
                "check config.json's classes",
                code="bad_probabilities",
            )
        return np.asarray([lookup[text] for text in texts], dtype=self.classes_.dtype)


class OnnxProbabilityClassifier(OnnxClassifier):
    """A graph whose scores are class probabilities."""

    output_kind = "probabilities"

    def predict_proba(self, features: Any) -> np.ndarray:
        """``(n, K)`` class probabilities, columns in the order of ``classes_``."""
        return self._scores(features)


class OnnxMarginClassifier(OnnxClassifier):
    """A graph whose scores are margins or logits, not probabilities."""

    output_kind = "margins"

    def decision_function(self, features: Any) -> np.ndarray:
        """Margins as scikit-learn gives them: ``(n,)`` for two classes (the second's minus the first's),
        else ``(n, K)`` in the order of ``classes_``."""
        scores = self._scores(features)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores


class OnnxLabelClassifier(OnnxClassifier):
    """A graph with a label output only."""


def scores_are_probabilities(model: OnnxProbabilityClassifier, sample: pd.DataFrame) -> bool:
    """Whether the graph's scores of the first :data:`SAMPLE_ROWS` rows of ``sample`` (a table with its label
    column) are probabilities: finite, in ``[0, 1]``, rows summing to 1. A sample the graph cannot be fed
    from says yes: scoring the audit's rows then says what is wrong with them."""
    rows = sample.head(SAMPLE_ROWS)
    try:
        if hasattr(model, "feature_names_in_"):
            features: Any = rows
        else:
            from ..prepare import resolve_label_column

            features = rows.drop(columns=[resolve_label_column(rows, None, "members")])
        scores = model.predict_proba(features)
    except (MiaError, KeyError):
        return True
    return bool(
        np.isfinite(scores).all()
        and (scores >= -PROBABILITY_TOLERANCE).all()
        and (scores <= 1 + PROBABILITY_TOLERANCE).all()
        and (np.abs(scores.sum(axis=1) - 1) <= PROBABILITY_TOLERANCE).all()
    )


def _as_input(values: np.ndarray, item: OnnxInput, column: str | None) -> np.ndarray:
    """``values`` (a column, or the whole table) in ``item``'s element type and shape."""
    where = f"column {column!r}" if column is not None else "the feature columns"
    if item.type == _STRING:
        if pd.isna(values).any():
            raise DataError(
                f"{where} has missing values, and the ONNX model takes it as text; fill or drop them",
                code="model_rejected_data",
            )
        converted = np.asarray([str(v) for v in values.reshape(-1).tolist()], dtype=object)
    else:
        dtype = _NUMERIC[item.type]
        try:
            numbers = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                f"{where} hold text, and the ONNX model takes numbers there; encode it inside the model "
                "(a OneHotEncoder in the converted pipeline) or give the tables numeric columns",
                code="model_rejected_data",
            ) from None
        if dtype not in (np.float32, np.float64) and (
            not np.isfinite(numbers).all() or (numbers != np.round(numbers)).any()
        ):
            raise DataError(
                f"{where} hold fractions or missing values, and the ONNX model takes whole numbers there",
                code="model_rejected_data",
            )
        converted = numbers.astype(dtype)
    if column is not None:
        return converted.reshape(-1) if len(item.shape) == 1 else converted.reshape(-1, 1)
    return converted


def _from_maps(raw: Any, classes: np.ndarray) -> np.ndarray:
    """ZipMap's ``[{class: score}, ...]`` as ``(n, K)`` in the order of ``classes``."""
    keys = classes.tolist()
    try:
        return np.asarray([[row[key] for key in keys] for row in raw], dtype=np.float64).reshape(
            -1, len(keys)
        )
    except (KeyError, TypeError, ValueError):
        raise ModelError(
            "the ONNX model's score maps do not hold one score per class it names; convert it again with skl2onnx",
            code="bad_probabilities",
        ) from None
