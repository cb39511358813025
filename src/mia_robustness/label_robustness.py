"""Label robustness under perturbation: the boundary attack's per-row signal, measured where the model runs.

In the spirit of Choquette-Choo et al. 2021's augmentation attack for tabular data: a training record tends
to sit further from the decision boundary than an unseen one, so its predicted label survives small changes
to the record more often. Each row is queried ``queries`` times, each time a perturbed copy:

* a numeric column gets Gaussian noise with standard deviation ``NOISE_SCALE`` times that column's standard
  deviation over the audited rows (integer columns are rounded back to integers, so an encoder that treats
  them as categories sees only integers);
* a categorical column (text, category, boolean) has each value replaced, with probability
  ``RESAMPLE_SHARE``, by a value drawn from the column's own values over the audited rows.

A row's robustness is the share of its ``queries + 1`` answers (the row itself and its perturbed copies)
that give its true label: with no copies it is the gap attack's right-or-wrong, and every copy refines it.
Only this ``(n,)`` array leaves the model stage.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from .errors import DataError
from .executor import side_by_side

# Measured on Adult (800 rows a side, 16 queries; bench figures in the kinds branch's report): at 0.3 / 0.05
# boundary beat gap on an RBF SVC (AUC 0.604 vs 0.588) and a 3-NN (0.587 vs 0.547); on a fully grown tree
# and a forest it stays below gap (0.56 vs 0.61, 0.57 vs 0.58), whatever the scale: their memorised rows
# are fragile, not robust. Redrawing more categories made it weaker on every model.
#: Noise per numeric column, in units of that column's standard deviation over the audited rows.
NOISE_SCALE = 0.3
#: Chance that a categorical value of a perturbed copy is redrawn from its column's values.
RESAMPLE_SHARE = 0.05
# A stream of its own, apart from the balancing stream (2**31 - 1) and everything the sweep draws.
_STREAM = 2**31 - 3


def perturbed_copy(
    features: pd.DataFrame, rng: np.random.Generator, scales: dict[str, float]
) -> pd.DataFrame:
    """One perturbed copy of ``features`` (``(n, n_features)``); ``scales`` maps each numeric column to its
    noise standard deviation (other columns are categorical)."""
    copy = features.copy()
    n = len(features)
    for column in features.columns:
        values = features[column]
        if column in scales:
            noisy = values.astype(np.float64).to_numpy() + rng.normal(0.0, scales[column], size=n)
            if pd.api.types.is_integer_dtype(values.dtype):
                copy[column] = np.rint(noisy).astype(values.dtype)
            else:
                copy[column] = noisy.astype(values.dtype, copy=False)
        else:
            redraw = np.flatnonzero(rng.random(n) < RESAMPLE_SHARE)
            donors = rng.integers(0, n, size=len(redraw))
            column_values = copy[column].to_numpy(copy=True)
            column_values[redraw] = values.to_numpy()[donors]
            copy[column] = pd.Series(column_values, index=copy.index).astype(values.dtype)
    return copy


def noise_scales(features: pd.DataFrame) -> dict[str, float]:
    """Each numeric column's noise standard deviation (``NOISE_SCALE`` x its std over the rows, NaN -> 0)."""
    scales = {}
    for column in features.columns:
        dtype = features[column].dtype
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            std = float(np.nanstd(features[column].astype(np.float64).to_numpy()))
            scales[column] = NOISE_SCALE * (std if np.isfinite(std) else 0.0)
    return scales


def label_robustness(
    predict_index: Callable[[pd.DataFrame], np.ndarray],
    features: pd.DataFrame,
    label_index: np.ndarray,
    predicted_index: np.ndarray,
    *,
    queries: int,
    seed: int,
    threads: int = 1,
) -> np.ndarray:
    """``(n,)`` share of each row's ``queries + 1`` answers that give its true label.

    Parameters
    ----------
    predict_index:
        The target's predicted class position for each row of a ``(m, n_features)`` frame, ``(m,)`` int.
    features:
        ``(n, n_features)`` the audited rows as the model takes them.
    label_index, predicted_index:
        ``(n,)`` each row's true class position, and the one the target predicted for the row itself.
    queries:
        Perturbed copies of every row (at least 1).
    seed:
        The audit's seed; the copies are drawn from a stream of their own.
    threads:
        Query passes made at once (each in a thread of its own, one BLAS / OpenMP thread each). The copies
        are drawn in order in this thread whatever the count, so the answer does not depend on it.
    """
    rng = np.random.default_rng([seed, _STREAM])
    scales = noise_scales(features)
    hits = (predicted_index == label_index).astype(np.int64)
    at_once = max(1, min(threads, queries))
    for first in range(0, queries, at_once):  # at most at_once copies alive at a time
        copies = [perturbed_copy(features, rng, scales) for _ in range(min(at_once, queries - first))]
        try:
            if at_once == 1:  # here, as the model's first answers were made
                answers = [predict_index(copies[0])]
            else:
                answers = side_by_side(predict_index, copies, at_once)
        except DataError as error:
            if error.code != "model_rejected_data":
                raise
            raise DataError(
                "the model could not score perturbed copies of the rows for the boundary attack (numeric values "
                "moved by a little noise, categories redrawn from their own column); drop boundary from "
                "attack_models",
                code="boundary_rejected",
            ) from None
        for answer in answers:
            hits += answer == label_index
    return hits / (queries + 1)
