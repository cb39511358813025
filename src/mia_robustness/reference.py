"""The reference-model stage: train clones of the target and run LiRA and RMIA on every repeat's split.

Per repeat, the attacker holds the rows it knows at the largest proportion (known members and as many
known non-members) and the candidate records it wants to test (the evaluation rows, features and label
but not their membership). ``reference_models`` clones of the target (``sklearn.base.clone``: same class,
same hyperparameters) are each trained on a random half of those rows, every row in exactly half of the
models, so each candidate has IN and OUT models (online LiRA). The offline variants use the OUT models
only. Decision thresholds are fitted on the known rows; metrics are measured on the evaluation rows, whose
membership never enters any fitting.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from sklearn.base import clone
from threadpoolctl import threadpool_limits

from .attacks.reference import balanced_in_mask, lira_scores, rmia_scores
from .attacks.threshold import best_cut
from .errors import ModelError
from .metrics import attack_metrics
from .sweep import CellResult, attacker_rows, default_workers, single_threaded_worker, split_for_repeat

REFERENCE_VARIANTS = {
    "lira": (("lira", True), ("lira_offline", False)),
    "rmia": (("rmia", True), ("rmia_offline", False)),
}


def _true_class_confidence(
    model: object, features, label_index: np.ndarray, classes: np.ndarray
) -> np.ndarray:
    """Probability of each row's true label (0 for a class the model never saw in its half)."""
    probabilities = model.predict_proba(features)
    position = {value: i for i, value in enumerate(np.asarray(model.classes_).tolist())}
    columns = np.array([position.get(value, -1) for value in classes.tolist()])
    mapped = columns[label_index]
    confidence = probabilities[np.arange(len(label_index)), np.maximum(mapped, 0)]
    return np.where(mapped >= 0, confidence, 0.0)


# Parameters a model file sets that must not act when we refit its recipe: a Pipeline's `memory` would
# cache to a folder the file names, `n_jobs` would oversubscribe the cores our own threads use.
_NEUTRAL_PARAMETERS = {"memory": None, "n_jobs": 1}


def _contained_clone(target: object) -> object:
    """An unfitted clone of ``target`` with caching, parallelism and verbosity switched off."""
    template = clone(target)
    params = template.get_params(deep=True)
    changes = {
        key: value
        for key in params
        for suffix, value in _NEUTRAL_PARAMETERS.items()
        if (key == suffix or key.endswith("__" + suffix)) and params[key] != value
    }
    if changes:
        template.set_params(**changes)
    return template


def fit_reference_confidences(
    target: object,
    features: pd.DataFrame,
    labels: np.ndarray,
    label_index: np.ndarray,
    classes: np.ndarray,
    in_mask: np.ndarray,
    *,
    workers: int,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Fit one clone of ``target`` per row of ``in_mask`` and return their true-class confidences (K x n)."""
    takes_names = getattr(target, "feature_names_in_", None) is not None
    inputs = features if takes_names else features.to_numpy()
    try:
        template = _contained_clone(target)
    except Exception as exc:
        raise ModelError(
            f"the reference-model attacks need to retrain the model's recipe, but it cannot be cloned "
            f"({type(exc).__name__}: {exc}); drop lira / rmia from attack_models",
            code="not_clonable",
        ) from None

    def fit_one(k: int) -> np.ndarray:
        rows = np.flatnonzero(in_mask[k])
        model = clone(template)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(inputs.iloc[rows] if takes_names else inputs[rows], labels[rows])
            return _true_class_confidence(model, inputs, label_index, classes)

    results = []
    # One BLAS/OpenMP thread per fit: the fits run side by side, and a model's figures must not depend on
    # how many threads the machine (CLI, server child, training job) happens to give the audit.
    with (
        threadpool_limits(limits=1),
        ThreadPoolExecutor(max_workers=workers, initializer=single_threaded_worker) as pool,
    ):
        for done, confidence in enumerate(pool.map(fit_one, range(len(in_mask))), 1):  # map keeps model order
            results.append(confidence)
            if progress is not None:
                progress(done)
    return np.vstack(results)


def run_reference_attacks(
    target: object,
    features: pd.DataFrame,
    labels: np.ndarray,
    label_index: np.ndarray,
    classes: np.ndarray,
    target_confidence: np.ndarray,
    is_member: np.ndarray,
    *,
    attacks: Sequence[str],
    proportion: float,
    repeats: int,
    eval_fraction: float,
    n_models: int,
    seed: int,
    workers: int | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[CellResult]:
    """LiRA and/or RMIA (online and offline) per repeat, at attacker knowledge ``proportion``."""
    workers = workers or default_workers()
    results: list[CellResult] = []
    total = repeats * n_models
    for repeat in range(repeats):
        split = split_for_repeat(is_member, eval_fraction, seed, repeat)
        known = attacker_rows(split, proportion)
        pool = np.concatenate([known, split.evaluation])
        in_mask = balanced_in_mask(n_models, len(pool), np.random.default_rng([seed, repeat, 7919]))

        def tick(done: int, repeat: int = repeat) -> None:
            if progress is not None:
                progress("reference_models", repeat * n_models + done, total)

        reference = fit_reference_confidences(
            target,
            features.iloc[pool],
            labels[pool],
            label_index[pool],
            classes,
            in_mask,
            workers=workers,
            progress=tick,
        )
        known_part, eval_part = np.arange(len(known)), np.arange(len(known), len(pool))
        population = known_part[is_member[known] == 0]
        for attack in attacks:
            for name, online in REFERENCE_VARIANTS[attack]:
                # The reference fits are shared by every variant; the report times them once, as the
                # reference_attacks stage. A cell's seconds are its own scoring and measuring.
                started = time.perf_counter()
                if attack == "lira":
                    scores = lira_scores(target_confidence[pool], reference, in_mask, online=online)
                else:
                    scores = rmia_scores(
                        target_confidence[pool], reference, in_mask, population, online=online
                    )
                cut = best_cut(scores[known_part], is_member[known])
                eval_scores = scores[eval_part]
                metrics = attack_metrics(is_member[split.evaluation], eval_scores, eval_scores >= cut)
                results.append(
                    CellResult(
                        attack=name,
                        proportion=proportion,
                        repeat=repeat,
                        train_rows=len(known),
                        eval_rows=len(split.evaluation),
                        metrics=metrics,
                        device="cpu",
                        seconds=time.perf_counter() - started,
                        detail=f"{n_models} reference models",
                        scores=eval_scores,
                    )
                )
    return results
