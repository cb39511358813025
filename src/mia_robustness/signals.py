"""Attack signals: the target's outputs turned into per-row features, computed once per audit.

The label-aware signals (probability of the true class, its loss, modified entropy, the one-hot true
label) are what separates members from non-members when the target outputs near one-hot vectors for
everyone, as a fully grown decision tree does.

Per output kind (``target.OUTPUT_KINDS``):

* probabilities: the features and threshold scores above;
* margins: the true class's margin over the best other class (the threshold attack's one score), and the
  same features as for probabilities computed on the softmax of the margins (named ``softmax_*``: they are
  a scaling for the learned attacks, not the model's probabilities);
* labels: whether the label was right, the one-hot true label and the one-hot predicted label.

Every kind also has the label-only scores (:attr:`Signals.label_scores`) the gap and boundary attacks use.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

EPSILON = 1e-12
TOP_K = 10
MAX_ONE_HOT_CLASSES = 100


@dataclass(frozen=True)
class Signals:
    """Per-row attack features.

    Attributes
    ----------
    features:
        ``(n_rows, n_features)`` float32 matrix the learned attacks train on.
    names:
        Column names of ``features``.
    scores:
        Single-signal membership scores (higher = more likely a member) for the threshold attack:
        ``confidence`` (true-class probability), ``neg_loss``, ``neg_entropy``, ``neg_modified_entropy``.
    label_index:
        Position of each row's true label among the target's classes.
    correct:
        Whether the target predicted the row's label.
    label_scores:
        The label-only attacks' scores: ``correct`` (1.0 / 0.0) and, when the boundary attack's queries ran,
        ``robustness`` (``label_robustness``).
    """

    features: np.ndarray
    names: tuple[str, ...]
    scores: dict[str, np.ndarray]
    label_index: np.ndarray
    correct: np.ndarray
    label_scores: dict[str, np.ndarray] = field(default_factory=dict)


def compute_signals(
    outputs: np.ndarray,
    label_index: np.ndarray,
    kind: str = "probabilities",
    robustness: np.ndarray | None = None,
) -> Signals:
    """Build the attack features from the target's ``(n_rows, n_classes)`` ``outputs`` of ``kind`` and the
    rows' true-label positions; ``robustness`` is the boundary attack's ``(n_rows,)`` signal, when measured."""
    if kind == "margins":
        signals = _margin_signals(outputs, label_index)
    elif kind == "labels":
        signals = _label_signals(outputs, label_index)
    else:
        signals = _probability_signals(outputs, label_index)
    label_scores = {"correct": signals.correct.astype(np.float64)}
    if robustness is not None:
        label_scores["robustness"] = np.asarray(robustness, dtype=np.float64)
    return replace(signals, label_scores=label_scores)


def softmax(margins: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, k)`` margins (shifted by each row's maximum, so it never overflows)."""
    shifted = np.exp(margins - margins.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def true_class_margin(margins: np.ndarray, label_index: np.ndarray) -> np.ndarray:
    """``(n,)`` each row's true-class margin minus the largest margin of another class."""
    rows = np.arange(len(label_index))
    others = margins.copy()
    others[rows, label_index] = -np.inf
    return margins[rows, label_index] - others.max(axis=1)


# Largest true-class margin the learned attacks see. They take float32 features and standardise them
# (squares): a margin past this (a finite 1e39 the checks let through) would be inf there and NaN once
# scaled. Margins that large rank rows no better saturated; the threshold score keeps the float64 value.
_MAX_MARGIN_FEATURE = 1e15
_MAX_FLOAT = float(np.finfo(np.float64).max)


def _margin_signals(margins: np.ndarray, label_index: np.ndarray) -> Signals:
    scaled = _probability_signals(softmax(margins), label_index)
    # 1e308 over -1e308 is inf in float64 too: the largest finite number instead
    margin = np.clip(true_class_margin(margins, label_index), -_MAX_FLOAT, _MAX_FLOAT)
    feature = np.clip(margin, -_MAX_MARGIN_FEATURE, _MAX_MARGIN_FEATURE)
    features = np.hstack([scaled.features, feature[:, None].astype(np.float32)])
    names = tuple(f"softmax_{name}" for name in scaled.names) + ("true_margin",)
    return Signals(
        features, names, {"true_margin": margin}, label_index, margins.argmax(axis=1) == label_index
    )


def _label_signals(one_hot_predicted: np.ndarray, label_index: np.ndarray) -> Signals:
    n_rows, n_classes = one_hot_predicted.shape
    correct = one_hot_predicted.argmax(axis=1) == label_index
    columns, names = [correct[:, None].astype(np.float64)], ["correct"]
    if n_classes <= MAX_ONE_HOT_CLASSES:
        one_hot = np.zeros((n_rows, n_classes))
        one_hot[np.arange(n_rows), label_index] = 1.0
        columns += [one_hot, one_hot_predicted]
        names += [f"label_{i}" for i in range(n_classes)] + [f"predicted_{i}" for i in range(n_classes)]
    features = np.hstack(columns).astype(np.float32)
    return Signals(features, tuple(names), {}, label_index, correct)


def _probability_signals(probabilities: np.ndarray, label_index: np.ndarray) -> Signals:
    """The probability signals (module docstring) of ``(n_rows, n_classes)`` rows that sum to 1."""
    n_rows, n_classes = probabilities.shape
    p = np.clip(probabilities, 0.0, 1.0)
    rows = np.arange(n_rows)
    p_true = p[rows, label_index]
    loss = -np.log(np.maximum(p_true, EPSILON))
    entropy = -(p * np.log(np.maximum(p, EPSILON))).sum(axis=1)
    # Modified entropy (Song & Mittal 2021): -(1-p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
    others = p * np.log(np.maximum(1.0 - p, EPSILON))
    others[rows, label_index] = 0.0
    modified_entropy = -(1.0 - p_true) * np.log(np.maximum(p_true, EPSILON)) - others.sum(axis=1)
    # Logit-scaled confidence (as in LiRA) spreads out values crowded near 0 and 1.
    logit = np.log(np.maximum(p_true, EPSILON)) - np.log(np.maximum(1.0 - p_true, EPSILON))
    correct = p.argmax(axis=1) == label_index

    k = min(TOP_K, n_classes)
    top = -np.sort(-p, axis=1)[:, :k]
    columns = [
        top,
        p_true[:, None],
        loss[:, None],
        entropy[:, None],
        modified_entropy[:, None],
        logit[:, None],
        correct[:, None],
    ]
    names = [f"top_{i + 1}" for i in range(k)] + [
        "p_true",
        "loss",
        "entropy",
        "modified_entropy",
        "logit_p_true",
        "correct",
    ]
    if n_classes <= MAX_ONE_HOT_CLASSES:
        one_hot = np.zeros((n_rows, n_classes))
        one_hot[rows, label_index] = 1.0
        columns.append(one_hot)
        names += [f"label_{i}" for i in range(n_classes)]
    features = np.hstack(columns).astype(np.float32)
    scores = {
        "confidence": p_true,
        "neg_loss": -loss,
        "neg_entropy": -entropy,
        "neg_modified_entropy": -modified_entropy,
    }
    return Signals(
        features=features, names=tuple(names), scores=scores, label_index=label_index, correct=correct
    )
