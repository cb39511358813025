"""Attack models. Each takes the attacker's known rows and scores rows it never saw.

Every attack is a function ``fit_score(train, is_member, evaluation, *, seed, device) -> AttackOutput``
over plain arrays (:class:`AttackInput`); none of them sees files, models or the report.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import AttackInput, AttackOutput
from .learned import fit_score_gb, fit_score_rf
from .nn import fit_score_nn, resolve_device
from .threshold import fit_score_class_threshold, fit_score_threshold

AttackFunction = Callable[..., AttackOutput]

ATTACKS: dict[str, AttackFunction] = {
    "nn": fit_score_nn,
    "rf": fit_score_rf,
    "gb": fit_score_gb,
    "threshold": fit_score_threshold,
    "class_threshold": fit_score_class_threshold,
}

ATTACK_DESCRIPTIONS = {
    "nn": "PyTorch MLP on all signals (knows some members)",
    "rf": "random forest on all signals (knows some members)",
    "gb": "histogram gradient boosting on all signals (knows some members)",
    "threshold": "best single-signal threshold (loss, confidence, entropy), fitted on known rows",
    "class_threshold": "best single signal with a threshold per class (Song & Mittal 2021)",
    "lira": "LiRA online (Carlini et al. 2022) with reference models of the target's recipe",
    "lira_offline": "LiRA offline (OUT reference models only)",
    "rmia": "RMIA (Zarifzadeh et al. 2024) with reference models of the target's recipe",
    "rmia_offline": "RMIA offline (OUT reference models only)",
}

__all__ = ["ATTACKS", "ATTACK_DESCRIPTIONS", "AttackInput", "AttackOutput", "resolve_device"]
