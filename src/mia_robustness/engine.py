"""The engine: an estimator and two tables in, a :class:`Report` out; no files, no shells.

:func:`audit_estimator` audits a fitted estimator the caller already holds (trusted: it is in the caller's
process anyway). :func:`run_audit` is the one audit both it and ``mia_robustness.audit(path)`` run; the
target sits behind a :class:`ModelStage`, which for a bundle is a sandbox child (``sandbox/``) and here an
:class:`InProcessModel`.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .assemble import assemble_report
from .attack_choice import as_probabilities, attacks_for_kind, attacks_without_model
from .attacks import REGISTRY, AttackInput, resolve_device
from .attacks.registry import SERVED
from .deadline import Deadline
from .errors import LimitError
from .executor import Executor, PipeExecutor, ThreadExecutor, open_executor
from .options import AuditOptions, options_from_mapping
from .overlap import one_at_a_time, overlap_pays, run_beside
from .recipe import has_recipe
from .recipe_spec import build_recipe
from .reference import (
    FitPace,
    FitSet,
    ReferenceRequest,
    reference_answers,
    scaled_for_cluster,
    score_reference_cells,
)
from .reference_cache import ReferenceCache, as_cache, cached_answers, estimator_identity
from .remediation import WhatIfFits, WhatIfRequest, summary_sentence, what_if_section
from .remediation.fits import fit_what_if
from .report import Remediation, Report
from .sanity import RowOverlap, sanity_findings
from .signals import compute_signals
from .sweep import default_workers, run_sweep, split_for_repeat
from .target import LoadedTarget, ScoredTarget, ScoreRequest, score_target

ProgressCallback = Callable[[str, int, int], None]

REFERENCE_DEFAULT_MAX_ROWS = 20_000
# Above this many rows per side the default audit makes no boundary queries for a target answering
# probabilities or margins: boundary is then only the informational labels-only row (gap gives that row
# at no extra query), and its queries cost as many extra passes of the model over every row as
# boundary_queries (at 100k rows a side, a 100-tree forest, 8 queries: 41 of the audit's 151 s).
BOUNDARY_DEFAULT_MAX_ROWS = REFERENCE_DEFAULT_MAX_ROWS
# Stages whose end the model stage reports itself; the stopwatch times them as they end.
MODEL_STAGE_STEPS = ("loading", "target_scoring")
REFERENCE_FITS = "reference_models"  # the stage the reference fits report, one step per fit
SUPPLIED_SENTENCE = (
    "The model's outputs were supplied with the bundle, not measured: no model was queried, so these figures "
    "hold as far as those outputs are what the model serves."
)


class ModelStage(Protocol):
    """Where the target runs: it answers for every row once, refits its recipe for LiRA / RMIA (answering
    each reference model's confidences, ``(n_models, len(pool))`` per fit set, checked), and plans
    (and, when asked, fits) the remediation what-if's variants of it (``remediation/fits.py``)."""

    containment: dict[str, Any]

    def score(self, request: ScoreRequest) -> ScoredTarget: ...

    def reference_answers(self, request: ReferenceRequest, fit_sets: list[FitSet]) -> list[np.ndarray]: ...

    def what_if(self, request: WhatIfRequest) -> WhatIfFits: ...

    def close(self) -> None: ...


class Stopwatch:
    """Times the audit's stages and forwards progress (checking the deadline at each report).

    Parameters
    ----------
    progress:
        The caller's ``progress(stage, done, total)``, or ``None``. A callback with a true
        ``accepts_notes`` attribute is also told, as ``note=`` text, what the reference stage will cost:
        its plan at ``0/total``, its estimated cost after the first fit, then the time left.
    deadline:
        Checked at every progress report.
    """

    def __init__(self, progress: ProgressCallback | None, deadline: Deadline) -> None:
        # The sweep and the model stage may report from two threads at once (run_audit's overlap).
        self.report = one_at_a_time(progress or (lambda stage, done, total, **note: None))
        self.takes_notes = bool(getattr(progress, "accepts_notes", False))
        self.deadline = deadline
        self.timings: dict[str, float] = {}
        self.started = self._last = time.perf_counter()
        self._pace: FitPace | None = None

    def lap(self, stage: str) -> None:
        """Record the time since the last lap as ``stage``'s and report it done."""
        now = time.perf_counter()
        self.timings[stage] = now - self._last
        self._last = now
        self.report(stage, 1, 1)

    def record(self, stage: str, started: float) -> None:
        """Record the time since ``started`` (``time.perf_counter()``) as ``stage``'s and report it done:
        for stages that may run beside another, whose time is their own, not the time since the last lap."""
        self.timings[stage] = time.perf_counter() - started
        self.report(stage, 1, 1)

    def expect_fits(self, request: ReferenceRequest, fit_sets: int | None = None) -> None:
        """The reference stage begins: say so (``0/total``, with its plan) before its first fit ends;
        ``fit_sets`` sets of reference models will be fitted (``None``: one per repeat)."""
        self._pace = FitPace(request, time.perf_counter(), fit_sets)
        self._forward(REFERENCE_FITS, 0, self._pace.fits, self._pace.plan())

    def progress(self, stage: str, done: int, total: int) -> None:
        if stage in MODEL_STAGE_STEPS and done == total:
            self.lap(stage)
        elif stage == REFERENCE_FITS and self._pace is not None and done > 0:
            self._forward(stage, done, total, self._pace.note(done, time.perf_counter()))
        else:
            self.report(stage, done, total)
        self.deadline.check(stage)

    def _forward(self, stage: str, done: int, total: int, note: str) -> None:
        if self.takes_notes and note:
            self.report(stage, done, total, note=note)
        else:
            self.report(stage, done, total)


class InProcessModel:
    """The model stage in this process: for an estimator the caller holds, or a bundle it trusts.

    Parameters
    ----------
    model:
        A fitted classifier with ``predict_proba``, ``decision_function`` or ``predict`` (``target.py``).
    members, non_members:
        The two tables, each with the label column.
    saved_version:
        The scikit-learn version the model was saved with, when known.
    progress:
        Receives the stage's progress.
    """

    containment: dict[str, Any] = {"sandbox": False}

    def __init__(
        self,
        model: Any,
        members: pd.DataFrame,
        non_members: pd.DataFrame,
        *,
        saved_version: str | None,
        progress: ProgressCallback,
    ) -> None:
        self._inputs = (model, members, non_members, saved_version)
        self._progress = progress
        self._loaded: LoadedTarget | None = None

    def score(self, request: ScoreRequest) -> ScoredTarget:
        model, members, non_members, saved_version = self._inputs
        self._progress("loading", 1, 1)
        self._loaded = score_target(model, members, non_members, request, saved_version=saved_version)
        self._loaded.scored = dataclasses.replace(self._loaded.scored, has_recipe=has_recipe(model))
        self._progress("target_scoring", 1, 1)
        return self._loaded.scored

    def reference_answers(self, request: ReferenceRequest, fit_sets: list[FitSet]) -> list[np.ndarray]:
        if self._loaded is None:
            raise RuntimeError("score() comes before reference_answers()")
        return reference_answers(self._loaded, request, self._progress)

    def what_if(self, request: WhatIfRequest) -> WhatIfFits:
        if self._loaded is None:
            raise RuntimeError("score() comes before what_if()")
        loaded = self._loaded
        return fit_what_if(
            loaded.model,
            loaded.features,
            loaded.labels,
            loaded.scored.label_index,
            loaded.scored.classes,
            request,
            self._progress,
            kept=loaded.refits,
        )

    def close(self) -> None:
        self._loaded = None


def audit_estimator(
    estimator: Any,
    members: pd.DataFrame,
    non_members: pd.DataFrame,
    *,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
    max_memory_mb: float | None = None,
    timeout: float | None = None,
    cache: ReferenceCache | str | Path | None = None,
    cluster: str | None = None,
    **options: Any,
) -> Report:
    """Audit a fitted classifier held in memory; the same report, for the same data and seed, as
    ``audit(path)`` of a bundle holding it.

    Parameters
    ----------
    estimator:
        A fitted classifier with ``predict_proba``, ``decision_function`` or ``predict`` (the audit uses the
        first it has; ``target.py``). It runs in this process: no sandbox.
    members, non_members:
        DataFrames with the feature columns and the label column, ``(n_members, n_features + 1)`` and
        ``(n_non_members, n_features + 1)``.
    progress, workers, max_memory_mb, timeout, cache:
        As for ``mia_robustness.audit``.
    cluster:
        A Dask scheduler's address (``tcp://HOST:PORT``): the sweep's cells run on its workers. The
        estimator never leaves this process, so its reference and what-if fits run here.
    **options:
        Audit options by name (``repeats=1``, ``proportions="0.5,1"``, ``label_column="income"``...).
    """
    for frame, role in ((members, "members"), (non_members, "non_members")):
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"{role} must be a pandas DataFrame, got {type(frame).__name__}")
    audit_options = options_from_mapping(options)
    deadline = Deadline(timeout)
    clock = Stopwatch(progress, deadline)
    model_bytes = len(pickle.dumps(estimator)) if max_memory_mb is not None else 0
    stage = InProcessModel(estimator, members, non_members, saved_version=None, progress=clock.progress)
    cache = as_cache(cache)
    uses_reference = any(REGISTRY[a].kind == "reference" for a in audit_options.attack_models)
    workers = workers or default_workers()
    try:
        executor = open_executor(cluster, workers, ("mia_robustness.sweep",), deadline)
        try:
            return run_audit(
                stage,
                audit_options,
                layout="in-memory",
                model_file_bytes=model_bytes,
                workers=workers,
                max_memory_mb=max_memory_mb,
                deadline=deadline,
                clock=clock,
                cache=cache,
                cache_identity=estimator_identity(estimator, (members, non_members))
                if cache is not None and uses_reference
                else None,
                executor=executor,
            )
        finally:
            executor.close()
    finally:
        stage.close()


def run_audit(
    model: ModelStage,
    options: AuditOptions,
    *,
    layout: str,
    model_file_bytes: int,
    workers: int,
    max_memory_mb: float | None,
    deadline: Deadline,
    clock: Stopwatch,
    cache: ReferenceCache | None = None,
    cache_identity: str | None = None,
    executor: Executor | None = None,
    boundary_max_rows: int = BOUNDARY_DEFAULT_MAX_ROWS,
) -> Report:
    """Score the target through ``model``, attack its answers, and assemble the report.

    Parameters
    ----------
    model:
        Where the target runs (a sandbox child, or this process for a trusted estimator).
    options:
        The audit's options.
    layout:
        The bundle layout, for the report (``in-memory`` for :func:`audit_estimator`).
    model_file_bytes:
        Size of the serialised model, for the memory estimate.
    workers:
        Threads for the sweep and the reference fits.
    max_memory_mb:
        Refuse the audit when its estimated peak memory is above this (``None``: no limit).
    deadline:
        The time limit; checked between cells and stages.
    clock:
        The audit's stopwatch, started by the caller (its progress callback too).
    cache, cache_identity:
        Where the reference models' answers are kept between audits, and the digest of the model and
        tables they answer for (``reference_cache``); either ``None``: no cache.
    executor:
        Where the sweep's cells run (``executor.py``): threads in this process when ``None``. With a
        cluster, the defaults that cost reference fits scale with its slots (:func:`scaled_for_cluster`).
    boundary_max_rows:
        Rows per side above which the default attacks leave boundary out for a target answering
        probabilities or margins (:meth:`ScoreRequest.boundary_queries_for`); attacks named by the user run.
    """
    if options.reference_recipe is not None:  # a bad class or parameter is refused now, before any work
        build_recipe(options.reference_recipe.to_dict())
    executor = executor or ThreadExecutor(workers)
    # Only a model stage whose fits run on the cluster makes more of them cheap (audit_estimator's stay here).
    fits_spread = executor.cluster is not None and getattr(model, "fits_on_cluster", False)
    options, resolved_cluster = scaled_for_cluster(options, executor, fits_spread)
    on_progress = clock.progress
    lap = clock.lap
    timings = clock.timings
    boundary_queries = options.boundary_queries if "boundary" in options.attack_models else 0
    boundary_limit = None if "attack_models" in options.explicit else boundary_max_rows
    scored = model.score(
        ScoreRequest(options.label_column, options.seed, boundary_queries, boundary_limit, threads=workers)
    )
    if max_memory_mb is not None:
        estimate = estimate_peak_memory_mb(
            scored.rows_per_side,
            scored.table_bytes,
            scored.label_classes,
            model_file_bytes,
            options,
            workers,
            helpers=len(executor.helpers) if isinstance(executor, PipeExecutor) else 0,
        )
        if estimate > max_memory_mb:
            raise LimitError(
                f"this audit would need about {estimate:,.0f} MB of memory, over the limit of {max_memory_mb:,.0f} MB; "
                "audit fewer rows (subsample train/subject), fewer reference_models, or raise the limit",
                code="memory_limit",
            )
    attacks, left_out = attacks_for_kind(options, scored.output_kind)
    supplied = scored.outputs_source == "supplied"
    no_model = None
    if supplied:
        attacks, no_model = attacks_without_model(options, attacks, scored.output_kind)
    reference = [a for a in attacks if REGISTRY[a].kind == "reference"]
    boundary_note = None
    if "boundary" in attacks and scored.robustness is None:  # the model's side applied the row limit
        attacks.remove("boundary")
        boundary_note = (
            f"boundary was left out: with more than {boundary_max_rows:,} rows per side it would query the "
            f"model on {options.boundary_queries} perturbed copies of every row, and a model that gives "
            f"{SERVED[scored.output_kind]} is measured by the other attacks (gap gives the labels-only row); "
            "ask for it with attack_models to run it"
        )
    # Resolved only once the attacks that will run are known: a label-only target leaves out nn (the only
    # device user), so a --device cuda without CUDA is no error there.
    device = resolve_device(options.device) if any(REGISTRY[a].uses_device for a in attacks) else "cpu"

    # The data-sanity step, before any attack: swapped tables are refused here (shared rows were, where the
    # tables were aligned), and what it found goes to the report.
    sanity = sanity_findings(
        as_probabilities(scored.outputs, scored.output_kind),
        scored.label_index,
        scored.is_member,
        RowOverlap(
            scored.members_shared, scored.non_members_shared, [list(p) for p in scored.shared_examples]
        ),
        (scored.members_available, scored.non_members_available),
        allow_swapped=options.allow_swapped,
    )

    signals = compute_signals(scored.outputs, scored.label_index, scored.output_kind, scored.robustness)
    inputs = AttackInput(signals.features, signals.scores, signals.label_index, signals.label_scores)
    lap("signals")

    learned = [a for a in attacks if REGISTRY[a].kind == "learned"]
    notes = list(sanity.warnings) + [note for note in (left_out, no_model, boundary_note) if note]
    if reference and not scored.has_recipe and options.reference_recipe is None:
        notes.append(
            f"{' and '.join(reference)} were left out: the model ({scored.estimator_class}) carries no training "
            'recipe to retrain; name one in config.json to run them, e.g. "reference_recipe": {"estimator": '
            '"RandomForestClassifier", "params": {"n_estimators": 100}}'
        )
        reference = []
    max_rows = REFERENCE_DEFAULT_MAX_ROWS * (executor.slots if fits_spread else 1)
    if reference and "attack_models" not in options.explicit and scored.rows_per_side > max_rows:
        # Each reference model costs one training of the target's recipe on as many rows; above this size
        # the default audit would be dominated by them, so they run only when asked for.
        notes.append(
            f"lira and rmia were skipped: with more than {max_rows:,} rows per side they retrain the "
            "model's recipe many times; ask for them with attack_models to run them"
        )
        reference = []
    # The repeats, their evaluation rows and the seed: the same for the sweep and the reference stage.
    repeat_plan = {"repeats": options.repeats, "eval_fraction": options.eval_fraction, "seed": options.seed}

    def sweep() -> list:
        if not learned:
            return []
        deadline.check("attacks")
        started = time.perf_counter()
        swept = run_sweep(
            inputs,
            scored.is_member,
            proportions=options.proportions,
            attacks=learned,
            device=device,
            workers=workers,
            progress=on_progress,
            executor=executor,
            **repeat_plan,
        )
        clock.record("attacks", started)
        return swept

    ran = tuple(a for a in attacks if REGISTRY[a].kind != "reference" or a in reference)

    def model_work() -> tuple[list, Remediation]:
        """The reference stage, then the what-if (its default rule weighs the reference stage's own time)."""
        reference_cells = []
        if reference:
            deadline.check("reference_attacks")
            started = time.perf_counter()
            request = ReferenceRequest(
                attacks=tuple(reference),
                proportion=max(options.proportions),
                n_models=options.reference_models,
                workers=executor.slots if fits_spread else workers,
                recipe=None if options.reference_recipe is None else options.reference_recipe.to_dict(),
                **repeat_plan,
            )
            fit_sets = request.fit_sets(scored.is_member)
            reference_cells = score_reference_cells(
                fit_sets,
                cached_answers(model, request, fit_sets, clock, cache, cache_identity, options),
                signals.scores["confidence"],
                scored.is_member,
                attacks=request.attacks,
                proportion=request.proportion,
                eval_fraction=request.eval_fraction,
                seed=request.seed,
            )
            clock.record("reference_attacks", started)
        deadline.check("what_if")
        started = time.perf_counter()
        left, reference_took = deadline.remaining(), timings.get("reference_attacks")
        section = what_if_section(
            model.what_if,
            scored,
            options,
            reference_runs=bool(reference),
            workers=workers,
            time_short=left is not None and reference_took is not None and left < reference_took,
            outputs_supplied=supplied,
        )
        if section.status == "ran":
            clock.record("what_if", started)
        return reference_cells, section

    eval_rows = _evaluation_rows(scored.is_member, options)
    if overlap_pays(model, executor, workers, inputs, learned, reference or options.what_if is True):
        timings["attacks"] = 0.0  # the report lists the stages in the sequence's order, whichever ends first
        swept, (reference_cells, remediation) = run_beside(sweep, model_work, deadline)
    else:
        swept = sweep()
        reference_cells, remediation = model_work()
    cells = swept + reference_cells
    report = assemble_report(
        cells,
        scored,
        signals,
        # The settings a user passes back to reproduce the audit name the attacks that ran: passed back,
        # attack_models is named, and a named attack runs past the row limits that left it out here.
        dataclasses.replace(options, attack_models=ran) if ran != options.attack_models else options,
        eval_rows=eval_rows,
        layout=layout,
        device=device,
        notes=notes,
        containment=model.containment,
        timings=timings,
        started=clock.started,
    )
    if resolved_cluster:
        resolved_cluster["reference_max_rows"] = max_rows
        report = dataclasses.replace(report, resolved={**report.resolved, "cluster": resolved_cluster})
    # A swap warning puts every figure in doubt: the summary opens with it.
    doubts = [text[0].upper() + text[1:] + "." for text in sanity.warnings if text.startswith("did you swap")]
    what_if = summary_sentence(remediation)
    sentences = doubts + list(report.summary.sentences) + ([what_if] if what_if else [])
    if supplied:
        sentences.append(SUPPLIED_SENTENCE)
    return dataclasses.replace(
        report,
        data=dataclasses.replace(report.data, sanity=sanity),
        summary=dataclasses.replace(report.summary, sentences=sentences),
        remediation=remediation,
    )


# Coarse memory model (bench/ prints it beside the measured peak): the interpreter with torch and
# scikit-learn loaded, the tables and their copies, the per-row signals and each concurrent cell's
# slices, the attack forests, and the reference clones of the target.
BASELINE_MB = 450
TABLE_COPIES = 4
FOREST_BYTES_PER_TRAINING_ROW = 2_000  # 100 trees, leaves of >= 5 rows, ~2 nodes per leaf, ~100 B per node
MODEL_IN_MEMORY_PER_FILE_BYTE = 4  # pickles are compressed or compact; fitted models unfold on load
# The terms above came out at 0.80-0.94 of the measured peak RSS in bench/ (Adult 10k, synthetic 10k-100k):
# this factor makes the estimate an upper end, as a limit check needs.
SAFETY_FACTOR = 1.3
# A sweep helper process (the server's: forked, sharing the engine's pages with its forkserver) holds its own
# copy of the signals and splits and one cell's working set; 32 MB private measured on a busy test bundle.
HELPER_MB = 40


def estimate_peak_memory_mb(
    rows_per_side: int,
    table_bytes: int,
    n_classes: int,
    model_file_bytes: int,
    options: AuditOptions,
    workers: int,
    helpers: int = 0,
) -> float:
    """An upper-end estimate of an audit's peak resident memory in MB, from sizes known before it attacks,
    its sweep helper processes (``helpers``, :class:`~mia_robustness.executor.PipeExecutor`) included.

    Parameters
    ----------
    rows_per_side:
        Rows audited per side (after balancing).
    table_bytes:
        In-memory size of both tables as read (``DataFrame.memory_usage(deep=True)``).
    n_classes:
        Distinct labels in the members table.
    """
    rows = 2 * rows_per_side
    n_classes = max(n_classes, 2)
    signal_bytes = rows * (min(n_classes, 10) + 6 + min(n_classes, 100)) * 4
    pool_rows = (1 - options.eval_fraction) * rows * max(options.proportions)
    concurrent = min(workers, len(options.attack_models) * len(options.proportions) * options.repeats)
    total = TABLE_COPIES * table_bytes + signal_bytes * (2 + 2 * concurrent) + rows * n_classes * 8
    if "rf" in options.attack_models:
        total += (
            min(concurrent, options.repeats * len(options.proportions))
            * pool_rows
            * FOREST_BYTES_PER_TRAINING_ROW
            / 10
        )
    if any(REGISTRY[a].kind == "reference" for a in options.attack_models):
        total += min(workers, options.reference_models) * model_file_bytes * MODEL_IN_MEMORY_PER_FILE_BYTE
    total += helpers * (HELPER_MB * 2**20 + 3 * signal_bytes)
    return SAFETY_FACTOR * (BASELINE_MB + total / 2**20)


def _evaluation_rows(is_member: np.ndarray, options: AuditOptions) -> np.ndarray:
    """The first repeat's evaluation rows (the same split the sweep and reference stage used)."""
    return split_for_repeat(is_member, options.eval_fraction, options.seed, 0).evaluation
