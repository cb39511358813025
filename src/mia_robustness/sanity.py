"""The data-sanity step: catch mixed-up tables before any attack runs.

Two mistakes give a confident wrong answer rather than an error, so they are checked on every audit
(``audit``, ``audit_estimator``, the server and the training job all pass through here):

* **Shared rows.** A row in both tables (identical in every feature column and the label) cannot be
  told apart by any attack, so a bundle whose two tables are mostly the same rows reads as "minimal
  risk". :func:`find_shared_rows` runs where the tables are aligned (``prepare.prepare_data``, inside the
  sandbox for a bundle) and refuses when more than :data:`REFUSE_SHARED_SHARE` (half) of either table's
  rows are also in the other one, unless the tables repeat rows within themselves about as much (data
  with few distinct rows, where a random split shares rows by chance); any shared row is a warning.
* **Swapped tables.** A model scores the rows it was trained on at least as well as unseen rows. When
  non-members are scored better in accuracy *and* in log loss, each beyond noise (a one-sided
  two-sample z test at :data:`SWAP_Z`), :func:`check_swap` warns "did you swap members and
  non-members?"; when the losses also separate strongly the wrong way (a member's loss is below a
  non-member's in at most :data:`EXTREME_LOSS_AUC` of pairs) it refuses unless ``allow_swapped``.
  It runs in the parent on the target's answers, before the attacks (:func:`sanity_findings`).

What the step found is the report's ``data.sanity`` section, and its warnings are in ``warnings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from .errors import DataError

# Refuse when more than this share of either table's rows are also in the other table ...
REFUSE_SHARED_SHARE = 0.5
# ... and that share is more than this many times the share of rows repeated within a table: data
# with few distinct rows (a handful of categorical columns) share rows between two random halves too.
NATURAL_REPEAT_FACTOR = 2.0
EXAMPLES = 5
# One-sided z for "non-members are scored better": 3.0 is a false alarm in about 0.13% of audits per test,
# and both tests (accuracy and loss) must pass.
SWAP_Z = 3.0
# Extreme: read the wrong way round, the loss alone would tell non-members from members with an AUC that
# the report calls a medium risk (rules.RISK_RULES' 0.60; a test holds the two together): a member's loss
# is the lower in at most 40% of pairs. The model then knows the non-members far better than its members,
# which no correct split gives.
EXTREME_LOSS_AUC = 0.4
# Log loss of a row scored 0 for its true label is capped (-log(1e-6) = 13.8), so one row cannot
# dominate a side's mean.
MIN_PROBABILITY = 1e-6
# A z statistic with no spread on either side (every row right on both) is reported as this, not infinity
# (which JSON cannot carry).
MAX_Z = 1000.0


@dataclass(frozen=True)
class RowOverlap:
    """Rows the two tables share: identical in every feature column and the label.

    ``members_shared`` member rows equal some non-member row, ``non_members_shared`` non-member rows equal
    some member row; ``examples`` pairs ``[member_row, non_member_row]`` (0-based data rows of each table,
    at most five, member rows ascending).
    """

    members_shared: int = 0
    non_members_shared: int = 0
    examples: list[list[int]] = field(default_factory=list)


@dataclass(frozen=True)
class SwapCheck:
    """How the target scores members against non-members, to catch swapped tables.

    Accuracy and mean log loss per side on the audited rows; ``accuracy_z`` and ``loss_z`` are the
    two-sample z statistics of "non-members are scored better" (positive when they are);
    ``loss_auc`` is the share of (member, non-member) pairs where the member's loss is the lower (0.5:
    no difference; a model that learned its members is above). ``verdict`` is ``consistent``,
    ``suspicious`` (both z above the threshold: a warning) or ``extreme`` (suspicious and ``loss_auc``
    at or below the extreme bound: refused unless ``allow_swapped``).
    """

    member_accuracy: float
    non_member_accuracy: float
    member_loss: float
    non_member_loss: float
    accuracy_z: float
    loss_z: float
    loss_auc: float
    verdict: str


@dataclass(frozen=True)
class DataSanity:
    """What the data-sanity step found before any attack ran; ``warnings`` are also in the report's."""

    overlap: RowOverlap = field(default_factory=RowOverlap)
    swap: SwapCheck | None = None
    warnings: list[str] = field(default_factory=list)


def _row_keys(frame: pd.DataFrame, columns: list[str], numeric: dict[str, bool]) -> np.ndarray:
    """One 64-bit hash per row over ``columns``; a column numeric in both tables is compared as float
    (``1`` in one table equals ``1.0`` in the other), any other column as text."""
    values = pd.DataFrame(
        {
            i: frame[column].astype("float64") if numeric[column] else frame[column].astype(str)
            for i, column in enumerate(columns)
        }
    )
    return pd.util.hash_pandas_object(values, index=False).to_numpy()


def find_shared_rows(members: pd.DataFrame, non_members: pd.DataFrame, columns: list[str]) -> RowOverlap:
    """Find the rows the two tables share over ``columns`` (the feature columns and the label).

    Parameters
    ----------
    members, non_members:
        The tables as read, ``(n_members, >= len(columns))`` and ``(n_non_members, >= len(columns))``.
    columns:
        The feature columns the model takes, then the label column.

    Raises
    ------
    DataError
        ``shared_rows``: more than half of either table's rows are in the other one, and the tables do
        not repeat rows within themselves nearly as often.
    """
    numeric = {
        c: pd.api.types.is_numeric_dtype(members[c]) and pd.api.types.is_numeric_dtype(non_members[c])
        for c in columns
    }
    member_keys = _row_keys(members, columns, numeric)
    non_member_keys = _row_keys(non_members, columns, numeric)
    in_non_members = np.isin(member_keys, non_member_keys)
    if not in_non_members.any():
        return RowOverlap()
    first_non_member: dict[int, int] = {}
    for row, key in enumerate(non_member_keys.tolist()):
        first_non_member.setdefault(key, row)
    member_rows = np.flatnonzero(in_non_members)
    shared = RowOverlap(
        members_shared=len(member_rows),
        non_members_shared=int(np.isin(non_member_keys, member_keys).sum()),
        examples=[[int(row), first_non_member[int(member_keys[row])]] for row in member_rows[:EXAMPLES]],
    )
    n_members, n_non_members = len(members), len(non_members)
    shared_share = max(shared.members_shared / n_members, shared.non_members_shared / n_non_members)
    repeated_share = max(
        pd.Series(member_keys).duplicated(keep=False).mean(),
        pd.Series(non_member_keys).duplicated(keep=False).mean(),
    )
    if shared_share > REFUSE_SHARED_SHARE and shared_share > NATURAL_REPEAT_FACTOR * repeated_share:
        raise DataError(
            f"members and non-members are mostly the same rows: {_described(shared, n_members, n_non_members)}. "
            "An attack cannot tell a row from its copy, so the audit would report a false all-clear; give the "
            "rows the model was trained on as members and rows it never saw as non-members",
            code="shared_rows",
        )
    return shared


def _described(shared: RowOverlap, n_members: int, n_non_members: int) -> str:
    pairs = ", ".join(f"{member} = non-member row {other}" for member, other in shared.examples[:3])
    return (
        f"{shared.members_shared:,} of {n_members:,} member rows are also non-member rows "
        f"({shared.non_members_shared:,} of {n_non_members:,} non-member rows), identical in every feature "
        f"column and the label; for example member row {pairs} (row numbers are 0-based data rows of each "
        "table)"
    )


def overlap_warning(shared: RowOverlap, n_members: int, n_non_members: int) -> str | None:
    """The report's warning about rows both tables hold (``None`` when there are none)."""
    if not shared.members_shared:
        return None
    return (
        f"{_described(shared, n_members, n_non_members)}. No attack can tell these rows apart, so they lower "
        "the measured risk; remove them from the non-members unless they are different records that happen "
        "to be identical"
    )


def sanity_findings(
    probabilities: np.ndarray,
    label_index: np.ndarray,
    is_member: np.ndarray,
    overlap: RowOverlap,
    table_rows: tuple[int, int],
    *,
    allow_swapped: bool,
) -> DataSanity:
    """The step's findings for the report: the swap check on the target's answers (arrays as for
    :func:`check_swap`, which raises as it does), with the shared rows ``overlap`` found (and refused when
    too many) where the tables were aligned; ``table_rows`` is ``(n_members, n_non_members)`` as read."""
    swap, swap_warning = check_swap(probabilities, label_index, is_member, allow_swapped=allow_swapped)
    warnings = [text for text in (swap_warning, overlap_warning(overlap, *table_rows)) if text]
    return DataSanity(overlap=overlap, swap=swap, warnings=warnings)


def check_swap(
    probabilities: np.ndarray, label_index: np.ndarray, is_member: np.ndarray, *, allow_swapped: bool
) -> tuple[SwapCheck, str | None]:
    """Compare how the target scores members and non-members, to catch swapped tables.

    Parameters
    ----------
    probabilities:
        ``(n_rows, n_classes)`` the target's ``predict_proba`` for every audited row.
    label_index:
        ``(n_rows,)`` column of each row's true label.
    is_member:
        ``(n_rows,)`` 1 for a member row, 0 for a non-member (both sides present).
    allow_swapped:
        The user's word that non-members scored far better is intended: no refusal, only the warning.

    Returns
    -------
    The comparison, and the warning for the report (``None`` when the scores look like a correct split).

    Raises
    ------
    DataError
        ``swapped_tables``: the verdict is ``extreme`` and ``allow_swapped`` is false.
    """
    members = is_member.astype(bool)
    true_probability = probabilities[np.arange(len(label_index)), label_index]
    correct = (probabilities.argmax(axis=1) == label_index).astype(np.float64)
    loss = -np.log(np.clip(true_probability, MIN_PROBABILITY, 1.0))
    accuracy = (correct[members].mean(), correct[~members].mean())
    mean_loss = (loss[members].mean(), loss[~members].mean())
    accuracy_z = _z(accuracy[1] - accuracy[0], correct[members], correct[~members])
    loss_z = _z(mean_loss[0] - mean_loss[1], loss[members], loss[~members])
    # Lower loss = more member-like: the AUC of -loss as a membership score.
    loss_auc = float(roc_auc_score(members, -loss))
    verdict = "consistent"
    if accuracy_z > SWAP_Z and loss_z > SWAP_Z:
        verdict = "extreme" if loss_auc <= EXTREME_LOSS_AUC else "suspicious"
    check = SwapCheck(
        member_accuracy=float(accuracy[0]),
        non_member_accuracy=float(accuracy[1]),
        member_loss=float(mean_loss[0]),
        non_member_loss=float(mean_loss[1]),
        accuracy_z=accuracy_z,
        loss_z=loss_z,
        loss_auc=loss_auc,
        verdict=verdict,
    )
    if verdict == "consistent":
        return check, None
    finding = (
        f"the model scores non-members better than members (accuracy {check.non_member_accuracy:.1%} against "
        f"{check.member_accuracy:.1%}, mean log loss {check.non_member_loss:.3f} against {check.member_loss:.3f}, "
        f"both beyond noise at z > {SWAP_Z:g}; a member's loss is the lower in {loss_auc:.0%} of member/non-member "
        "pairs)"
    )
    if verdict == "extreme" and not allow_swapped:
        raise DataError(
            f"did you swap members and non-members? {finding[0].upper()}{finding[1:]}, which a model trained on "
            "its members does not do. Give the training rows as members (train) and unseen rows as non-members "
            "(subject); if this is intended, set the option allow_swapped (--allow-swapped)",
            code="swapped_tables",
        )
    return check, f"did you swap members and non-members? {finding[0].upper()}{finding[1:]}"


def _z(difference: float, first: np.ndarray, second: np.ndarray) -> float:
    """``difference`` in standard errors of a difference of two independent means (Welch)."""
    error = math.sqrt(first.var() / len(first) + second.var() / len(second))
    if error == 0:
        return math.copysign(MAX_Z, difference) if difference else 0.0
    return float(np.clip(difference / error, -MAX_Z, MAX_Z))
