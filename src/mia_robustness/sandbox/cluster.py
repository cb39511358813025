"""The model stage with a Dask cluster attached: the model's fits run on the workers, each in a sandbox there.

The audit's own sandbox child (:class:`~.session.SandboxedModel`) still loads and scores the target and
plans the what-if. The reference fits are the engine's fit sets (``ReferenceRequest.fit_sets``: the same
rows as in one process), one task per (fit set, model). The bundle's three files are shipped to every
worker once (:class:`ModelPayload`, scattered). A task's worker keeps one sandboxed child per worker thread
for the audit (started on its first task: the files written into that child's private folder, the tables
prepared and scored exactly as here) and asks it for that one fit; the child answers with checked arrays
only (true-class confidences, and for the what-if correctness too). The engine computes LiRA / RMIA
(``reference.score_reference_cells``) and the what-if's figures from those arrays, as it would from the
audit's own child's, and its reference-answer cache sits above :meth:`ClusterModel.reference_answers`.
A worker never loads the model itself.

The children of an audit are stopped when it ends (:meth:`ClusterModel.close`, through ``Client.run``),
and without the audit's help when it cannot say so (killed, or its connection lost): the audit's payload is
scattered under a key of its own (:func:`payload_key`), which the scheduler forgets when the audit's client
goes, and a watcher thread in each worker that holds children asks the scheduler every
:data:`WATCH_SECONDS` whether it still has that key (:func:`_watch_audits`). A child is killed within
:data:`WATCH_SECONDS` (plus one answer from the scheduler) of the scheduler seeing the client go, which it
does as the connection closes. A worker's child also stops at the audit's own deadline, not a full time
limit after it started: the payload carries the limit's end on the wall clock.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..deadline import Deadline
from ..errors import ModelError
from ..reference import FitSet, ReferenceRequest
from ..remediation import WhatIfFits, WhatIfRequest
from ..target import ScoredTarget, ScoreRequest
from .session import SandboxedModel
from .spare import SpareChild
from .stage import ModelFiles


@dataclass(frozen=True)
class ModelPayload:
    """What a worker's sandbox needs, shipped once per audit: the three files (names kept, the loader reads
    the model's suffix), config.json's class names for a native booster, how the audit scores them, and
    the limits of the audit's own child: its address space, its time limit (``limit``, seconds) and when
    that ends (``ends_at``, ``time.time()`` on the audit's machine)."""

    audit: str
    names: tuple[str, str, str]
    contents: tuple[bytes, bytes, bytes]
    classes: tuple | None
    score: ScoreRequest
    address_space_mb: int
    limit: float | None
    ends_at: float | None

    def deadline(self) -> Deadline:
        """The audit's deadline on this machine (a worker's clock, which NTP keeps near the audit's)."""
        deadline = Deadline(self.limit)
        if self.ends_at is not None:
            deadline.ends = time.monotonic() + (self.ends_at - time.time())
        return deadline


def payload_key(audit: str) -> str:
    """The Dask key of ``audit``'s payload: held by the scheduler while the audit's client is."""
    return f"mia-payload-{audit}"


def _prepared_digest(scored: ScoredTarget) -> str:
    """The rows a child prepared (membership and label of each): a worker's child must prepare the same
    rows as the audit's own, or its fits would be of other rows."""
    digest = hashlib.sha256(np.ascontiguousarray(scored.is_member, dtype=np.int8).tobytes())
    digest.update(np.ascontiguousarray(scored.label_index, dtype=np.int64).tobytes())
    return digest.hexdigest()


# ---- the worker's side -----------------------------------------------------------------------------------

# In a worker process: (audit, worker thread) -> that thread's sandboxed child for the audit, and the
# digest of the rows it prepared.
_CHILDREN: dict[tuple[str, int], tuple[SandboxedModel, str]] = {}
_CHILDREN_LOCK = threading.Lock()
# How often a worker holding children asks the scheduler whether their audits still run.
WATCH_SECONDS = 1.0
# Asks the scheduler may fail in a row (it restarts, the network hiccups) before the audits are taken as gone.
WATCH_FAILURES = 3
_watcher: threading.Thread | None = None  # the worker's watcher, while it holds children
# A child started ahead for the worker's next audit (its imports done): the first child an audit starts here
# takes it, and another is started once that audit's children are stopped. Made by dask_setup when the
# worker preloads this module (`dask worker --preload mia_robustness.sandbox.cluster`), else after the
# worker's first audit.
_spare: SpareChild | None = None
_spare_starter: threading.Thread | None = None  # the thread starting the next spare, if any
_SPARE_LOCK = threading.Lock()


def dask_setup(worker: Any) -> None:
    """Dask's hook for a preloaded module: a sandbox child ready before the worker's first audit."""
    _replace_spare()


def _replace_spare() -> None:
    """Start a spare child in the background unless one waits already (:func:`_discard_spare` ends it at
    the worker's exit)."""

    def start() -> None:
        global _spare
        spare = SpareChild.start(threads=1)
        with _SPARE_LOCK:  # the only starter: no other spare can have come meanwhile
            _spare = spare

    global _spare_starter
    with _SPARE_LOCK:
        if _spare is not None or (_spare_starter is not None and _spare_starter.is_alive()):
            return  # one waits, or is on its way
        _spare_starter = threading.Thread(target=start, name="mia-spare-child", daemon=True)
        _spare_starter.start()


def _take_spare() -> SpareChild | None:
    global _spare
    with _SPARE_LOCK:
        spare, _spare = _spare, None
    return spare


@atexit.register
def _discard_spare() -> None:
    starter = _spare_starter
    if starter is not None:
        starter.join(10)  # a spare being started as the worker exits is discarded too
    spare = _take_spare()
    if spare is not None:
        spare.discard()


def _child(payload: ModelPayload, prepared: str | None) -> tuple[tuple[str, int], SandboxedModel]:
    """This worker thread's child for ``payload``'s audit, started (and the tables scored) on first use;
    checked to have prepared the rows of digest ``prepared`` (``None``: not yet known)."""
    key = (payload.audit, threading.get_ident())
    with _CHILDREN_LOCK:
        found = _CHILDREN.get(key)
    if found is None:
        found = _start_child(payload)
        with _CHILDREN_LOCK:
            _CHILDREN[key] = found
        _ensure_watcher()
    child, digest = found
    if prepared is not None and digest != prepared:
        _drop(key)
        raise ModelError(
            "the model's sandbox on a cluster worker prepared other rows than the audit's own; the "
            "model's answers depend on where it runs, so the audit was stopped",
            code="model_protocol_violation",
        )
    return key, child


def _start_child(payload: ModelPayload) -> tuple[SandboxedModel, str]:
    folder = Path(tempfile.mkdtemp(prefix="mia-worker-"))
    try:
        paths = []
        for role, name, content in zip(
            ("model", "members", "non_members"), payload.names, payload.contents, strict=True
        ):
            path = folder / role / name
            path.parent.mkdir()
            path.write_bytes(content)
            paths.append(path)
        # The child copies the files into its own private folder; this one goes when it has.
        child = SandboxedModel(
            ModelFiles(*paths, payload.classes),
            work_parent=None,
            threads=1,
            address_space_mb=payload.address_space_mb,
            deadline=payload.deadline(),
            progress=lambda stage, done, total: None,
            spare=_take_spare(),
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    try:
        return child, _prepared_digest(child.score(payload.score))
    except BaseException:
        _stop(child)
        raise


def _stop(child: SandboxedModel) -> None:
    """Kill ``child`` at once (it may be busy with a fit nobody waits for) and remove its folder."""
    with contextlib.suppress(OSError):
        child.process.kill()
    child.close()


def _drop(key: tuple[str, int]) -> None:
    with _CHILDREN_LOCK:
        found = _CHILDREN.pop(key, None)
    if found is not None:
        _stop(found[0])


def _ensure_watcher() -> None:
    """Start this worker's watcher (:func:`_watch_audits`) unless it runs; from a task's thread."""
    global _watcher
    from distributed import get_worker

    worker = get_worker()
    with _CHILDREN_LOCK:
        if _watcher is None:
            _watcher = threading.Thread(target=_watch_audits, args=(worker,), name="mia-watch", daemon=True)
            _watcher.start()


def _watch_audits(worker: Any) -> None:
    """In a worker process, while it holds children: every :data:`WATCH_SECONDS`, stop those of the audits
    whose payload the scheduler no longer has (their client closed, was killed or lost its connection),
    and those of every audit once the scheduler has not answered :data:`WATCH_FAILURES` times in a row."""
    global _watcher
    from distributed.utils import sync

    failures = 0
    while True:
        time.sleep(WATCH_SECONDS)
        with _CHILDREN_LOCK:
            audits = sorted({key[0] for key in _CHILDREN})
            if not audits:
                _watcher = None  # the next child starts another
                return
        try:
            held = sync(
                worker.loop,
                worker.scheduler.who_has,
                keys=[payload_key(audit) for audit in audits],
                callback_timeout=5 * WATCH_SECONDS,
            )
            failures = 0
        except Exception:  # the scheduler or the worker's loop is gone or slow
            failures += 1
            if failures < WATCH_FAILURES:
                continue
            held = {}
        for audit in audits:
            if not held.get(payload_key(audit)):
                close_children(audit)


def _in_child(payload: ModelPayload, prepared: str, ask: Any) -> Any:
    """``ask(child)`` in this thread's child; a child that failed is stopped, never asked again."""
    key, child = _child(payload, prepared)
    try:
        return ask(child)
    except BaseException:
        _drop(key)
        raise


def start_child_task(payload: ModelPayload) -> None:
    """Warm-up task: start this worker's child for the audit while the audit's own child loads and scores.
    A failure here is said again, and raised, by the first fit that needs the child."""
    with contextlib.suppress(Exception):
        _child(payload, None)


def fit_reference_task(
    job: tuple[int, int],
    payload: ModelPayload,
    prepared: str,
    request: ReferenceRequest,
    pool_rows: list[int],
) -> np.ndarray:
    """Task: reference model ``k`` of fit set ``i`` (``job``), fitted in this worker's sandbox; its
    true-class confidences ``(1, pool_rows[i])`` on the set's pool."""
    return _in_child(
        payload, prepared, lambda child: child.reference_fits(request, [job], [pool_rows[job[0]]])[0]
    )


def fit_what_if_task(
    job: tuple[int, int], payload: ModelPayload, prepared: str, request: WhatIfRequest
) -> WhatIfFits:
    """Task: the what-if's config ``c``, ``k``-th model (``job``), fitted in this worker's sandbox."""
    return _in_child(payload, prepared, lambda child: child.what_if_fits(request, [job]))


def close_children(audit: str) -> int:
    """In a worker process: stop the children of ``audit``; how many there were."""
    with _CHILDREN_LOCK:
        keys = [key for key in _CHILDREN if key[0] == audit]
        children = [_CHILDREN.pop(key)[0] for key in keys]
    for child in children:
        _stop(child)
    if children:
        # The next audit's child starts now, while this worker is idle: started as a child was taken, its
        # imports took the CPU the running audit's fits wanted (bench/cluster.py, two workers on two cores:
        # the reference stage only 1.0-1.4x faster than one worker's, against 1.8x now).
        _replace_spare()
    return len(children)


# ---- the audit's side ------------------------------------------------------------------------------------


def start_worker_children(
    executor: Any, files: ModelFiles, score: ScoreRequest, deadline: Deadline, address_space_mb: int
) -> Any:
    """Ship the bundle's files to every worker once and start each worker's child for the audit; the payload's
    handle (for :func:`on_cluster`).

    Called before the audit's own child loads the model, so that the workers' children start, load and score
    beside it (a few seconds each; the reference stage would otherwise begin by waiting for them).
    ``address_space_mb`` is the audit's own child's limit, which the workers' children get too.
    """
    payload = ModelPayload(
        audit=executor.token,
        names=(files.model.name, files.members.name, files.non_members.name),
        contents=(files.model.read_bytes(), files.members.read_bytes(), files.non_members.read_bytes()),
        classes=files.classes,
        score=score,
        address_space_mb=address_space_mb,
        limit=deadline.seconds,
        ends_at=None if deadline.ends is None else time.time() + deadline.remaining(),
    )
    handle = executor.share(payload, key=payload_key(executor.token))
    executor.start_on_each_worker(start_child_task, handle)
    return handle


def stop_worker_children(executor: Any) -> None:
    """Stop the workers' children of the audit whose files :func:`start_worker_children` shipped (a cluster
    that went away has none left)."""
    with contextlib.suppress(Exception):
        executor.run_on_workers(close_children, executor.token)


class ClusterModel:
    """The model stage of an audit with a cluster attached (see the module docstring).

    Parameters
    ----------
    local:
        The audit's own sandbox child: loads and scores the target, plans the what-if.
    executor:
        The cluster's executor.
    payload:
        The handle :func:`start_worker_children` returned: the bundle's files on every worker.
    score:
        How the audit will score the target (its label column and seed), as the payload says.
    progress:
        The audit's progress callback.
    """

    fits_on_cluster = True  # the engine scales the reference stage's defaults with the cluster for it

    def __init__(
        self, local: SandboxedModel, executor: Any, payload: Any, score: ScoreRequest, progress: Any
    ) -> None:
        self.local = local
        self.executor = executor
        self.containment = local.containment
        self.progress = progress
        self._audit = executor.token
        self._score = score
        self._scored: ScoredTarget | None = None
        self._prepared = ""
        self._payload = payload

    def score(self, request: ScoreRequest) -> ScoredTarget:
        # The workers' children prepare the same rows (label and seed); the boundary attack's queries are
        # the audit's own child's alone.
        if (request.label_column, request.seed) != (self._score.label_column, self._score.seed):
            raise RuntimeError("the workers' children were started for another score request")
        scored = self.local.score(request)
        self._scored = scored
        self._prepared = _prepared_digest(scored)
        return scored

    def reference_answers(self, request: ReferenceRequest, fit_sets: list[FitSet]) -> list[np.ndarray]:
        """Each fit set's answers ``(n_models, len(pool))``, one task per (set, model) on the workers, each
        checked by the worker's side as the audit's own child's answers are (``answers_from_message``)."""
        self._require_scored()
        n_models = request.n_models
        jobs = [(i, k) for i in range(len(fit_sets)) for k in range(n_models)]
        answers = self.executor.map(
            fit_reference_task,
            jobs,
            shared=(self._payload, self._prepared, request, [len(s.pool) for s in fit_sets]),
            on_done=lambda done: self.progress("reference_models", done, len(jobs)),
            name="reference",
        )
        return [np.vstack(answers[i * n_models : (i + 1) * n_models]) for i in range(len(fit_sets))]

    def what_if(self, request: WhatIfRequest) -> WhatIfFits:
        if not request.fit:
            return self.local.what_if(request)
        planned = self.local.what_if_fits(request, [])  # the plan, checked; no fits here
        m, rows = request.models_per_config, len(self._require_scored().is_member)
        if planned.skipped is not None:
            return planned
        jobs = [(c, k) for c in range(len(planned.plan.configs)) for k in range(m)]
        parts = self.executor.map(
            fit_what_if_task,
            jobs,
            shared=(self._payload, self._prepared, request),
            on_done=lambda done: self.progress("what_if", done, len(jobs)),
            name="what_if",
        )
        for part in parts:
            if part.skipped is not None:  # a fit failed or ran out of memory: the what-if gives way
                empty = np.zeros((0, m, rows))
                return WhatIfFits(planned.plan, part.skipped, empty, empty.astype(bool))
            if part.plan != planned.plan:
                raise ModelError(
                    "the model's sandbox on a cluster worker planned another what-if than the audit's own; "
                    "the audit was stopped",
                    code="model_protocol_violation",
                )
        shape = (len(planned.plan.configs), m, rows)
        confidence = np.concatenate([part.confidence for part in parts]).reshape(shape)
        correct = np.concatenate([part.correct for part in parts]).reshape(shape)
        return WhatIfFits(planned.plan, None, confidence, correct)

    def _require_scored(self) -> ScoredTarget:
        if self._scored is None:
            raise RuntimeError("score() comes first")
        return self._scored

    def close(self) -> None:
        try:
            stop_worker_children(self.executor)
        finally:
            self.local.close()


def on_cluster(model: Any, executor: Any, payload: Any, score: ScoreRequest, progress: Any) -> Any:
    """``model`` (the audit's sandbox child) with its fits moved to ``executor``'s cluster, whose workers
    hold ``payload`` (:func:`start_worker_children`); ``model`` itself when it is not sandboxed
    (``--no-sandbox``: the model never leaves this process)."""
    if not isinstance(model, SandboxedModel):
        return model
    return ClusterModel(model, executor, payload, score, progress)
