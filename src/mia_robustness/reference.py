"""The reference-model stage: train clones of the target and run LiRA and RMIA on every repeat's split.

Per repeat, the attacker holds the rows it knows at the largest proportion (known members and as many
known non-members) and the candidate records it wants to test (the evaluation rows, features and label
but not their membership). ``reference_models`` clones of the target (``sklearn.base.clone``: same class,
same hyperparameters) are each trained on a random half of those rows, every row in exactly half of the
models, so each candidate has IN and OUT models (online LiRA). The offline variants use the OUT models
only. Decision thresholds are fitted on the known rows; metrics are measured on the evaluation rows, whose
membership never enters any fitting.

What is retrained is the fitted model's recipe under the loader's rules (:func:`~mia_robustness.recipe.contained_clone`): a
search is refit from its ``best_estimator_``, never from its grid; caching, worker pools and printing are
off at every depth; every class and function the recipe's parameters reach must pass the loader's
allowlist; and size parameters are capped at what the fitted model shows it was trained with.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone

from .attacks import REGISTRY
from .attacks.reference import balanced_in_mask
from .attacks.threshold import best_cut
from .errors import MiaError, ModelError, raised_by_model
from .metrics import attack_metrics
from .recipe import contained_clone
from .sweep import (
    CellResult,
    EvaluationSplit,
    attacker_rows,
    default_workers,
    fits_side_by_side,
    split_for_repeat,
)
from .target import LoadedTarget, true_class_answers

log = logging.getLogger("mia_robustness.reference")
# How a user gets past a recipe that cannot be retrained.
_DROP_THEM = "drop lira / rmia from attack_models"


# --------------------------------------------------------------------------------------------------
# The recipe the reference models retrain
#
# The model file passed the loader's allowlist, but retraining its recipe runs code that predicting never
# does: a Pipeline's `memory` makes joblib cache to, and unpickle from (with a plain unpickler), a folder
# the file names; `n_jobs` starts process pools; a search re-runs its whole grid, whose entries may set
# either; a callable parameter is called on our data; a size parameter decides how long each refit takes.
# `_contained_clone` rebuilds the recipe from what was fitted and passes it through the same allowlist.
# --------------------------------------------------------------------------------------------------


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
    try:
        template = contained_clone(target)
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001 - a recipe scikit-learn cannot copy is the model's fault
        # The exception's class only: its text may quote the model's values.
        message = (
            "the reference-model attacks need to retrain the model's recipe, but it cannot be cloned ({}); "
        )
        raise raised_by_model(ModelError, exc, message + _DROP_THEM, code="not_clonable") from None
    takes_names = getattr(target, "feature_names_in_", None) is not None
    inputs = features if takes_names else features.to_numpy()

    def fit_one(k: int) -> np.ndarray:
        rows = np.flatnonzero(in_mask[k])
        model = clone(template)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(inputs.iloc[rows] if takes_names else inputs[rows], labels[rows])
                return true_class_answers(model, inputs, label_index, classes)[0]
        except (MiaError, MemoryError):
            raise
        # As for the target's predict_proba: the text comes from the recipe's code and may quote its values,
        # so only the exception's class reaches the user (the log keeps the rest).
        except Exception as exc:  # noqa: BLE001
            log.debug("a reference fit failed", exc_info=True)
            message = "retraining the model's recipe on a reference model's rows failed ({}); "
            raise raised_by_model(ModelError, exc, message + _DROP_THEM, code="refit_failed") from None

    results = fits_side_by_side(fit_one, range(len(in_mask)), workers, progress)
    return np.vstack(results)


@dataclass(frozen=True)
class ReferencePlan:
    """One repeat's reference fits: the attacker's known rows, its pool (known rows, then the evaluation
    rows) and ``in_mask`` ``(n_models, len(pool))``, which pool rows each reference model trains on."""

    repeat: int
    split: EvaluationSplit
    known: np.ndarray
    pool: np.ndarray
    in_mask: np.ndarray


def plan_reference(
    is_member: np.ndarray, *, proportion: float, repeats: int, eval_fraction: float, n_models: int, seed: int
) -> list[ReferencePlan]:
    """Every repeat's :class:`ReferencePlan`, all randomness drawn from ``seed``: wherever the fits run,
    they fit these rows."""
    plans = []
    for repeat in range(repeats):
        split = split_for_repeat(is_member, eval_fraction, seed, repeat)
        known = attacker_rows(split, proportion)
        pool = np.concatenate([known, split.evaluation])
        in_mask = balanced_in_mask(n_models, len(pool), np.random.default_rng([seed, repeat, 7919]))
        plans.append(ReferencePlan(repeat, split, known, pool, in_mask))
    return plans


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
    plans = plan_reference(
        is_member,
        proportion=proportion,
        repeats=repeats,
        eval_fraction=eval_fraction,
        n_models=n_models,
        seed=seed,
    )
    for plan in plans:

        def tick(done: int, repeat: int = plan.repeat) -> None:
            if progress is not None:
                progress("reference_models", repeat * n_models + done, total)

        reference = fit_reference_confidences(
            target,
            features.iloc[plan.pool],
            labels[plan.pool],
            label_index[plan.pool],
            classes,
            plan.in_mask,
            workers=workers,
            progress=tick,
        )
        results += attack_with_references(plan, reference, target_confidence, is_member, attacks, proportion)
    return results


def reference_fits(
    loaded: LoadedTarget, request: ReferenceRequest, jobs: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """A share of :func:`run_reference_attacks`'s fits, as a cluster's worker runs them in its sandbox: for
    each ``(repeat, k)`` of ``jobs``, reference model ``k`` of that repeat's plan (:func:`plan_reference`)
    fitted, and its true-class confidence on every row of the repeat's pool ``(len(pool),)``."""
    scored = loaded.scored
    plans = request.plans(scored.is_member)
    answers = []
    for repeat, k in jobs:
        plan = plans[repeat]
        confidence = fit_reference_confidences(
            loaded.model,
            loaded.features.iloc[plan.pool],
            loaded.labels[plan.pool],
            scored.label_index[plan.pool],
            scored.classes,
            plan.in_mask[k : k + 1],
            workers=1,
        )
        answers.append(confidence[0])
    return answers


def attack_with_references(
    plan: ReferencePlan,
    reference: np.ndarray,
    target_confidence: np.ndarray,
    is_member: np.ndarray,
    attacks: Sequence[str],
    proportion: float,
) -> list[CellResult]:
    """LiRA / RMIA cells of ``plan``'s repeat from its reference models' true-class confidences
    ``reference`` ``(n_models, len(plan.pool))``; decision thresholds fitted on the known rows."""
    known, split, pool, in_mask = plan.known, plan.split, plan.pool, plan.in_mask
    n_models = len(in_mask)
    known_part, eval_part = np.arange(len(known)), np.arange(len(known), len(pool))
    population = known_part[is_member[known] == 0]
    results = []
    for attack in attacks:
        spec = REGISTRY[attack]
        for variant in spec.variants:
            # The reference fits are shared by every variant; the report times them once, as the
            # reference_attacks stage. A cell's seconds are its own scoring and measuring.
            started = time.perf_counter()
            scores = spec.function(
                target_confidence[pool], reference, in_mask, population, online=bool(variant.online)
            )
            cut = best_cut(scores[known_part], is_member[known])
            eval_scores = scores[eval_part]
            metrics = attack_metrics(is_member[split.evaluation], eval_scores, eval_scores >= cut)
            results.append(
                CellResult(
                    attack=variant.name,
                    proportion=proportion,
                    repeat=plan.repeat,
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


@dataclass(frozen=True)
class ReferenceRequest:
    """One reference stage: LiRA and/or RMIA at attacker knowledge ``proportion`` (see ``reference.py``);
    the fields are :func:`run_reference_attacks`'s keyword arguments of the same names."""

    attacks: tuple[str, ...]
    proportion: float
    repeats: int
    eval_fraction: float
    n_models: int
    seed: int
    workers: int

    def plans(self, is_member: np.ndarray) -> list[ReferencePlan]:
        """Every repeat's fits (:func:`plan_reference`) for this request."""
        return plan_reference(
            is_member,
            proportion=self.proportion,
            repeats=self.repeats,
            eval_fraction=self.eval_fraction,
            n_models=self.n_models,
            seed=self.seed,
        )


def reference_cells(
    loaded: LoadedTarget, request: ReferenceRequest, progress: Callable[[str, int, int], None]
) -> list[CellResult]:
    """Refit reference clones of the scored target and run LiRA / RMIA (:func:`run_reference_attacks`)."""
    from .signals import compute_signals

    scored = loaded.scored
    confidence = compute_signals(scored.probabilities, scored.label_index).scores["confidence"]
    return run_reference_attacks(
        loaded.model,
        loaded.features,
        loaded.labels,
        scored.label_index,
        scored.classes,
        confidence,
        scored.is_member,
        **asdict(request),  # its fields are run_reference_attacks's keywords
        progress=progress,
    )


class FitPace:
    """What the reference stage will cost: its plan before the first fit, then estimates from the fits' pace.

    The stage fits ``n_models`` clones per repeat, ``at_once = min(workers, n_models)`` side by side, and
    waits for a repeat's fits before the next; so it takes about ``rounds`` times one fit, and the first
    fit to finish measures one. Progress counts fits in model order, so a round's fits are counted together.

    Parameters
    ----------
    request:
        The stage's request (``n_models``, ``repeats``, ``workers``).
    started:
        ``time.perf_counter()`` when the stage began.
    """

    def __init__(self, request: ReferenceRequest, started: float) -> None:
        self.n_models, self.repeats = request.n_models, request.repeats
        self.at_once = max(1, min(request.workers, request.n_models))
        self.per_repeat = math.ceil(self.n_models / self.at_once)
        self.fits = self.n_models * self.repeats
        self.rounds = self.per_repeat * self.repeats
        self.started = started

    def plan(self) -> str:
        """The stage's work, said before it starts."""
        return (
            f"{self.fits} fits of the target's recipe ({self.n_models} reference models x {self.repeats} "
            f"repeat{'s' if self.repeats != 1 else ''}, {self.at_once} at a time); the cost is estimated after the first"
        )

    def rounds_done(self, done: int) -> int:
        """Rounds of side-by-side fits finished once ``done`` fits are (rounds are counted per repeat)."""
        repeats, rest = divmod(done, self.n_models)
        return repeats * self.per_repeat + math.ceil(rest / self.at_once)

    def estimate(self, done: int, now: float) -> tuple[float, float]:
        """``(seconds in all, seconds left)`` from the pace so far; ``done`` is at least 1."""
        elapsed = now - self.started
        total = elapsed * self.rounds / self.rounds_done(done)
        return total, max(0.0, total - elapsed)

    def note(self, done: int, now: float) -> str:
        """The estimate after ``done`` fits: the whole stage's cost after the first, then the time left."""
        if done >= self.fits:
            return ""
        total, left = self.estimate(done, now)
        if done == 1:
            return f"about {_seconds(total)} in all ({self.fits} fits of the target's recipe), {_seconds(left)} left"
        return f"about {_seconds(left)} left"


def _seconds(value: float) -> str:
    """``7.3`` -> ``7 s``, ``61`` -> ``60 s``, ``754`` -> ``13 min``: as precise as an estimate is."""
    if value < 10:
        return f"{max(value, 1):.0f} s"
    if value < 120:
        return f"{round(value / 5) * 5:.0f} s"
    return f"{round(value / 60):.0f} min"
