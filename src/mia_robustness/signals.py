"""Attack signals: the target's outputs turned into per-row features, computed once per audit.

The label-aware signals (probability of the true class, its loss, modified entropy, the one-hot true
label) are what separates members from non-members when the target outputs near one-hot vectors for
everyone, as a fully grown decision tree does.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    features: np.ndarray
    names: tuple[str, ...]
    scores: dict[str, np.ndarray]
    label_index: np.ndarray
    correct: np.ndarray


def compute_signals(probabilities: np.ndarray, label_index: np.ndarray) -> Signals:
    """Build the attack features from ``predict_proba`` output and the rows' true-label positions."""
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
