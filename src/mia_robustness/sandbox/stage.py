"""The model stage as the sandbox child runs it, and the messages that carry its answers.

The child loads the model file and the two tables (:func:`load_files`), then runs the engine's own steps on
them (``target.score_target``, ``reference.reference_answers``). What leaves it are plain arrays and a few
short strings (:class:`~mia_robustness.target.ScoredTarget`, the reference models' confidences);
the model object itself never leaves.

The ``*_from_message`` functions are the parent's side: they check a (possibly hostile) child's answer
against what the request allows before the audit uses any of it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..model_check import CheckRequest, ModelCheck
from ..remediation.family import CLASS_KNOBS, RULES, Config, Plan, variant_name
from ..remediation.fits import SKIP_CODES, WhatIfFits, WhatIfRequest
from ..target import OUTPUT_KINDS, ScoredTarget, ScoreRequest
from .protocol import ProtocolError, clean_text, expect

# Stages the child reports progress for; any other name from it is a protocol error.
CHILD_STAGES = ("loading", "target_scoring", "reference_models", "what_if")
MAX_CLASS_TEXT = 200


@dataclass(frozen=True)
class ModelFiles:
    """The bundle's three inputs (paths as the process that reads them sees them)."""

    model: Path
    members: Path
    non_members: Path
    classes: tuple | None = None  # config.json's class names for a native booster file


def load_files(files: ModelFiles) -> tuple[Any, pd.DataFrame, pd.DataFrame, str | None]:
    """The model (through the hardened loader), the two tables, and the version the model was saved with.

    An ONNX graph's class scores are told apart (probabilities or margins) on the members' first rows."""
    from ..loading import load_model, settle_scores
    from ..tables import read_table

    loaded = load_model(files.model, classes=files.classes)
    members = read_table(files.members, "members")
    non_members = read_table(files.non_members, "non-members")
    return settle_scores(loaded.estimator, members), members, non_members, loaded.saved_version


# ---- the wire: child side ------------------------------------------------------------------------------


def scored_to_message(scored: ScoredTarget) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    classes = scored.classes.tolist()
    if not all(isinstance(c, (str, int, float, bool)) for c in classes):
        from ..errors import ModelError

        raise ModelError(
            "the model's classes_ are not plain labels (text or numbers); refit it on plain label values",
            code="unsupported_model",
        )
    header = {
        "kind": "scored",
        "classes": classes,
        **{
            field.name: getattr(scored, field.name)
            for field in dataclasses.fields(ScoredTarget)
            if field.name not in _SCORED_ARRAYS and field.name not in ("classes", "robustness")
        },
    }
    arrays = {name: getattr(scored, name) for name in _SCORED_ARRAYS}
    if scored.robustness is not None:
        arrays["robustness"] = scored.robustness
    return header, arrays


def check_to_message(checked: ModelCheck) -> dict[str, Any]:
    return {"kind": "checked", **dataclasses.asdict(checked)}


def answers_to_message(answers: list[np.ndarray]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The reference fits' answers: per fit set, ``(n_models, pool rows)`` true-class confidences."""
    header = {"kind": "answers", "sets": len(answers)}
    return header, {f"answers_{i}": np.asarray(a, dtype=np.float64) for i, a in enumerate(answers)}


def what_if_to_message(fits: WhatIfFits) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    plan = fits.plan
    header = {
        "kind": "what_if",
        "estimator_class": plan.estimator_class,
        "family": plan.family,
        "configs": [[c.kind, c.parameter, c.value] for c in plan.configs],
        "rules": [[rule, value] for rule, value in plan.rules],
        "skipped": fits.skipped,
    }
    # Two dimensions on the wire (the protocol's most): one row per fitted model, configs in order.
    configs, models, rows = fits.confidence.shape
    flat = (configs * models, rows)
    arrays = {
        "confidence": fits.confidence.reshape(flat),
        "correct": fits.correct.astype(np.int8).reshape(flat),
    }
    return header, arrays


# ---- the wire: parent side (untrusted input) ------------------------------------------------------------

_SCORED_ARRAYS = ("outputs", "label_index", "is_member", "source_rows")
_SCORED_DTYPES = {
    "outputs": np.float64,
    "label_index": np.int64,
    "is_member": np.int8,
    "source_rows": np.int64,
}


def scored_from_message(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], request: ScoreRequest | None = None
) -> ScoredTarget:
    """Check a child's ``scored`` answer to ``request`` and build the :class:`ScoredTarget` the audit goes on
    with: a robustness array comes back exactly when the request asked for boundary queries and allows them
    for the kind and rows answered (:meth:`ScoreRequest.boundary_queries_for`); ``None``: none asked for."""
    classes = expect(header, "classes", list)
    if not 2 <= len(classes) <= 100_000 or not all(isinstance(c, (str, int, float, bool)) for c in classes):
        raise ProtocolError("the classes are not a list of at least two plain labels")
    kind = expect(header, "output_kind", str)
    if kind not in OUTPUT_KINDS:
        raise ProtocolError("the output kind is not one of the kinds a target gives")
    if any(name not in arrays for name in _SCORED_ARRAYS) or set(arrays) - {*_SCORED_ARRAYS, "robustness"}:
        raise ProtocolError("the scored answer lacks an array or has one it should not")
    values = {name: np.asarray(arrays.get(name)) for name in _SCORED_ARRAYS}
    outputs = values["outputs"]
    n = len(values["is_member"])
    if (
        outputs.ndim != 2
        or outputs.shape != (n, len(classes))
        or any(values[name].shape != (n,) for name in _SCORED_ARRAYS[1:])
        or n < 2
        or n % 2
    ):
        raise ProtocolError("the scored arrays do not have matching shapes")
    arrays_checked = {name: values[name].astype(_SCORED_DTYPES[name], copy=False) for name in _SCORED_ARRAYS}
    _check_outputs(arrays_checked["outputs"], kind)
    queries = 0 if request is None else request.boundary_queries_for(kind, n // 2)
    robustness = _robustness(arrays.get("robustness"), n, queries)
    label_index = arrays_checked["label_index"]
    is_member = arrays_checked["is_member"]
    if (label_index < 0).any() or (label_index >= len(classes)).any():
        raise ProtocolError("a label index is out of range")
    if (is_member[: n // 2] != 1).any() or (is_member[n // 2 :] != 0).any():
        raise ProtocolError("the membership column is not members first, then non-members")
    if (arrays_checked["source_rows"] < 0).any():
        raise ProtocolError("a source row number is negative")
    saved = header.get("saved_version")
    return ScoredTarget(
        **arrays_checked,
        output_kind=kind,
        robustness=robustness,
        classes=np.asarray([clean_text(c, MAX_CLASS_TEXT) if isinstance(c, str) else c for c in classes]),
        label_column=clean_text(expect(header, "label_column", str), 200),
        n_features=_count(header, "n_features"),
        members_available=_count(header, "members_available"),
        non_members_available=_count(header, "non_members_available"),
        balancing=clean_text(expect(header, "balancing", str), 300),
        model_class=_identifier(header, "model_class"),
        estimator_class=_identifier(header, "estimator_class"),
        saved_version=clean_text(saved, 40) if isinstance(saved, str) else None,
        table_bytes=_count(header, "table_bytes"),
        label_classes=_count(header, "label_classes"),
        members_shared=_count(header, "members_shared"),
        non_members_shared=_count(header, "non_members_shared"),
        shared_examples=_row_pairs(header, "shared_examples"),
        has_recipe=header.get("has_recipe", True) is not False,
    )


def _check_outputs(outputs: np.ndarray, kind: str) -> None:
    """The outputs are of the kind the child names: probabilities in [0, 1] that sum to 1, finite margins,
    or one-hot rows of 0 and 1."""
    if not np.isfinite(outputs).all():
        raise ProtocolError("the outputs are not finite numbers")
    if kind == "probabilities" and (
        (outputs < -1e-3).any() or (outputs > 1 + 1e-3).any() or np.abs(outputs.sum(axis=1) - 1).max() > 1e-3
    ):
        raise ProtocolError("the probabilities are not probabilities")
    if kind == "labels" and (not np.isin(outputs, (0.0, 1.0)).all() or (outputs.sum(axis=1) != 1).any()):
        raise ProtocolError("the predicted labels are not one label per row")


def _robustness(values: Any, n: int, queries: int) -> np.ndarray | None:
    """The boundary attack's ``(n,)`` robustness when asked for: shares of ``queries + 1`` answers."""
    if values is None:
        if queries:
            raise ProtocolError("the scored answer lacks the robustness that was asked for")
        return None
    robustness = np.asarray(values).astype(np.float64, copy=False)
    if not queries or robustness.shape != (n,) or not np.isfinite(robustness).all():
        raise ProtocolError("the robustness array was not asked for or does not match the rows")
    counts = robustness * (queries + 1)
    if (robustness < 0).any() or (robustness > 1).any() or np.abs(counts - np.rint(counts)).max() > 1e-6:
        raise ProtocolError("the robustness values are not shares of the queries asked for")
    return robustness


def checked_from_message(header: Mapping[str, Any], request: CheckRequest) -> ModelCheck:
    """Check a child's ``checked`` answer to ``request``: class names (``*_class``), the label column's name,
    counts; and that it answers what was asked (the label column asked for, at least two classes and one
    feature, a known output kind, no more rows scored than asked for or than either table has)."""
    values: dict[str, Any] = {}
    for name in (field.name for field in dataclasses.fields(ModelCheck)):
        if name == "label_column":
            label = expect(header, name, str)
            if request.label_column is not None and label != request.label_column:
                raise ProtocolError("the check answers for another label column than the one asked for")
            values[name] = clean_text(label, 200)
        elif name == "output_kind":
            values[name] = expect(header, name, str)
            if values[name] not in OUTPUT_KINDS:
                raise ProtocolError("the check names no output kind the audit knows")
        else:
            values[name] = _identifier(header, name) if name.endswith("_class") else _count(header, name)
    checked = ModelCheck(**values)
    if (
        not 2 <= checked.n_classes <= 100_000
        or checked.n_features < 1
        or not 1 <= checked.rows_scored <= max(request.rows, 1)
        or checked.rows_scored > min(checked.members_rows, checked.non_members_rows)
    ):
        raise ProtocolError("the check's counts are not counts of this check")
    return checked


def answers_from_message(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], shapes: list[tuple[int, int]]
) -> list[np.ndarray]:
    """Check a child's ``answers`` to the reference stage: one array per fit set of the parent's own plan,
    each of its shape ``(n_models, pool rows)``, every value a probability. The parent computes LiRA and
    RMIA from them; a child never reports a figure of its own."""
    if expect(header, "sets", int) != len(shapes) or set(arrays) != {
        f"answers_{i}" for i in range(len(shapes))
    }:
        raise ProtocolError("the reference answer has the wrong number of fit sets")
    answers = []
    for i, shape in enumerate(shapes):
        values = np.asarray(arrays[f"answers_{i}"])
        if values.shape != tuple(shape) or values.dtype.kind != "f":
            raise ProtocolError("a reference fit set's answers do not match its models and rows")
        values = values.astype(np.float64)
        if not (np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()):
            raise ProtocolError("a reference fit set's answers are not probabilities")
        answers.append(values)
    return answers


def _plain_value(value: Any) -> bool:
    """A parameter value the what-if may report: int, float (finite), bool or None."""
    if value is None or type(value) is bool or type(value) is int:
        return type(value) is not int or abs(value) < 2**53
    return type(value) is float and math.isfinite(value)


def what_if_from_message(
    header: Mapping[str, Any],
    arrays: Mapping[str, np.ndarray],
    request: WhatIfRequest,
    rows: int,
    jobs: list[tuple[int, int]] | None = None,
) -> WhatIfFits:
    """Check a child's ``what_if`` answer to ``request`` for a pool of ``rows`` rows: class and family from
    the what-if's table, parameter names and rule ids from it too, values plain, the baseline first, and
    ``(configs, models_per_config, rows)`` arrays of probabilities and 0/1 correctness; for a share of the
    fits (``jobs``, ``(config, model)`` pairs), ``(len(jobs), 1, rows)`` arrays."""
    estimator_class, family = header.get("estimator_class"), header.get("family")
    if estimator_class is None:
        if family is not None:
            raise ProtocolError("the what-if names a family without a class")
        knobs: frozenset[str] = frozenset()
    else:
        if not isinstance(estimator_class, str) or estimator_class not in CLASS_KNOBS:
            raise ProtocolError("the what-if names a class outside its table")
        table_family, knobs = CLASS_KNOBS[estimator_class]
        if family != table_family:
            raise ProtocolError("the what-if names a family that is not its class's")
    skipped = header.get("skipped")
    if (skipped is not None and skipped not in SKIP_CODES) or (skipped == "not_asked") == request.fit:
        raise ProtocolError(
            "the what-if's skip reason is not one of its codes, or not an answer to the request"
        )
    # "no variants for this model's class" exactly when it names no class (or nothing was asked); fits
    # that ran have a class and a baseline.
    if request.fit and (skipped == "not_in_table") != (estimator_class is None):
        raise ProtocolError("the what-if's skip reason does not match the class it names")
    configs = []
    for i, entry in enumerate(expect(header, "configs", list)):
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ProtocolError("a what-if config is not [kind, parameter, value]")
        kind, parameter, value = entry
        if i == 0:
            if (kind, parameter, value) != ("baseline", None, None):
                raise ProtocolError("the what-if's first config is not the baseline")
            configs.append(Config("baseline", "baseline", None, None))
            continue
        if kind != "retrained" or parameter not in knobs or value is None or not _plain_value(value):
            raise ProtocolError(
                "a what-if variant names a parameter outside its class's knobs or a value that is not plain"
            )
        configs.append(Config(variant_name(parameter, value), "retrained", parameter, value))
    if len(configs) > 64 or (estimator_class is None and configs) or (skipped is None and not configs):
        raise ProtocolError("the what-if has configs it cannot have")
    rules = []
    for entry in expect(header, "rules", list):
        if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in RULES and _plain_value(entry[1])):
            raise ProtocolError("a what-if rule is outside the table")
        rules.append((entry[0], entry[1]))
    if estimator_class is None and rules:
        raise ProtocolError("the what-if has rules for no class")
    plan = Plan(estimator_class, family, tuple(configs), tuple(rules))
    m = request.models_per_config
    shape = (len(configs) if skipped is None else 0, m, rows)
    if jobs is not None and skipped is None:
        if not all(0 <= c < len(configs) and 0 <= k < m for c, k in jobs):
            raise ProtocolError("the what-if's fits name a config it does not have")
        shape = (len(jobs), 1, rows)
    confidence = np.asarray(arrays.get("confidence", np.empty(0)))
    correct = np.asarray(arrays.get("correct", np.empty(0)))
    flat = (shape[0] * shape[1], rows)
    if confidence.shape != flat or correct.shape != flat or (skipped is None and not request.fit):
        raise ProtocolError("the what-if's arrays do not match its configs and rows")
    confidence, correct = confidence.reshape(shape), correct.reshape(shape)
    confidence = confidence.astype(np.float64, copy=False)
    if not np.isfinite(confidence).all() or (confidence < 0).any() or (confidence > 1 + 1e-6).any():
        raise ProtocolError("the what-if's confidences are not probabilities")
    if not np.isin(correct, (0, 1)).all():
        raise ProtocolError("the what-if's correctness is not 0 or 1")
    return WhatIfFits(plan, skipped, np.minimum(confidence, 1.0), correct.astype(bool))


def _count(header: Mapping[str, Any], key: str) -> int:
    value = expect(header, key, int)
    if not 0 <= value < 2**53:
        raise ProtocolError(f"message field {key!r} is out of range")
    return value


def _row_pairs(header: Mapping[str, Any], key: str) -> tuple[tuple[int, int], ...]:
    """At most five ``[member_row, non_member_row]`` pairs of row numbers."""
    value = expect(header, key, list)
    if len(value) > 5 or not all(
        isinstance(pair, list)
        and len(pair) == 2
        and all(type(row) is int and 0 <= row < 2**53 for row in pair)
        for pair in value
    ):
        raise ProtocolError(f"message field {key!r} is not a short list of row pairs")
    return tuple((pair[0], pair[1]) for pair in value)


def _identifier(header: Mapping[str, Any], key: str) -> str:
    value = expect(header, key, str)
    if not value.isidentifier() or len(value) > 100:
        raise ProtocolError(f"message field {key!r} is not a class name")
    return value
