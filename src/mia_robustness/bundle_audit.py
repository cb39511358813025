"""``audit(path)``: the entry point every shell calls. Open the bundle, put its model behind the sandbox (or,
for a predictions bundle, its supplied outputs behind :class:`~mia_robustness.supplied.SuppliedOutputs`),
run the engine. Bundle in, :class:`Report` out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .archive import BundleLimits
from .attacks import REGISTRY
from .bundle import open_bundle
from .deadline import Deadline
from .engine import ModelStage, Stopwatch, run_audit
from .executor import WORKER_PRELOAD, Executor, open_executor
from .options import AuditOptions, options_from_mapping
from .predictions import PREDICTIONS_KEY
from .recipe_spec import build_recipe
from .reference_cache import ReferenceCache, as_cache, files_identity
from .report import Report
from .sandbox.cluster import on_cluster, start_worker_children, stop_worker_children
from .sandbox.session import default_address_space_mb, open_model
from .sandbox.stage import ModelFiles
from .supplied import SuppliedOutputs
from .sweep import default_workers
from .tables import read_table
from .target import ScoreRequest

ProgressCallback = Callable[[str, int, int], None]


def resolve_options(
    config: Mapping[str, Any], overrides: Mapping[str, Any] | AuditOptions | None
) -> AuditOptions:
    """Defaults <- the bundle's ``config.json`` <- the caller's overrides (an AuditOptions wins outright).

    ``config.json``'s ``predictions`` section says where the model's outputs are, not how to audit them: the
    bundle reader parsed it (``Bundle.predictions``), the options skip it. A ``reference_recipe`` is built
    now (unfitted, its values checked by its class's own rules): a bad class, parameter or value is refused
    before the model is loaded, not at refit time deep into the audit."""
    if isinstance(overrides, AuditOptions):
        options = overrides
    else:
        config = {name: value for name, value in config.items() if name != PREDICTIONS_KEY}
        options = options_from_mapping(overrides, base=options_from_mapping(config))
    if options.reference_recipe is not None:
        build_recipe(options.reference_recipe.to_dict())
    return options


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
    cache: ReferenceCache | str | Path | None = None,
    cluster: str | None = None,
    helpers: Sequence[Any] = (),
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
        Refuse the audit (``LimitError``, code ``memory_limit``) when :func:`~mia_robustness.engine.estimate_peak_memory_mb` of
        the bundle exceeds this, before any attack runs; ``None`` means no limit.
    timeout:
        Stop the audit after this many seconds (``LimitError``, code ``audit_timeout``, naming the stage
        it was in); ``None`` for no limit.
    sandbox:
        Load, score and refit the model in a confined child process (see ``sandbox/``). ``False`` runs
        the model's code in this process: only for models you trust.
    sandbox_memory_mb:
        The sandbox child's address-space limit; ``None`` for an estimate from the bundle's sizes.
    cache:
        A folder (or :class:`~mia_robustness.reference_cache.ReferenceCache`) where the reference models'
        answers are kept, so that auditing the same files with the same seed and reference settings again
        reuses them instead of retraining the recipe; ``None`` (the default): no cache.
    cluster:
        A Dask scheduler's address (``tcp://HOST:PORT``): the sweep's cells, the reference fits and the
        what-if's fits run on its workers, the model's in a sandboxed child there (``sandbox/cluster.py``).
        ``None`` (the default): everything runs here, and Dask is not imported.
    helpers:
        Pipes (:class:`multiprocessing.connection.Connection`) to helper processes that serve the sweep's
        cells (:func:`~mia_robustness.executor.serve_units`) beside this process's one thread when the
        cells are too small to gain from threads (few distinct signal rows). The server starts them from
        its forkserver for CPUs no other audit is using. Ignored with a ``cluster``.
    """
    deadline = Deadline(timeout)
    clock = Stopwatch(progress, deadline)
    workers = workers or default_workers()
    # Connect first: an unreachable scheduler is said within seconds, before any unpacking or loading.
    executor = open_executor(cluster, workers, WORKER_PRELOAD, deadline, helpers)
    try:
        return _audit_on(
            executor,
            source,
            overrides,
            clock,
            limits,
            workdir,
            workers,
            max_memory_mb,
            sandbox,
            sandbox_memory_mb,
            cache,
        )
    finally:
        executor.close()


def _audit_on(
    executor: Executor,
    source: str | Path | bytes,
    overrides: Mapping[str, Any] | AuditOptions | None,
    clock: Stopwatch,
    limits: BundleLimits | None,
    workdir: str | Path | None,
    workers: int,
    max_memory_mb: float | None,
    sandbox: bool,
    sandbox_memory_mb: int | None,
    cache: ReferenceCache | str | Path | None,
) -> Report:
    deadline = clock.deadline
    with open_bundle(source, limits=limits, workdir=workdir) as bundle:
        options = resolve_options(bundle.config, overrides)
        layout = bundle.layout
        cache = as_cache(cache)
        identity = None
        model: ModelStage
        if bundle.predictions is not None:
            # No model: nothing of the user's runs, so nothing to contain. The tables are read now, before
            # the bundle's temporary folder goes.
            model_file_bytes = 0
            model = SuppliedOutputs(
                bundle.predictions,
                read_table(bundle.members_path, "members"),
                read_table(bundle.non_members_path, "non-members"),
                progress=clock.progress,
            )
        else:
            model_file_bytes = bundle.model_path.stat().st_size
            uses_reference = any(REGISTRY[a].kind == "reference" for a in options.attack_models)
            # The sandbox copies the files it needs, and in-process loading reads them now: the bundle's
            # temporary folder can go when this block ends.
            files = ModelFiles(
                bundle.model_path, bundle.members_path, bundle.non_members_path, options.classes
            )
            # The workers' sandboxed children cost a start and a scoring each: only when there are fits to
            # spread (LiRA / RMIA, or a what-if asked for; by default it runs only beside them). They start
            # before the audit's own child loads the model, and load beside it.
            spread = sandbox and executor.cluster is not None and (uses_reference or options.what_if is True)
            n_models = options.reference_models if uses_reference else 0
            if spread and sandbox_memory_mb is None:  # the workers' children get the audit child's limit
                sandbox_memory_mb = default_address_space_mb(files, workers, n_models, max_memory_mb)
            score = ScoreRequest(options.label_column, options.seed)  # as run_audit will score
            payload = (
                start_worker_children(executor, files, score, deadline, sandbox_memory_mb) if spread else None
            )
            try:
                model = open_model(
                    files,
                    sandbox=sandbox,
                    deadline=deadline,
                    progress=clock.progress,
                    work_parent=None if workdir is None else Path(workdir),
                    threads=workers,
                    address_space_mb=sandbox_memory_mb,
                    n_models=n_models,
                    max_memory_mb=max_memory_mb,
                )
            except BaseException:
                if payload is not None:
                    stop_worker_children(executor)
                raise
            if payload is not None:
                model = on_cluster(model, executor, payload, score, clock.progress)
            if cache is not None and uses_reference:
                identity = files_identity([bundle.model_path, bundle.members_path, bundle.non_members_path])
    try:
        return run_audit(
            model,
            options,
            layout=layout,
            model_file_bytes=model_file_bytes,
            workers=workers,
            max_memory_mb=max_memory_mb,
            deadline=deadline,
            clock=clock,
            cache=cache,
            cache_identity=identity,
            executor=executor,
        )
    finally:
        model.close()
