"""Which of the asked-for attacks run on a target: by what it answers with (probabilities, margins, labels)
and by whether the bundle holds the model or only its outputs (a predictions bundle).

The engine calls these once the target is scored; each returns the attacks kept and the report's note on
those left out, and naming one that cannot run is an ``attack_not_applicable`` error.
"""

from __future__ import annotations

import numpy as np

from .attacks import REGISTRY
from .attacks.registry import SERVED, applies_to
from .errors import OptionsError
from .options import AuditOptions
from .signals import softmax


def attacks_for_kind(options: AuditOptions, output_kind: str) -> tuple[list[str], str | None]:
    """The asked-for attacks that can attack a target answering in ``output_kind``, and the report's note on
    those left out (``None`` when none were). Naming one that cannot is an error; by default it is left out.
    """
    unfit = [a for a in options.attack_models if not applies_to(a, output_kind)]
    if unfit and "attack_models" in options.explicit:
        raise OptionsError(
            f"attack_models names {', '.join(unfit)}, which cannot attack this model: it gives "
            f"{SERVED[output_kind]}, and {'they need' if len(unfit) > 1 else 'it needs'} "
            f"{_needs(unfit[0])}; choose from "
            f"{', '.join(a for a in REGISTRY if applies_to(a, output_kind))}",
            code="attack_not_applicable",
        )
    if not unfit:
        return list(options.attack_models), None
    needs = {}
    for name in unfit:
        needs.setdefault(_needs(name), []).append(name)
    reasons = "; ".join(
        f"{', '.join(names)} {'need' if len(names) > 1 else 'needs'} {what}" for what, names in needs.items()
    )
    note = f"{', '.join(unfit)} {'were' if len(unfit) > 1 else 'was'} left out: the model gives {SERVED[output_kind]} ({reasons})"
    return [a for a in options.attack_models if a not in unfit], note


_NEEDS = {
    ("probabilities",): "class probabilities to compare with their reference models'",
    ("probabilities", "margins"): "probabilities or margins to learn from",
}


def _needs(attack: str) -> str:
    """What ``attack`` needs of a target, in words."""
    outputs = REGISTRY[attack].outputs
    return _NEEDS.get(outputs, "a target that gives " + " or ".join(outputs))


def as_probabilities(outputs: np.ndarray, output_kind: str) -> np.ndarray:
    """Rows that sum to 1 for the sanity check: probabilities as they are, the softmax of margins, the
    one-hot predicted labels."""
    return softmax(outputs) if output_kind == "margins" else outputs


#: What each attack that needs the model itself, not only its answers, does with it: a predictions bundle
#: (``supplied.py``) has no model, so these are left out there.
NEEDS_THE_MODEL = {
    "lira": "retrains its recipe",
    "rmia": "retrains its recipe",
    "boundary": "queries it on perturbed copies of each record",
}


def attacks_without_model(
    options: AuditOptions, attacks: list[str], output_kind: str
) -> tuple[list[str], str | None]:
    """For outputs of ``output_kind`` supplied instead of a model: the ``attacks`` that need only those
    outputs, and the report's note on those left out (``None`` when none were). Naming one that needs the
    model is an error."""
    unfit = [a for a in attacks if a in NEEDS_THE_MODEL or REGISTRY[a].kind == "reference"]
    if not unfit:
        return attacks, None
    kept = [a for a in attacks if a not in unfit]
    why = "; ".join(f"{name} {NEEDS_THE_MODEL.get(name, 'retrains its recipe')}" for name in unfit)
    if "attack_models" in options.explicit:
        raise OptionsError(
            f"attack_models names {', '.join(unfit)}, which cannot run on this bundle: it supplies the model's "
            f"outputs, not the model ({why}); choose from "
            f"{', '.join(a for a in REGISTRY if a not in NEEDS_THE_MODEL and applies_to(a, output_kind))}",
            code="attack_not_applicable",
        )
    verb = "were" if len(unfit) > 1 else "was"
    return (
        kept,
        f"{', '.join(unfit)} {verb} left out: the bundle supplies the model's outputs, not the model ({why})",
    )
