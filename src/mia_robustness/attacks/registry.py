"""The attack registry: one :class:`AttackSpec` per attack, and every table the audit needs derived from it.

Adding an attack is one entry in :data:`REGISTRY` plus its module. The options (which names
``attack_models`` accepts), the sweep (which function a cell calls, in what order cells run, which of
them use the device), the reference stage (which variants it reports), and the report (each row's
description and the knowledge its attacker needs) all read this table; none of them names an attack.

Two kinds:

* ``learned``: ``fit_score(train, is_member, evaluation, *, seed, device) -> AttackOutput`` over the
  target's per-row signals; run at every attacker-knowledge proportion (``sweep.py``).
* ``reference``: ``score(target_confidence, reference_confidence, in_mask, population, *, online)`` over
  the true-class confidences of reference clones of the target's recipe; run at the largest proportion
  (``reference.py``), reported once per variant (online and offline).

Each entry also says which output kinds of a target (``target.OUTPUT_KINDS``) it can attack
(:attr:`AttackSpec.outputs`) and whether it sees only the predicted labels (:attr:`AttackSpec.labels_only`):
the learned attacks read probabilities or margins, the reference attacks compare probabilities, and the
label-only attacks (gap, boundary) run on every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .base import AttackOutput
from .label_only import fit_score_boundary, fit_score_gap
from .learned import fit_score_gb, fit_score_rf
from .nn import fit_score_nn
from .reference import lira_scores, rmia_scores
from .threshold import fit_score_class_threshold, fit_score_threshold

KNOWN_ROWS = "black-box outputs + known members and non-members"
RECIPE = "black-box outputs + known rows as reference data + the target's training recipe"
LABELS = "predicted labels only + known members and non-members"
PERTURBED_LABELS = "predicted labels of perturbed copies of each record + known members and non-members"
#: What each kind of target serves, as the report words it; the label-only rows are its "labels only" view.
SERVED = {
    "probabilities": "class probabilities (predict_proba)",
    "margins": "decision margins (decision_function), not probabilities",
    "labels": "predicted labels only (predict)",
}
ALL_KINDS = tuple(SERVED)


@dataclass(frozen=True)
class Variant:
    """One row of the report that an attack produces.

    Attributes
    ----------
    name:
        The row's ``attack_model``.
    description:
        What the row's attacker does, for the summary.
    online:
        Reference attacks: whether the variant uses IN models (trained on the record); ``None`` otherwise.
    """

    name: str
    description: str
    online: bool | None = None


@dataclass(frozen=True)
class AttackSpec:
    """Everything the audit knows about one attack.

    Attributes
    ----------
    name:
        The name ``attack_models`` accepts.
    kind:
        ``learned`` or ``reference`` (see the module docstring for each kind's function).
    function:
        The learned attack's ``fit_score``, or the reference attack's ``score``.
    knowledge:
        What the attacker needs to know, for the report.
    cost_rank:
        Order in which the sweep starts cells (0 first: the slowest), so the pool does not end waiting.
    uses_device:
        Whether it trains on the audit's device (CUDA where present); the others run on the CPU.
    variants:
        The rows it reports.
    outputs:
        The target output kinds it attacks; on another kind it is left out (an error when named).
    labels_only:
        Whether it needs only the predicted labels (the report's "labels only" threat model).
    """

    name: str
    kind: Literal["learned", "reference"]
    function: Callable[..., AttackOutput] | Callable[..., np.ndarray]
    knowledge: str
    cost_rank: int
    uses_device: bool
    variants: tuple[Variant, ...]
    outputs: tuple[str, ...] = ("probabilities", "margins")
    labels_only: bool = False


def _learned(
    name: str,
    fit_score: Callable[..., AttackOutput],
    description: str,
    cost_rank: int,
    *,
    uses_device: bool = False,
) -> AttackSpec:
    """A learned attack over the target's signals, trained on known rows; one report row."""
    return AttackSpec(
        name, "learned", fit_score, KNOWN_ROWS, cost_rank, uses_device, (Variant(name, description),)
    )


def _reference(name: str, score: Callable[..., np.ndarray], *, online: str, offline: str) -> AttackSpec:
    """A reference attack over clones of the target's recipe; two report rows, ``name`` for the online
    variant and ``name_offline``."""
    variants = (Variant(name, online, True), Variant(f"{name}_offline", offline, False))
    return AttackSpec(name, "reference", score, RECIPE, 0, False, variants, outputs=("probabilities",))


def _label_only(
    name: str, fit_score: Callable[..., AttackOutput], description: str, knowledge: str, cost_rank: int
) -> AttackSpec:
    """A label-only attack (predicted labels and known rows); run at every proportion like the learned ones."""
    variants = (Variant(name, description),)
    return AttackSpec(
        name, "learned", fit_score, knowledge, cost_rank, False, variants, outputs=ALL_KINDS, labels_only=True
    )


REGISTRY: dict[str, AttackSpec] = {
    spec.name: spec
    for spec in (
        _learned("nn", fit_score_nn, "PyTorch MLP on all signals (knows some members)", 0, uses_device=True),
        _learned("rf", fit_score_rf, "random forest on all signals (knows some members)", 2),
        _learned("gb", fit_score_gb, "histogram gradient boosting on all signals (knows some members)", 1),
        _learned(
            "threshold",
            fit_score_threshold,
            "best single-signal threshold (loss, confidence, entropy), fitted on known rows",
            3,
        ),
        _learned(
            "class_threshold",
            fit_score_class_threshold,
            "best single signal with a threshold per class (Song & Mittal 2021)",
            9,
        ),
        _label_only(
            "gap",
            fit_score_gap,
            "label only: members are the records the model labels right (Yeom et al. 2018)",
            LABELS,
            10,
        ),
        _label_only(
            "boundary",
            fit_score_boundary,
            "label only: how often the true label survives perturbed copies of the record "
            "(Choquette-Choo et al. 2021)",
            PERTURBED_LABELS,
            11,
        ),
        _reference(
            "lira",
            lira_scores,
            online="LiRA online (Carlini et al. 2022) with reference models of the target's recipe",
            offline="LiRA offline (OUT reference models only)",
        ),
        _reference(
            "rmia",
            rmia_scores,
            online="RMIA (Zarifzadeh et al. 2024) with reference models of the target's recipe",
            offline="RMIA offline (OUT reference models only)",
        ),
    )
}


class _ByVariant(Mapping[str, str]):
    """A live view of :data:`REGISTRY`: report-row name -> one text about it (read at each lookup, so an
    attack registered later is seen everywhere at once)."""

    def __init__(self, text: Callable[[AttackSpec, Variant], str]) -> None:
        self._text = text

    def _table(self) -> dict[str, str]:
        return {v.name: self._text(spec, v) for spec in REGISTRY.values() for v in spec.variants}

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


def applies_to(name: str, output_kind: str) -> bool:
    """Whether attack ``name`` can attack a target whose answers are of ``output_kind``."""
    return output_kind in REGISTRY[name].outputs


def labels_only_rows() -> frozenset[str]:
    """Report rows (variant names) of the label-only attacks."""
    return frozenset(v.name for spec in REGISTRY.values() if spec.labels_only for v in spec.variants)


def attack_names(kind: str | None = None) -> tuple[str, ...]:
    """Names ``attack_models`` accepts (of one ``kind`` when given), in registry order: learned first."""
    return tuple(name for name, spec in REGISTRY.items() if kind is None or spec.kind == kind)


#: The names as registered when the package was imported (for help texts and defaults).
ATTACK_NAMES = attack_names()
LEARNED_ATTACKS = attack_names("learned")
REFERENCE_ATTACKS = attack_names("reference")
#: Description of each report row (variant name -> text).
ATTACK_DESCRIPTIONS: Mapping[str, str] = _ByVariant(lambda spec, variant: variant.description)
#: What the attacker behind each report row needs to know.
KNOWLEDGE: Mapping[str, str] = _ByVariant(lambda spec, variant: spec.knowledge)
