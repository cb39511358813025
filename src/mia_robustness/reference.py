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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from .attacks import REGISTRY
from .attacks.reference import balanced_in_mask, seeded_in_mask
from .attacks.threshold import best_cut
from .errors import MiaError, ModelError, raised_by_model
from .executor import Executor, side_by_side
from .metrics import attack_metrics
from .options import AuditOptions
from .recipe import contained_clone, refit_key, seed_unset_random_states
from .sweep import CellResult, attacker_rows, default_workers, split_for_repeat
from .target import LoadedTarget, true_class_answers

log = logging.getLogger("mia_robustness.reference")

# With a cluster attached, per slot (a worker thread): the row limit above which LiRA / RMIA are skipped by
# default grows with the slots, and so does the default number of reference models, from at least
# CLUSTER_MIN_REFERENCE_MODELS (LiRA's authors need 16 or more for most of its gains).
CLUSTER_MIN_REFERENCE_MODELS = 16
CLUSTER_REFERENCE_MODELS_PER_SLOT = 4
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
    recipe: dict | None = None,
    seed: int | None = None,
    models: Sequence[int] | None = None,
    kept: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """Fit one clone of ``target`` (or of ``recipe``, a named reference_recipe) per row of ``in_mask`` and
    return their true-class confidences (K x n).

    ``seed``: unset ``random_state``s get refit ``models[i]``'s seed (``models`` defaults to ``0..K-1``;
    :func:`~mia_robustness.recipe.seed_unset_random_states`). ``kept``: where to keep each refit's
    ``(confidence, correct)`` by :func:`~mia_robustness.recipe.refit_key` (rows are then every audited row,
    for the what-if's baseline to reuse).
    """
    try:
        template = contained_clone(target, recipe)
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

    indices = list(range(len(in_mask))) if models is None else list(models)

    def fit_one(k: int) -> np.ndarray:
        rows = np.flatnonzero(in_mask[k])
        model = clone(template)
        if seed is not None:
            seed_unset_random_states(model, seed, indices[k])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(inputs.iloc[rows] if takes_names else inputs[rows], labels[rows])
                confidence, correct = true_class_answers(model, inputs, label_index, classes)
        except (MiaError, MemoryError):
            raise
        # As for the target's predict_proba: the text comes from the recipe's code and may quote its values,
        # so only the exception's class reaches the user (the log keeps the rest).
        except Exception as exc:  # noqa: BLE001
            log.debug("a reference fit failed", exc_info=True)
            message = (
                "retraining config.json's reference_recipe on a reference model's rows failed ({}); check its "
                "params (values the class accepts); "
                if recipe is not None
                else "retraining the model's recipe on a reference model's rows failed ({}); "
            )
            raise raised_by_model(ModelError, exc, message + _DROP_THEM, code="refit_failed") from None
        if kept is not None and seed is not None:
            kept[refit_key(recipe, seed, indices[k], in_mask[k])] = (confidence, correct)
        return confidence

    results = side_by_side(fit_one, range(len(in_mask)), workers, progress)
    return np.vstack(results)


@dataclass(frozen=True)
class FitSet:
    """One set of reference models: the audited rows they draw their training halves from, the repeats
    they serve, and which model holds which row.

    Attributes
    ----------
    pool:
        ``(n_pool,)`` audited row indices; column ``j`` of the set's answers is row ``pool[j]``.
    repeats:
        The repeats whose attacker holds exactly these rows.
    in_mask:
        ``(n_models, n_pool)`` booleans, every row in exactly half of the models.
    """

    pool: np.ndarray
    repeats: tuple[int, ...]
    in_mask: np.ndarray


def plan_fit_sets(
    is_member: np.ndarray,
    *,
    proportion: float,
    repeats: int,
    eval_fraction: float,
    n_models: int,
    seed: int,
) -> list[FitSet]:
    """The reference model sets the stage fits: one shared by every repeat when every repeat's attacker
    holds the same rows, else one per repeat.

    A repeat's attacker holds its known rows at ``proportion`` and its candidate (evaluation) rows; the
    reference models may train on those only. With the largest proportion at 1 and equal sides (the
    default) every repeat holds every audited row, only split differently into known and candidate rows, so
    one set, each row in half of its models, serves them all: membership never enters the fits, and each
    repeat still fits its threshold and RMIA's population on its own known rows. When the repeats hold
    different rows (a largest proportion below 1), one set would have trained on rows some repeat's
    attacker does not hold, so each repeat gets its own set, as before sharing.
    """
    pools = []
    for repeat in range(repeats):
        split = split_for_repeat(is_member, eval_fraction, seed, repeat)
        pools.append(np.concatenate([attacker_rows(split, proportion), split.evaluation]))
    shared = np.sort(pools[0])
    if all(np.array_equal(shared, np.sort(pool)) for pool in pools[1:]):
        mask = seeded_in_mask(n_models, len(shared), seed)
        return [FitSet(shared, tuple(range(repeats)), mask)]
    return [
        FitSet(
            pool,
            (repeat,),
            balanced_in_mask(n_models, len(pool), np.random.default_rng([seed, repeat, 7919])),
        )
        for repeat, pool in enumerate(pools)
    ]


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
    recipe: dict | None = None,
) -> list[CellResult]:
    """LiRA and/or RMIA (online and offline) per repeat, at attacker knowledge ``proportion``, on the
    reference models of :func:`plan_fit_sets`; they retrain ``recipe`` (config.json's reference_recipe) when
    given."""
    workers = workers or default_workers()
    fit_sets = plan_fit_sets(
        is_member,
        proportion=proportion,
        repeats=repeats,
        eval_fraction=eval_fraction,
        n_models=n_models,
        seed=seed,
    )
    answers = fit_answers(
        target,
        features,
        labels,
        label_index,
        classes,
        fit_sets,
        workers=workers,
        progress=progress,
        recipe=recipe,
        seed=seed,
    )
    return score_reference_cells(
        fit_sets,
        answers,
        target_confidence,
        is_member,
        attacks=attacks,
        proportion=proportion,
        eval_fraction=eval_fraction,
        seed=seed,
    )


def fit_answers(
    target: object,
    features: pd.DataFrame,
    labels: np.ndarray,
    label_index: np.ndarray,
    classes: np.ndarray,
    fit_sets: Sequence[FitSet],
    *,
    workers: int,
    progress: Callable[[str, int, int], None] | None = None,
    recipe: dict | None = None,
    seed: int | None = None,
    kept: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> list[np.ndarray]:
    """Fit every set's models (clones of ``target``, or of ``recipe`` when given; ``seed``: the audit's, for
    recipes without one); per set, ``(n_models, len(pool))`` true-class confidences. A set whose pool is
    every audited row keeps its refits in ``kept`` (see :func:`fit_reference_confidences`).

    Progress counts fits across the sets (``reference_models``, ``done`` of ``sets x n_models``).
    """
    n_models = len(fit_sets[0].in_mask)
    total = len(fit_sets) * n_models
    answers = []
    for index, fit_set in enumerate(fit_sets):

        def tick(done: int, index: int = index) -> None:
            if progress is not None:
                progress("reference_models", index * n_models + done, total)

        pool = fit_set.pool
        answers.append(
            fit_reference_confidences(
                target,
                features.iloc[pool],
                labels[pool],
                label_index[pool],
                classes,
                fit_set.in_mask,
                workers=workers,
                progress=tick,
                recipe=recipe,
                seed=seed,
                kept=kept if np.array_equal(pool, np.arange(len(labels))) else None,
            )
        )
    return answers


def score_reference_cells(
    fit_sets: Sequence[FitSet],
    answers: Sequence[np.ndarray],
    target_confidence: np.ndarray,
    is_member: np.ndarray,
    *,
    attacks: Sequence[str],
    proportion: float,
    eval_fraction: float,
    seed: int,
) -> list[CellResult]:
    """The LiRA / RMIA cells of every repeat from the fit sets' answers (``answers[i]``: ``(n_models,
    len(fit_sets[i].pool))`` true-class confidences), in repeat order."""
    n_models = len(fit_sets[0].in_mask)
    shared = len(fit_sets) == 1 and len(fit_sets[0].repeats) > 1
    detail = f"{n_models} reference models" + (
        f", shared by {len(fit_sets[0].repeats)} repeats" if shared else ""
    )
    results: list[CellResult] = []
    for fit_set, reference in zip(fit_sets, answers, strict=True):
        pool, in_mask = fit_set.pool, fit_set.in_mask
        position = np.full(len(is_member), -1)
        position[pool] = np.arange(len(pool))
        pool_confidence = target_confidence[pool]
        for repeat in fit_set.repeats:
            split = split_for_repeat(is_member, eval_fraction, seed, repeat)
            known = attacker_rows(split, proportion)
            known_part, eval_part = position[known], position[split.evaluation]
            # RMIA's population: the repeat's known non-members, never its candidates.
            population = known_part[is_member[known] == 0]
            for attack in attacks:
                spec = REGISTRY[attack]
                for variant in spec.variants:
                    # The reference fits are shared by every variant; the report times them once, as the
                    # reference_attacks stage. A cell's seconds are its own scoring and measuring.
                    started = time.perf_counter()
                    scores = spec.function(
                        pool_confidence, reference, in_mask, population, online=bool(variant.online)
                    )
                    cut = best_cut(scores[known_part], is_member[known])
                    eval_scores = scores[eval_part]
                    metrics = attack_metrics(is_member[split.evaluation], eval_scores, eval_scores >= cut)
                    results.append(
                        CellResult(
                            attack=variant.name,
                            proportion=proportion,
                            repeat=repeat,
                            train_rows=len(known),
                            eval_rows=len(split.evaluation),
                            metrics=metrics,
                            device="cpu",
                            seconds=time.perf_counter() - started,
                            detail=detail,
                            scores=eval_scores,
                        )
                    )
    return sorted(results, key=lambda cell: cell.repeat)


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
    recipe: dict | None = None  # config.json's reference_recipe (to_dict), retrained instead of the model's

    def fit_sets(self, is_member: np.ndarray) -> list[FitSet]:
        """The sets of reference models this stage fits (:func:`plan_fit_sets`)."""
        return plan_fit_sets(
            is_member,
            proportion=self.proportion,
            repeats=self.repeats,
            eval_fraction=self.eval_fraction,
            n_models=self.n_models,
            seed=self.seed,
        )


def reference_answers(
    loaded: LoadedTarget, request: ReferenceRequest, progress: Callable[[str, int, int], None]
) -> list[np.ndarray]:
    """Fit the reference sets of ``request`` (:meth:`ReferenceRequest.fit_sets`) on the scored target's
    rows: the stage's part that runs the recipe's code (in the sandbox child for a bundle). The attacks'
    arithmetic on these answers (:func:`score_reference_cells`) runs in the audit's own process. Refits on
    every audited row stay in ``loaded.refits`` for the what-if's baseline."""
    return fit_answers(
        loaded.model,
        loaded.features,
        loaded.labels,
        loaded.scored.label_index,
        loaded.scored.classes,
        request.fit_sets(loaded.scored.is_member),
        workers=request.workers,
        progress=progress,
        recipe=request.recipe,
        seed=request.seed,
        kept=loaded.refits,
    )


def reference_fits(
    loaded: LoadedTarget, request: ReferenceRequest, jobs: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """A share of :func:`reference_answers`'s fits, as a cluster worker's sandbox child runs them: for each
    ``(i, k)`` of ``jobs``, model ``k`` of fit set ``i`` (:meth:`ReferenceRequest.fit_sets`, the same plan
    as the audit's own), its true-class confidences ``(1, len(pool))`` on that set's pool."""
    scored = loaded.scored
    fit_sets = request.fit_sets(scored.is_member)
    answers = []
    for i, k in jobs:
        fit_set = fit_sets[i]
        answers.append(
            fit_reference_confidences(
                loaded.model,
                loaded.features.iloc[fit_set.pool],
                loaded.labels[fit_set.pool],
                scored.label_index[fit_set.pool],
                scored.classes,
                fit_set.in_mask[k : k + 1],
                workers=1,
                recipe=request.recipe,
                seed=request.seed,
                models=(k,),
            )
        )
    return answers


class FitPace:
    """What the reference stage will cost: its plan before the first fit, then estimates from the fits' pace.

    The stage fits ``n_models`` clones per fit set (:func:`plan_fit_sets`: one shared by every repeat, or
    one per repeat), ``at_once = min(workers, n_models)`` side by side, and waits for a set's fits before the
    next; so it takes about ``rounds`` times one fit, and the first fit to finish measures one. Progress
    counts fits in model order, so a round's fits are counted together.

    Parameters
    ----------
    request:
        The stage's request (``n_models``, ``repeats``, ``workers``).
    started:
        ``time.perf_counter()`` when the stage began.
    fit_sets:
        How many sets of ``n_models`` the stage fits (``len(plan_fit_sets(...))``); ``None``: one per repeat.
    """

    def __init__(self, request: ReferenceRequest, started: float, fit_sets: int | None = None) -> None:
        self.n_models, self.repeats = request.n_models, request.repeats
        self.sets = request.repeats if fit_sets is None else fit_sets
        self.at_once = max(1, min(request.workers, request.n_models))
        self.per_set = math.ceil(self.n_models / self.at_once)
        self.fits = self.n_models * self.sets
        self.rounds = self.per_set * self.sets
        self.started = started

    def plan(self) -> str:
        """The stage's work, said before it starts."""
        repeats = f"{self.repeats} repeat{'s' if self.repeats != 1 else ''}"
        if self.sets == 1 and self.repeats > 1:
            models = f"{self.n_models} reference models shared by {repeats}"
        else:
            models = f"{self.n_models} reference models x {repeats}"
        return (
            f"{self.fits} fits of the target's recipe ({models}, {self.at_once} at a time); "
            "the cost is estimated after the first"
        )

    def rounds_done(self, done: int) -> int:
        """Rounds of side-by-side fits finished once ``done`` fits are (rounds are counted per fit set)."""
        sets, rest = divmod(done, self.n_models)
        return sets * self.per_set + math.ceil(rest / self.at_once)

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


def scaled_for_cluster(
    options: AuditOptions, executor: Executor, fits_spread: bool
) -> tuple[AuditOptions, dict[str, Any]]:
    """``options`` with the default number of reference models raised for ``executor``'s cluster when the
    reference fits run on it (``fits_spread``; at least :data:`CLUSTER_MIN_REFERENCE_MODELS`,
    :data:`CLUSTER_REFERENCE_MODELS_PER_SLOT` per slot), and what the report says of the cluster;
    ``options`` as they are and ``{}`` in this process."""
    if executor.cluster is None:
        return options, {}
    reference = any(REGISTRY[a].kind == "reference" for a in options.attack_models)
    if fits_spread and reference and "reference_models" not in options.explicit:
        models = max(CLUSTER_MIN_REFERENCE_MODELS, CLUSTER_REFERENCE_MODELS_PER_SLOT * executor.slots)
        # Not marked explicit: the report's settings say what was used, the default still scales.
        options = replace(options, reference_models=models)
    resolved = {
        "address": executor.cluster,
        "workers": executor.workers,
        "slots": executor.slots,
        "reference_models": options.reference_models,
    }
    return options, resolved
