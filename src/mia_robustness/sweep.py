"""The sweep: attacker-knowledge proportions x attack models x repeats over fixed evaluation splits.

Per repeat, members and non-members are each split once into an attacker-knowledge pool and a balanced
evaluation set; every proportion and attack model of that repeat is measured on the same evaluation rows,
which never enter attack training. Proportions take nested prefixes of one shuffled pool, so a larger
proportion knows everything a smaller one knows.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from sklearn import config_context
from threadpoolctl import threadpool_limits

from .attacks import REGISTRY, AttackInput
from .attacks.learned import MERGE_WHEN_DISTINCT_SHARE_BELOW
from .errors import DataError
from .executor import Executor, PipeExecutor, ThreadExecutor, single_threaded_worker
from .metrics import AttackMetrics, attack_metrics

MIN_ATTACK_ROWS_PER_SIDE = 5
# Cells run in parallel threads only when each has real native work: with few distinct signal rows (tree
# and forest targets give a few hundred) a cell is milliseconds of Python, and threads fighting for the
# GIL made the sweep ~1.5x slower than one thread (bench: sample_input 8.5 s vs 13 s; Adult 10k rf target
# 5.7 s vs 6.5 s; Adult 10k gb target, 19k distinct rows: 26.8 s vs 17.4 s).
PARALLEL_MIN_DISTINCT_ROWS = 2_000
# A learned attack trains on at most this many of the attacker's known rows when the audit's signal rows
# are at least HIGH_CARDINALITY_ROWS distinct ones (targets with continuous outputs; few distinct rows
# merge and train fast whatever their count). Past these sizes AUC stops moving: on the high-cardinality
# bench case (bench/attack_curve.py and bench/scale.py, figures in bench/RESULTS.md) nn gains under 0.002
# AUC from 40,000 rows to 140,000 (100k a side) or 350,000 (250k a side), gb under 0.003 from 70,000,
# while each cell's cost grows with its rows. rf is not in this table: its merged forest (5-row leaves)
# keeps gaining from more rows (+0.0067 from 70,000 to 350,000 on the 250k, 10-tree case), past the 0.005
# the sweep may move a figure; its unmerged forest has its own cap below.
# Proportions whose known rows reach the cap train on the same nested prefix of the pool, so the sweep
# fits it once per attack and repeat and reports it at each of them. Threshold attacks are not capped.
MAX_ATTACK_TRAIN_ROWS = {"nn": 40_000, "gb": 70_000}
HIGH_CARDINALITY_ROWS = 40_000
# rf is capped too when most of the audit's signal rows are distinct, so that its forest runs unmerged
# (attacks/learned.py's 50 trees of 20-row leaves on 10,000-row bootstraps): that forest's curve is flat
# past 70,000 rows (100k case, 100 such trees: 0.7200 at 70,000, 0.7213 at 140,000; 50 trees 0.7193 at
# 70,000; the audit's mean at 1.0 was 0.7158 with the forest before it).
# The merged forest (few distinct rows) keeps gaining (-0.0067 at a 70,000 cap on the 250k, 10-tree case)
# and stays uncapped.
UNMERGED_RF_MAX_TRAIN_ROWS = 70_000

ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class EvaluationSplit:
    """Row indices (into the audit's rows) of one repeat's pools and evaluation set."""

    member_pool: np.ndarray
    non_member_pool: np.ndarray
    evaluation: np.ndarray


@dataclass(frozen=True)
class Cell:
    """One unit of work: an attack model trained at one knowledge proportion in one repeat."""

    attack: str
    proportion: float
    repeat: int
    train_rows: np.ndarray
    seed: int


@dataclass(frozen=True)
class CellResult:
    """The measured outcome of one :class:`Cell`."""

    attack: str
    proportion: float
    repeat: int
    train_rows: int
    eval_rows: int
    metrics: AttackMetrics
    device: str
    seconds: float
    detail: str
    scores: np.ndarray = field(repr=False, compare=False, default=None)  # on the repeat's evaluation rows


def make_split(is_member: np.ndarray, eval_fraction: float, rng: np.random.Generator) -> EvaluationSplit:
    """Shuffle members and non-members separately and hold out ``eval_fraction`` of each for evaluation."""
    members = rng.permutation(np.flatnonzero(is_member == 1))
    non_members = rng.permutation(np.flatnonzero(is_member == 0))
    n_eval = int(round(eval_fraction * min(len(members), len(non_members))))
    evaluation = np.sort(np.concatenate([members[:n_eval], non_members[:n_eval]]))
    return EvaluationSplit(
        member_pool=members[n_eval:], non_member_pool=non_members[n_eval:], evaluation=evaluation
    )


def split_for_repeat(is_member: np.ndarray, eval_fraction: float, seed: int, repeat: int) -> EvaluationSplit:
    """The split of repeat ``repeat``: every stage of an audit that measures on it calls this."""
    return make_split(is_member, eval_fraction, np.random.default_rng([seed, repeat]))


def attacker_rows(split: EvaluationSplit, proportion: float) -> np.ndarray:
    """The rows an attacker knowing ``proportion`` of the member pool trains on (and as many non-members)."""
    n = int(round(proportion * min(len(split.member_pool), len(split.non_member_pool))))
    if n < MIN_ATTACK_ROWS_PER_SIDE:
        raise DataError(
            f"proportion {proportion:g} leaves the attacker only {n} member rows; it needs at least "
            f"{MIN_ATTACK_ROWS_PER_SIDE}. Use larger proportions or more rows",
            code="too_few_rows",
        )
    return np.concatenate([split.member_pool[:n], split.non_member_pool[:n]])


def plan_cells(
    is_member: np.ndarray,
    proportions: Sequence[float],
    attacks: Sequence[str],
    repeats: int,
    eval_fraction: float,
    seed: int,
    max_train_rows: Mapping[str, int] | None = None,
) -> tuple[list[EvaluationSplit], list[Cell]]:
    """Every split and cell of the sweep, all randomness drawn from ``seed``.

    With ``max_train_rows`` (attack name -> rows), an attack whose known rows at a proportion are more
    trains on the pool's nested prefix of that many rows (half members, half non-members) instead, with one
    seed per attack and repeat: every such proportion of a repeat is then the same cell, which
    :func:`run_sweep` fits once.
    """
    caps = max_train_rows or {}
    splits, cells = [], []
    for repeat in range(repeats):
        split = split_for_repeat(is_member, eval_fraction, seed, repeat)
        splits.append(split)
        for p_index, proportion in enumerate(proportions):
            known = attacker_rows(split, proportion)
            for a_index, attack in enumerate(attacks):
                rows, place = known, p_index
                cap = caps.get(attack)
                if cap is not None and len(known) >= cap:
                    rows = np.concatenate([split.member_pool[: cap // 2], split.non_member_pool[: cap // 2]])
                    place = len(proportions)  # one seed for every capped proportion: they are one fit
                cell_seed = int(np.random.SeedSequence([seed, repeat, place, a_index]).generate_state(1)[0])
                cells.append(Cell(attack, proportion, repeat, rows, cell_seed))
    return splits, cells


def default_workers() -> int:
    """CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def one_thread_sweep(inputs: AttackInput) -> bool:
    """Whether the sweep runs its cells on one thread in this process (too few distinct signal rows to
    gain from more; see :data:`PARALLEL_MIN_DISTINCT_ROWS`)."""
    return inputs.distinct_count < PARALLEL_MIN_DISTINCT_ROWS


def run_sweep(
    inputs: AttackInput,
    is_member: np.ndarray,
    *,
    device: str,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    executor: Executor | None = None,
    **plan: Any,
) -> list[CellResult]:
    """Train and measure every cell; results come back in plan order whatever the parallelism.

    ``plan`` is what :func:`plan_cells` takes after ``is_member``, by keyword: ``proportions``,
    ``attacks``, ``repeats``, ``eval_fraction`` and ``seed``.

    In this process (``executor`` ``None`` or threads), cells run in a thread pool of up to ``workers``
    threads (all usable CPUs when ``None``), each single-threaded inside (BLAS, OpenMP and torch limited to
    one thread), which uses the cores better than one cell at a time with many threads; one thread when
    cells are too small to gain from more, beside the helper processes of a :class:`PipeExecutor` if given
    (on the CPU). On a cluster's executor they are its tasks, the signals, the membership and the splits
    scattered to every worker once.
    """
    distinct = inputs.distinct_count
    caps = None
    if distinct >= HIGH_CARDINALITY_ROWS:
        caps = dict(MAX_ATTACK_TRAIN_ROWS)
        if distinct > MERGE_WHEN_DISTINCT_SHARE_BELOW * len(is_member):
            caps["rf"] = UNMERGED_RF_MAX_TRAIN_ROWS
    splits, cells = plan_cells(is_member, max_train_rows=caps, **plan)
    # One fit per distinct (attack, repeat, rows, seed): capped proportions repeat their first's cell.
    first_of: dict[tuple[str, int, int, int], int] = {}
    fitted = [first_of.setdefault(_fit_key(cell), i) for i, cell in enumerate(cells)]
    # Cells with native work share this process's threads; GIL-bound ones run on one thread, or on it and
    # the helper processes when the audit has some (on the CPU: on a GPU each helper would open a CUDA
    # context of its own for its nn cells); on a cluster, as its tasks.
    gil_bound = one_thread_sweep(inputs)
    on_helpers = gil_bound and isinstance(executor, PipeExecutor) and device == "cpu"
    if (executor is None or executor.cluster is None) and not on_helpers:
        executor = ThreadExecutor(1 if gil_bound else workers or default_workers())
    units = sorted(set(fitted))
    # Longest cells first (nn, then gb) so the pool does not end waiting on one slow cell.
    order = sorted(
        range(len(units)),
        key=lambda u: (REGISTRY[cells[units[u]].attack].cost_rank, -len(cells[units[u]].train_rows)),
    )

    def cell_done(done: int) -> None:
        if progress is not None:
            progress("attacks", done, len(units))  # may raise: the audit's time limit passed

    with single_threaded_kernels():
        results = executor.map(
            partial(measure_cell, device=device),
            [cells[i] for i in units],
            shared=[executor.share(value) for value in (inputs, is_member, splits)],
            order=order,
            on_done=cell_done,
            initializer=single_threaded_worker,
            name="cell",
        )
    result_of = dict(zip(units, results, strict=True))
    return [_as_cell(result_of[fitted[i]], cell, fitted[i] != i) for i, cell in enumerate(cells)]


def _fit_key(cell: Cell) -> tuple[str, int, int, int]:
    """Cells with equal keys train the same attack on the same rows with the same seed (rows are nested
    prefixes of the repeat's pool, so their count names them)."""
    return cell.attack, cell.repeat, len(cell.train_rows), cell.seed


def _as_cell(result: CellResult, cell: Cell, reused: bool) -> CellResult:
    """``result`` reported for ``cell``: its own proportion; a reused fit costs no seconds of its own."""
    if not reused:
        return result
    return dataclasses.replace(result, proportion=cell.proportion, seconds=0.0)


def measure_cell(
    cell: Cell, inputs: AttackInput, is_member: np.ndarray, splits: Sequence[EvaluationSplit], *, device: str
) -> CellResult:
    """Train ``cell``'s attack on its rows and measure it on its repeat's evaluation rows."""
    started = time.perf_counter()
    split = splits[cell.repeat]
    cell_device = device if REGISTRY[cell.attack].uses_device else "cpu"
    # The signals are finite and well-formed by construction; scikit-learn's per-call validation
    # is a large share of a small cell (sklearn's config is per thread, so set it here).
    with config_context(skip_parameter_validation=True, assume_finite=True):
        output = REGISTRY[cell.attack].function(
            inputs.take(cell.train_rows),
            is_member[cell.train_rows],
            inputs.take(split.evaluation),
            seed=cell.seed,
            device=cell_device,
        )
        metrics = attack_metrics(is_member[split.evaluation], output.scores, output.predicted_member)
    return CellResult(
        attack=cell.attack,
        proportion=cell.proportion,
        repeat=cell.repeat,
        train_rows=len(cell.train_rows),
        eval_rows=len(split.evaluation),
        metrics=metrics,
        device=output.device,
        seconds=time.perf_counter() - started,
        detail=output.detail,
        scores=output.scores,
    )


class single_threaded_kernels:
    """Limit BLAS/OpenMP and torch to one thread each while the sweep's own threads run cells (and, around
    both, while the sweep and the model stage's fits run side by side: overlap.run_beside)."""

    def __enter__(self):
        # Read torch's thread count before threadpoolctl limits OpenMP: torch reports the OpenMP limit,
        # so reading it afterwards would "restore" one thread and slow every later torch user.
        self._torch_threads = None
        try:
            import torch

            self._torch_threads = torch.get_num_threads()
        except ImportError:  # torch is a dependency, but the tree attacks do not need it
            pass
        self._limits = threadpool_limits(limits=1)
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(1)
        return self

    def __exit__(self, *exc_info):
        self._limits.restore_original_limits()
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
        return False
