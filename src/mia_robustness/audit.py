"""``audit()``: the one entry point every shell calls. Bundle in, :class:`Report` out."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import sklearn

from . import __version__
from .archive import BundleLimits
from .attacks import ATTACK_DESCRIPTIONS, AttackInput, resolve_device
from .bundle import open_bundle
from .errors import LimitError
from .metrics import correctness_metrics, metric_intervals, per_class_metrics, rate_intervals, roc_points
from .options import LEARNED_ATTACKS, REFERENCE_ATTACKS, AuditOptions, options_from_mapping
from .reference import REFERENCE_VARIANTS
from .report import DataInfo, Report, ResultRow, TargetInfo, aggregate, strongest_row, summarise
from .sandbox import (
    Deadline,
    InProcessModel,
    ModelFiles,
    ReferenceRequest,
    SandboxedModel,
    ScoredTarget,
    ScoreRequest,
    open_model,
)
from .signals import compute_signals
from .sweep import CellResult, default_workers, run_sweep, split_for_repeat

ProgressCallback = Callable[[str, int, int], None]

_KNOWN_ROWS = "black-box outputs + known members and non-members"
_REFERENCE = "black-box outputs + known rows as reference data + the target's training recipe"
KNOWLEDGE = {name: _KNOWN_ROWS for name in LEARNED_ATTACKS} | {
    variant: _REFERENCE for variants in REFERENCE_VARIANTS.values() for variant, _online in variants
}
TOP_EXPOSED_RECORDS = 10
REFERENCE_DEFAULT_MAX_ROWS = 20_000


def resolve_options(
    config: Mapping[str, Any], overrides: Mapping[str, Any] | AuditOptions | None
) -> AuditOptions:
    """Defaults <- the bundle's ``config.json`` <- the caller's overrides (an AuditOptions wins outright)."""
    if isinstance(overrides, AuditOptions):
        return overrides
    return options_from_mapping(overrides, base=options_from_mapping(config))


def audit(
    source: str | Path | bytes,
    overrides: Mapping[str, Any] | AuditOptions | None = None,
    *,
    progress: ProgressCallback | None = None,
    limits: BundleLimits | None = None,
    workdir: str | Path | None = None,
    workers: int | None = None,
    max_memory_mb: float | None = None,
    timeout: float | None = None,
    sandbox: bool = True,
    sandbox_memory_mb: int | None = None,
) -> Report:
    """Audit the bundle at ``source`` and return its robustness report.

    Parameters
    ----------
    source:
        A bundle folder, an archive file (zip, tar, tar.gz) or an archive's bytes.
    overrides:
        Audit options (names as in :class:`AuditOptions`; strings accepted) laid over the bundle's
        ``config.json``; a complete :class:`AuditOptions` is used as it is.
    progress:
        Called as ``progress(stage, done, total)`` while the audit runs.
    limits:
        Unpacking limits for archives.
    workdir:
        Parent folder for the audit's private temporary folders, removed on every path.
    workers:
        Most threads for the attack sweep and the reference fits (all usable CPUs when ``None``).
    max_memory_mb:
        Refuse the audit (``LimitError``, code ``memory_limit``) when :func:`estimate_peak_memory_mb` of
        the bundle exceeds this, before any attack runs; ``None`` means no limit.
    timeout:
        Stop the audit after this many seconds (``LimitError``, code ``audit_timeout``, naming the stage
        it was in); ``None`` for no limit.
    sandbox:
        Load, score and refit the model in a confined child process (see ``sandbox/``). ``False`` runs
        the model's code in this process: only for models you trust.
    sandbox_memory_mb:
        The sandbox child's address-space limit; ``None`` for an estimate from the bundle's sizes.
    """
    report_progress = progress or (lambda stage, done, total: None)
    deadline = Deadline(timeout)
    workers = workers or default_workers()
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    started = clock

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now
        report_progress(stage, 1, 1)

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage in ("loading", "target_scoring") and done == total:
            lap(stage)  # the model stage's own steps, timed as they end
        else:
            report_progress(stage, done, total)
        deadline.check(stage)

    with open_bundle(source, limits=limits, workdir=workdir) as bundle:
        options = resolve_options(bundle.config, overrides)
        device = resolve_device(options.device) if "nn" in options.attack_models else "cpu"
        model_file_bytes = bundle.model_path.stat().st_size
        reference = [a for a in options.attack_models if a in REFERENCE_ATTACKS]
        model = open_model(
            ModelFiles(bundle.model_path, bundle.members_path, bundle.non_members_path),
            sandbox=sandbox,
            deadline=deadline,
            progress=on_progress,
            work_parent=None if workdir is None else Path(workdir),
            threads=workers,
            address_space_mb=sandbox_memory_mb,
            n_models=options.reference_models if reference else 0,
            max_memory_mb=max_memory_mb,
        )
        layout = bundle.layout
    try:
        return _audit_model(
            model,
            options,
            layout,
            device,
            model_file_bytes,
            reference,
            workers,
            max_memory_mb,
            deadline,
            on_progress,
            lap,
            timings,
            started,
        )
    finally:
        model.close()


def _audit_model(
    model: SandboxedModel | InProcessModel,
    options: AuditOptions,
    layout: str,
    device: str,
    model_file_bytes: int,
    reference: list[str],
    workers: int,
    max_memory_mb: float | None,
    deadline: Deadline,
    on_progress: ProgressCallback,
    lap: Callable[[str], None],
    timings: dict[str, float],
    started: float,
) -> Report:
    """The audit once the bundle is open: score the target, attack it, assemble the report."""
    scored = model.score(ScoreRequest(options.label_column, options.seed))
    if max_memory_mb is not None:
        estimate = estimate_peak_memory_mb(
            scored.rows_per_side, scored.table_bytes, scored.label_classes, model_file_bytes, options, workers
        )
        if estimate > max_memory_mb:
            raise LimitError(
                f"this audit would need about {estimate:,.0f} MB of memory, over the limit of {max_memory_mb:,.0f} MB; "
                "audit fewer rows (subsample train/subject), fewer reference_models, or raise the limit",
                code="memory_limit",
            )

    signals = compute_signals(scored.probabilities, scored.label_index)
    inputs = AttackInput(signals.features, signals.scores, signals.label_index)
    lap("signals")

    learned = [a for a in options.attack_models if a not in REFERENCE_ATTACKS]
    notes = []
    if (
        reference
        and "attack_models" not in options.explicit
        and scored.rows_per_side > REFERENCE_DEFAULT_MAX_ROWS
    ):
        # Each reference model costs one training of the target's recipe on as many rows; above this size
        # the default audit would be dominated by them, so they run only when asked for.
        notes.append(
            f"lira and rmia were skipped: with more than {REFERENCE_DEFAULT_MAX_ROWS:,} rows per side they retrain the "
            "model's recipe many times; ask for them with attack_models to run them"
        )
        reference = []
    cells = []
    if learned:
        deadline.check("attacks")
        cells += run_sweep(
            inputs,
            scored.is_member,
            proportions=options.proportions,
            attacks=learned,
            repeats=options.repeats,
            eval_fraction=options.eval_fraction,
            seed=options.seed,
            device=device,
            workers=workers,
            progress=on_progress,
        )
        lap("attacks")
    eval_rows = _evaluation_rows(scored.is_member, options)
    if reference:
        deadline.check("reference_attacks")
        request = ReferenceRequest(
            attacks=tuple(reference),
            proportion=max(options.proportions),
            repeats=options.repeats,
            eval_fraction=options.eval_fraction,
            n_models=options.reference_models,
            seed=options.seed,
            workers=workers,
        )
        cells += model.reference(request, len(eval_rows))
        lap("reference_attacks")

    results = aggregate(cells, KNOWLEDGE)
    target = _target_info(scored, signals.correct)
    n = scored.rows_per_side
    eval_per_side = cells[0].eval_rows // 2
    data_info = DataInfo(
        layout=layout,
        label_column=scored.label_column,
        feature_columns=scored.n_features,
        members_available=scored.members_available,
        non_members_available=scored.non_members_available,
        rows_per_side=n,
        balancing=scored.balancing,
        eval_rows_per_side=eval_per_side,
        attacker_pool_per_side=n - eval_per_side,
    )
    warnings = _warnings(target, data_info) + notes
    truth = scored.is_member[eval_rows]
    results = [
        dataclasses.replace(
            row, ci95=metric_intervals(truth, _first_cell(cells, row.attack_model, row.proportion).scores)
        )
        for row in results
    ]
    strongest = strongest_row(results)
    strongest_cell = _first_cell(cells, strongest.attack_model, strongest.proportion)
    intervals = rate_intervals(truth, strongest_cell.scores, np.random.default_rng([options.seed, 104729]))
    summary = summarise(results, target, ATTACK_DESCRIPTIONS, intervals)
    for attack in dict.fromkeys(c.attack for c in cells):
        timings[f"attack_{attack}_seconds"] = sum(c.seconds for c in cells if c.attack == attack)
    timings["total"] = time.perf_counter() - started
    settings = options.to_dict() | {"resolved_device": device}
    return Report(
        target=target,
        data=data_info,
        results=results,
        summary=summary,
        settings=settings,
        timings=timings,
        warnings=warnings,
        tool_version=__version__,
        per_class=per_class_metrics(
            truth, strongest_cell.scores, scored.label_index[eval_rows], scored.classes
        ),
        by_correctness=correctness_metrics(truth, strongest_cell.scores, signals.correct[eval_rows]),
        exposed_records=_exposed_records(
            strongest_cell, eval_rows, scored.is_member, scored.source_rows, strongest.mean
        ),
        curves=_curves(results, cells, truth),
        containment=dict(model.containment),
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


def estimate_peak_memory_mb(
    rows_per_side: int,
    table_bytes: int,
    n_classes: int,
    model_file_bytes: int,
    options: AuditOptions,
    workers: int,
) -> float:
    """An upper-end estimate of an audit's peak resident memory in MB, from sizes known before it attacks.

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
    if set(options.attack_models) & set(REFERENCE_ATTACKS):
        total += min(workers, options.reference_models) * model_file_bytes * MODEL_IN_MEMORY_PER_FILE_BYTE
    return SAFETY_FACTOR * (BASELINE_MB + total / 2**20)


def _evaluation_rows(is_member: np.ndarray, options: AuditOptions) -> np.ndarray:
    """The first repeat's evaluation rows (the same split the sweep and reference stage used)."""
    return split_for_repeat(is_member, options.eval_fraction, options.seed, 0).evaluation


def _first_cell(cells: list[CellResult], attack: str, proportion: float) -> CellResult:
    return next(c for c in cells if c.attack == attack and c.proportion == proportion and c.repeat == 0)


def _exposed_records(
    cell: CellResult, eval_rows: np.ndarray, is_member: np.ndarray, source_rows: np.ndarray, mean: dict
) -> dict[str, Any]:
    """The members the strongest attack is surest about, by their row number in the members table."""
    member_positions = np.flatnonzero(is_member[eval_rows] == 1)
    order = member_positions[np.argsort(-cell.scores[member_positions], kind="stable")][:TOP_EXPOSED_RECORDS]
    return {
        "attack_model": cell.attack,
        "proportion": cell.proportion,
        "members_evaluated": int(len(member_positions)),
        "share_of_members_at_1pct_fpr": mean["tpr_at_1pct_fpr"],
        "top": [{"row": int(source_rows[eval_rows[i]]), "score": float(cell.scores[i])} for i in order],
    }


def _curves(results: list[ResultRow], cells: list[CellResult], truth: np.ndarray) -> list[dict[str, Any]]:
    """ROC points of each attack model's strongest proportion (first repeat), for charts."""
    curves = []
    for attack in dict.fromkeys(r.attack_model for r in results):
        best = max((r for r in results if r.attack_model == attack), key=lambda r: r.mean["auc"])
        fpr, tpr = roc_points(truth, _first_cell(cells, attack, best.proportion).scores)
        curves.append({"attack_model": attack, "proportion": best.proportion, "fpr": fpr, "tpr": tpr})
    return curves


def _target_info(scored: ScoredTarget, correct: np.ndarray) -> TargetInfo:
    member_accuracy = float(correct[scored.is_member == 1].mean())
    non_member_accuracy = float(correct[scored.is_member == 0].mean())
    return TargetInfo(
        model_class=scored.model_class,
        estimator_class=scored.estimator_class,
        n_classes=len(scored.classes),
        n_features=scored.n_features,
        classes=[str(c) for c in scored.classes.tolist()],
        member_accuracy=member_accuracy,
        non_member_accuracy=non_member_accuracy,
        accuracy_gap=member_accuracy - non_member_accuracy,
        sklearn_version_saved=scored.saved_version,
        sklearn_version_runtime=sklearn.__version__,
    )


def _warnings(target: TargetInfo, data: DataInfo) -> list[str]:
    notes = []
    if target.sklearn_version_saved and target.sklearn_version_saved != target.sklearn_version_runtime:
        notes.append(
            f"the model was saved with scikit-learn {target.sklearn_version_saved} and is audited with "
            f"{target.sklearn_version_runtime}; its outputs may differ from production"
        )
    if data.balancing.startswith(("members", "non-members")):
        notes.append(f"tables were balanced: {data.balancing}")
    if data.eval_rows_per_side < 1000:
        notes.append(
            f"the evaluation set has {data.eval_rows_per_side} non-members, so TPR at 0.1% FPR is measured at zero "
            "false positives; it takes at least 1,000 (about 3,400 rows per side) to resolve 0.1%"
        )
    return notes
