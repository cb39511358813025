"""The what-if's fits, where the model runs: each config of the recipe fitted on the same random halves.

This is the thin part that runs in the sandbox child for a bundle (and in-process for ``audit_estimator``):
it reads the recipe's parameters (:func:`~.family.plan_for`), retrains it (:func:`~mia_robustness.recipe.
contained_clone`, the reference stage's gate), and answers with raw arrays only: each fitted model's
probability of every pool row's true label and whether it classified the row correctly. The parent
checks them (``sandbox/stage.py``) and does all the measuring (:mod:`.measure`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..attacks.reference import seeded_in_mask
from ..errors import MiaError
from ..executor import side_by_side
from ..recipe import contained_clone, refit_key, seed_unset_random_states
from ..target import true_class_answers
from .family import Plan, final_step, plan_for

log = logging.getLogger("mia_robustness.remediation")
WHAT_IF_FITS = "what_if"  # the progress stage: one step per fit
# Why the fits did not run, by code: the child sends a code, the parent says it in its own words.
SKIP_CODES = (
    "not_asked",
    "not_in_table",
    "recipe_refused",
    "refit_failed",
    "no_probabilities",
    "out_of_memory",
)


@dataclass(frozen=True)
class WhatIfRequest:
    """What the model stage is asked: fit (``fit``) or only plan, ``models_per_config`` models per config,
    masks from ``seed``, ``workers`` fits side by side; ``thorough``: the full table of variants
    (``family.THOROUGH_KNOBS``, when the user asked for the what-if) instead of the default one."""

    fit: bool
    models_per_config: int
    seed: int
    workers: int
    thorough: bool = False
    recipe: dict | None = None  # config.json's reference_recipe (to_dict), varied instead of the model's


@dataclass(frozen=True)
class WhatIfFits:
    """The model stage's answer.

    Attributes
    ----------
    plan:
        Class, family, configs (baseline first) and fired rules, from the what-if's table.
    skipped:
        ``None`` when the fits ran, else one of :data:`SKIP_CODES`.
    confidence:
        ``(configs, models_per_config, n)``: each fitted model's probability of each pool row's true label
        (empty when skipped).
    correct:
        ``(configs, models_per_config, n)`` bool: whether that model's top class is the row's label.
    """

    plan: Plan
    skipped: str | None
    confidence: np.ndarray
    correct: np.ndarray


def training_masks(models: int, rows: int, seed: int) -> np.ndarray:
    """``(models, rows)``: the reference stage's shared halves (every row in half of the models), so the
    what-if's baseline is exactly the reference stage's models and reuses their fits.

    Each model in turn plays the target and the others are its attacker's reference models; with balanced
    halves the others' membership count tells the target's (a member is in one fewer of them), so the
    measuring (:func:`~.measure.retrained_figures`) averages the others' IN and OUT answers apart, never
    over all of them.
    """
    return seeded_in_mask(models, rows, seed)


def plan_what_if(model: object, request: WhatIfRequest) -> tuple[Plan, str | None, Any, str]:
    """``(plan, skip code or None, template, prefix)``: the what-if's configs for ``model``'s recipe (or
    the recipe config.json names, ``request.recipe``) as it will be retrained (the capped clone
    ``template``, whose final step's parameters start with ``prefix``).
    """
    named = None
    if request.recipe is not None:  # the recipe config.json names is what the what-if varies
        try:
            named = contained_clone(model, request.recipe)
        except Exception:  # noqa: BLE001 - refused: the plan below is then of the model's own class
            log.debug("the what-if cannot build the named recipe", exc_info=True)
    plan = plan_for(model if named is None else named, request.thorough)
    if not request.fit:
        return plan, "not_asked", None, ""
    if plan.estimator_class is None:
        return plan, "not_in_table", None, ""
    try:
        template = contained_clone(model, request.recipe)
        _, prefix = final_step(template)
        # The variants are planned from the recipe as it will be retrained, not as the file declares it:
        # contained_clone caps a declared n_estimators / max_iter at the fitted size, and a relative knob
        # (half the rounds) must scale the capped value, or a file declaring 10**9 rounds fitted with 5
        # would have its variants fit 5 * 10**8.
        retrained = plan_for(template, request.thorough)
    except Exception:  # noqa: BLE001 - a refused or uncopyable recipe skips the what-if, never the audit
        log.debug("the what-if cannot retrain this recipe", exc_info=True)
        return plan, "recipe_refused", None, ""
    if not plan.configs or retrained.estimator_class != plan.estimator_class or not retrained.configs:
        return plan, "recipe_refused", None, ""
    plan = replace(plan, configs=retrained.configs)
    if not hasattr(template, "predict_proba"):  # an SVC without probability=True, a RidgeClassifier
        return plan, "no_probabilities", None, ""
    return plan, None, template, prefix


def fit_what_if(
    model: object,
    features: pd.DataFrame,
    labels: np.ndarray,
    label_index: np.ndarray,
    classes: np.ndarray,
    request: WhatIfRequest,
    progress: Callable[[str, int, int], None] | None = None,
    *,
    jobs: Sequence[tuple[int, int]] | None = None,
    kept: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> WhatIfFits:
    """Plan the what-if for ``model``'s recipe and, when asked, fit every config ``models_per_config`` times,
    or only the fits ``jobs`` names (a cluster worker's share): ``(config, model)`` pairs, the ``model``-th
    of ``models_per_config`` random halves with config ``config``.

    ``features`` ``(n, n_features)``, ``labels`` and ``label_index`` ``(n,)`` are the pool (every audited
    row, members first); the arrays answered are ``(configs, models_per_config, n)``, or ``(len(jobs), 1,
    n)`` in ``jobs``' order; a skip code, with empty arrays, when the what-if cannot run or a fit failed.
    ``kept``: the reference stage's refits (``LoadedTarget.refits``); a baseline fit found there is not refitted.
    """
    plan, code, template, prefix = plan_what_if(model, request)
    n, m = len(labels), request.models_per_config
    kept = {} if kept is None else kept

    def skipped(code: str) -> WhatIfFits:
        empty = np.zeros((0, m, n))
        return WhatIfFits(plan, code, empty, empty.astype(bool))

    if code is not None:
        return skipped(code)
    every = jobs is None
    if jobs is None:
        jobs = [(c, k) for c in range(len(plan.configs)) for k in range(m)]
    masks = training_masks(m, n, request.seed)
    takes_names = getattr(model, "feature_names_in_", None) is not None
    inputs = features if takes_names else features.to_numpy()

    # The baseline is the recipe as it is: the reference stage's refit on the same rows, when it made one.
    baseline_keys = {k: refit_key(request.recipe, request.seed, k, masks[k]) for k in range(m)}
    reused = {
        job: kept[baseline_keys[job[1]]] for job in jobs if job[0] == 0 and baseline_keys[job[1]] in kept
    }
    to_fit = [job for job in jobs if job not in reused]

    def fit_one(job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        c, k = job
        config = plan.configs[c]
        fitted = clone(template)
        if config.parameter is not None:
            fitted.set_params(**{prefix + config.parameter: config.value})
        seed_unset_random_states(fitted, request.seed, k)
        rows = np.flatnonzero(masks[k])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted.fit(inputs.iloc[rows] if takes_names else inputs[rows], labels[rows])
            return true_class_answers(fitted, inputs, label_index, classes)

    def fitted_so_far(done: int) -> None:
        if progress is not None:
            progress(WHAT_IF_FITS, done, len(to_fit))

    fitted_so_far(0)
    try:
        answered = side_by_side(fit_one, to_fit, request.workers, fitted_so_far)
    except MiaError:
        raise
    except MemoryError:  # the audit's figures are in hand: the optional what-if gives way, not the audit
        return skipped("out_of_memory")
    except Exception:  # noqa: BLE001 - the recipe's own code failed on a variant: skip, never fail the audit
        log.debug("a what-if fit failed", exc_info=True)
        return skipped("refit_failed")
    by_job = dict(zip(to_fit, answered, strict=True)) | reused
    results = [by_job[job] for job in jobs]
    shape = (len(plan.configs), m, n) if every else (len(jobs), 1, n)
    confidence = np.array([r[0] for r in results], dtype=np.float64).reshape(shape)
    correct = np.array([r[1] for r in results], dtype=bool).reshape(shape)
    return WhatIfFits(plan, None, confidence, correct)
