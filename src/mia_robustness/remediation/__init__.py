"""The remediation what-if: variants of the target's recipe, attacked and scored the same way -> frontier.

* :mod:`.family` -- the table: estimator classes, their regularising knobs and strengths, the rules that
  flag a memorising recipe (runs where the model runs).
* :mod:`.fits` -- every config (the baseline, then each variant) fitted ``models_per_config`` times on the
  same seeded halves of the audited rows; raw arrays out (runs where the model runs).
* :mod:`.measure` -- attacks (loss threshold, RMIA), utility, the Pareto frontier and the recommendation,
  in the parent, from the checked arrays.

:func:`what_if_section` is the engine's one call: it asks the model stage, then measures.
"""

from __future__ import annotations

from collections.abc import Callable

from ..options import AuditOptions
from ..report import Remediation
from ..sweep import attacker_rows, split_for_repeat
from ..target import ScoredTarget
from .fits import WHAT_IF_FITS, WhatIfFits, WhatIfRequest
from .measure import ServingRows, measure_remediation, summary_sentence

__all__ = [
    "MODELS_PER_CONFIG",
    "WHAT_IF_FITS",
    "WhatIfFits",
    "WhatIfRequest",
    "summary_sentence",
    "what_if_section",
]

# Fits per config: each model plays the target once, the others are its attacker's reference models.
MODELS_PER_CONFIG = 4

_ASK = "ask for it with what_if=true (--what-if)"
_SKIPPED = {
    "not_in_table": (
        "the what-if has no variants for this model's class (its table covers scikit-learn's trees, forests, "
        "gradient boosting, linear models, SVMs, MLP and k-NN); the serving-side options below still apply"
    ),
    "recipe_refused": (
        "the what-if could not retrain the model's recipe (the refit gate refused it or it cannot be "
        "copied); the serving-side options below still apply"
    ),
    "no_probabilities": (
        "the what-if measures each variant's confidence in the true label, and this model's recipe gives no "
        "probabilities (predict_proba); the serving-side options below still apply"
    ),
    "out_of_memory": (
        "retraining the model's recipe for the what-if needed more memory than the audit may use (its fits "
        "run side by side: fewer workers or a higher memory limit make room), so it has no retrained "
        "figures; the serving-side options below still apply"
    ),
    "refit_failed": (
        "retraining a variant of the model's recipe failed, so the what-if has no retrained figures; the "
        "serving-side options below still apply"
    ),
}


_NOT_PROBABILITIES = {
    "margins": (
        "the what-if measures each variant's confidence in the true label and how rounding the served "
        "probabilities changes the risk; this model gives margins (decision_function), not probabilities, "
        "so it has no what-if. The label-only rows (gap, boundary) give the risk if only labels were served"
    ),
    "labels": (
        "the what-if measures each variant's confidence in the true label; this model gives only labels "
        "(predict), so it has no what-if"
    ),
}


NO_MODEL = (
    "the what-if retrains the model's recipe, and this bundle supplies the model's outputs, not the model, so "
    "it has no retrained figures; the serving-side options below still apply (they need only the outputs)"
)


def wanted(
    options: AuditOptions,
    reference_runs: bool,
    time_short: bool = False,
    outputs_supplied: bool = False,
    has_recipe: bool = True,
) -> tuple[bool, str | None]:
    """Whether the what-if fits run, and if not, the sentence saying why and how to ask for them.

    ``time_short``: the audit's time limit leaves less than the reference stage took, which is about
    what the what-if costs (bench/RESULTS.md); by default the what-if then gives way rather than make
    the whole audit run past its limit and fail. ``outputs_supplied``: a predictions bundle, with no
    recipe to retrain. ``has_recipe``: the model holds a recipe to retrain (``ScoredTarget.has_recipe``) or
    ``config.json`` names one (``reference_recipe``); without one the what-if never fits, even when asked for.
    """
    if outputs_supplied:
        return False, NO_MODEL
    if options.what_if is False:
        return False, "the what-if was turned off (what_if=false); set what_if=true to run it"
    if not has_recipe:
        return False, (
            "the what-if retrains variants of the model's recipe, and this model (an ONNX graph) holds no training "
            "recipe; name one in config.json's reference_recipe to run it"
        )
    if options.what_if is True:
        return True, None
    if reference_runs and time_short:
        return False, (
            "the what-if costs about what the reference attacks did, and the audit's time limit leaves less "
            "time than that, so it was skipped rather than stop the audit; raise the limit (--timeout, "
            f"max_runtime) or {_ASK}"
        )
    if reference_runs:
        return True, None
    return False, (
        "the what-if runs by default only where the reference attacks (lira / rmia) run, and they did not "
        f"run in this audit; {_ASK}"
    )


def what_if_section(
    ask: Callable[[WhatIfRequest], WhatIfFits],
    scored: ScoredTarget,
    options: AuditOptions,
    *,
    reference_runs: bool,
    workers: int,
    time_short: bool = False,
    outputs_supplied: bool = False,
) -> Remediation:
    """Ask the model stage (``ask``: plan only, or plan and fit) and measure its answer.

    ``reference_runs`` says whether this audit runs lira / rmia (the default rule follows them);
    ``time_short`` whether the time limit leaves less than they took, ``outputs_supplied`` whether the
    bundle holds outputs instead of a model (see :func:`wanted`).
    """
    if scored.output_kind != "probabilities":
        return Remediation(skipped=_NOT_PROBABILITIES[scored.output_kind])
    has_recipe = scored.has_recipe or options.reference_recipe is not None
    fit, skipped = wanted(options, reference_runs, time_short, outputs_supplied, has_recipe)
    fits = ask(
        WhatIfRequest(
            fit=fit,
            models_per_config=MODELS_PER_CONFIG,
            seed=options.seed,
            workers=workers,
            thorough=options.what_if is True,  # asked for: the user accepts the full table's cost
            recipe=None if options.reference_recipe is None else options.reference_recipe.to_dict(),
        )
    )
    if fits.skipped is not None and skipped is None:
        skipped = _SKIPPED.get(fits.skipped, _SKIPPED["refit_failed"])
    split = split_for_repeat(scored.is_member, options.eval_fraction, options.seed, 0)
    serving = ServingRows(
        probabilities=scored.outputs,
        label_index=scored.label_index,
        is_member=scored.is_member,
        known=attacker_rows(split, max(options.proportions)),
        evaluation=split.evaluation,
    )
    return measure_remediation(
        fits,
        scored.label_index,
        serving,
        seed=options.seed,
        utility_budget=options.utility_budget,
        skipped=skipped,
    )
