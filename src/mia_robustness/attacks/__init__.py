"""Attack models. Each takes the attacker's known rows and scores rows it never saw.

Every attack works on plain arrays (:class:`AttackInput`, reference confidences); none of them sees
files, models or the report. :mod:`.registry` lists them: one :class:`AttackSpec` each.
"""

from __future__ import annotations

from .base import AttackInput, AttackOutput
from .nn import resolve_device
from .registry import (
    ATTACK_DESCRIPTIONS,
    ATTACK_NAMES,
    KNOWLEDGE,
    LEARNED_ATTACKS,
    REFERENCE_ATTACKS,
    REGISTRY,
    AttackSpec,
    Variant,
)

__all__ = [
    "ATTACK_DESCRIPTIONS",
    "ATTACK_NAMES",
    "KNOWLEDGE",
    "LEARNED_ATTACKS",
    "REFERENCE_ATTACKS",
    "REGISTRY",
    "AttackInput",
    "AttackOutput",
    "AttackSpec",
    "Variant",
    "resolve_device",
]
