"""Per-record scores: how exposed each evaluated member is, by every attack, in one deterministic order.

The JSON report keeps only the ten most exposed members (``report.ExposedRecords``); this module holds
the whole list behind it, which the Python API offers as ``Report.records`` and the CLI writes with
``audit --records FILE``. Only members of the first repeat's evaluation set have scores: every attack
measured them without training on them (the attacker's known members are its training data, so their
scores would say nothing).

Order: the strongest attack's score first; ties (RMIA and a grown forest give many members the top
score) are broken by the member's mean rank over all attacks, then by row number, so the same audit
always lists the same records in the same order.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

DECIMALS = 6
# A cell that starts with one of these is a formula to a spreadsheet (Excel, LibreOffice, Sheets).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


@dataclass(frozen=True)
class MemberScores:
    """Every evaluated member's attack scores, most exposed first.

    Attributes
    ----------
    attacks:
        ``(n_attacks,)`` attack model names, the strongest first (the one that orders the records).
    proportions:
        ``(n_attacks,)`` the knowledge proportion each attack's scores come from (its strongest, first repeat).
    rows:
        ``(n_members,)`` int, each member's 0-based data row in the members table (``train.csv``).
    labels:
        ``(n_members,)`` each member's true label, as text.
    scores:
        ``(n_members, n_attacks)`` float, each attack's membership score (higher: surer it is a member).
    mean_rank:
        ``(n_members,)`` float in (0, 1]: the member's rank among all evaluated rows (members and
        non-members) by each attack's score, as a share of those rows (1 = top), averaged over attacks.
    """

    attacks: tuple[str, ...]
    proportions: tuple[float, ...]
    rows: np.ndarray
    labels: tuple[str, ...]
    scores: np.ndarray
    mean_rank: np.ndarray

    @property
    def tied_at_top(self) -> int:
        """How many members share the strongest attack's highest score."""
        if not len(self.rows):
            return 0
        strongest = self.scores[:, 0]
        return int(np.count_nonzero(strongest == strongest.max()))

    def to_csv(self) -> str:
        """One line per member, most exposed first.

        Columns: ``rank`` (1 = most exposed), ``row`` (0-based data row in the members table), ``label``,
        ``mean_rank`` (see the class), then ``<attack>_score`` per attack, the strongest first. A label
        that a spreadsheet would run as a formula (``=...``, ``+...``, ``-...``, ``@...``; a number such as
        ``-1`` is left as it is) is written with a leading ``'``, which shows it as text.
        """
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["rank", "row", "label", "mean_rank"] + [f"{name}_score" for name in self.attacks])
        for position, (row, label, rank, scores) in enumerate(
            zip(self.rows.tolist(), self.labels, self.mean_rank.tolist(), self.scores.tolist(), strict=True),
            1,
        ):
            writer.writerow(
                [position, row, spreadsheet_text(label), f"{rank:.{DECIMALS}f}"]
                + [f"{s:.{DECIMALS}f}" for s in scores]
            )
        return buffer.getvalue()


def spreadsheet_text(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows and never runs: a leading ``'`` before a formula start
    (the labels come from the tables and, through the sandbox child, from the model's ``classes_``)."""
    if not text.startswith(_FORMULA_STARTS):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text  # a signed number: a spreadsheet reads it as that number, nothing runs


def member_scores(
    eval_scores: Mapping[str, np.ndarray],
    proportions: Sequence[float],
    truth: np.ndarray,
    rows: np.ndarray,
    labels: Sequence[str],
) -> MemberScores:
    """Rank the evaluated members.

    Parameters
    ----------
    eval_scores:
        Attack model -> its ``(n_eval,)`` scores on the evaluation rows, the strongest attack first.
    proportions:
        The proportion each of those scores comes from, in the same order.
    truth:
        ``(n_eval,)`` 1 for a member, 0 for a non-member.
    rows:
        ``(n_eval,)`` int, each evaluation row's 0-based data row in its own table.
    labels:
        ``(n_eval,)`` each evaluation row's true label, as text.
    """
    names = tuple(eval_scores)
    matrix = np.column_stack([np.asarray(eval_scores[name], dtype=float) for name in names])
    # Ties share their average rank, so a block of equal scores adds no order of its own.
    percentile = np.column_stack([rankdata(column, method="average") for column in matrix.T]) / len(truth)
    members = np.flatnonzero(np.asarray(truth) == 1)
    mean_rank = percentile[members].mean(axis=1)
    member_rows = np.asarray(rows)[members].astype(np.int64)
    # np.lexsort sorts by its last key first: strongest score (descending), mean rank (descending), row.
    order = np.lexsort((member_rows, -mean_rank, -matrix[members, 0]))
    picked = members[order]
    return MemberScores(
        attacks=names,
        proportions=tuple(float(p) for p in proportions),
        rows=member_rows[order],
        labels=tuple(str(labels[i]) for i in picked),
        scores=matrix[picked],
        mean_rank=mean_rank[order],
    )
