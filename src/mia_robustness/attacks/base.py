"""Plain data passed to and returned by every attack."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AttackInput:
    """Rows an attack sees, row-aligned: the feature matrix, the single-signal scores, the true-label class."""

    features: np.ndarray
    signal_scores: dict[str, np.ndarray]
    label_index: np.ndarray

    def take(self, rows: np.ndarray) -> AttackInput:
        """The subset of rows ``rows`` (an index array)."""
        return AttackInput(
            self.features[rows], {name: values[rows] for name, values in self.signal_scores.items()}, self.label_index[rows]
        )

    def __len__(self) -> int:
        return len(self.features)


@dataclass(frozen=True)
class AttackOutput:
    """An attack's verdict on evaluation rows.

    Attributes
    ----------
    scores:
        Membership score per row, higher = more likely a member.
    predicted_member:
        The attack's hard decision per row.
    device:
        Where the attack ran (``cpu`` or ``cuda``).
    detail:
        What the attack chose, for the report (e.g. the threshold attack's signal).
    """

    scores: np.ndarray
    predicted_member: np.ndarray
    device: str = "cpu"
    detail: str = ""
