"""The audit child process: what runs on the far side of :class:`~mia_robustness.serving.runner.AuditRunner`.

Each invocation's audit runs in its own process, forked from a ``forkserver`` that has imported the engine
(and torch) once, so that a crash, an out-of-memory kill or a runaway audit costs one request and never
the HTTP worker. (The model itself runs one level further down, in the audit's sandbox child.) Messages
to the parent travel over a pipe, one of the dataclasses below: :class:`Progress` while the audit runs,
then one :class:`Finished`, :class:`Refused` or :class:`Crashed`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

# Below the HTTP worker in CPU priority: with every core busy auditing, /ping still answers at once.
AUDIT_NICENESS = 10
# A helper process's name (``/proc/PID/comm``), so that ps and the server's tests tell it from audit children.
HELPER_NAME = b"mia-helper"
_PR_SET_NAME = 15
# Exit status when the parent went away: the audit is abandoned, nobody waits for its report.
ORPHANED_EXIT = 70


@dataclass(frozen=True)
class Progress:
    """A stage's progress: ``done`` of ``total`` steps, with the engine's note on the reference stage's cost
    (its plan, then estimates; built by the engine from counts and timings only, never from the model)."""

    stage: str
    done: int
    total: int
    note: str = ""


class ProgressSender:
    """The audit's progress callback in the child: each call goes to the parent as a :class:`Progress`."""

    accepts_notes = True  # the engine's notes on the reference stage's cost (see engine.Stopwatch)

    def __init__(self, results: Connection) -> None:
        self._results = results

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        self._results.send(Progress(str(stage), int(done), int(total), str(note)))


@dataclass(frozen=True)
class Finished:
    """The report, already rendered in the requested format."""

    report: str


@dataclass(frozen=True)
class Refused:
    """A :class:`~mia_robustness.errors.MiaError`: its class (by name, from ``errors.py``), code and message."""

    error_class: str
    code: str
    message: str


@dataclass(frozen=True)
class Crashed:
    """Anything else: a one-line summary and the traceback, for the server's log only."""

    summary: str
    traceback: str


ChildMessage = Progress | Finished | Refused | Crashed


@dataclass(frozen=True)
class AuditJob:
    """Everything one audit child needs (pickled to the child).

    Attributes
    ----------
    request_id:
        For log lines.
    source:
        Path of the uploaded archive.
    overrides:
        Audit options from the request (names as in ``AuditOptions``, string values).
    limits:
        The engine's ``BundleLimits`` or ``None`` for its defaults.
    workdir:
        Parent folder of the audit's private temporary folder.
    fmt:
        Report format for ``mia_robustness.report.render`` (``json``, ``csv``, ...).
    threads:
        Compute threads this audit may use.
    max_memory_mb:
        Refuse the audit (``LimitError``, code ``memory_limit``) when its estimated peak memory is above
        this many MB, before any attack runs; ``None`` for no limit (``MIA_MAX_AUDIT_MEMORY_MB``).
    sandbox_memory_mb:
        Address-space limit of the audit's sandboxed model process (``MIA_SANDBOX_MEMORY_MB``).
    cluster:
        The Dask scheduler the audit's work runs on (``MIA_DASK_SCHEDULER``), or ``None``.
    """

    request_id: str
    source: str
    overrides: dict[str, str]
    limits: Any
    workdir: str
    fmt: str
    threads: int
    max_memory_mb: float | None = None
    sandbox_memory_mb: int | None = None
    cluster: str | None = None


def _exit_when_orphaned(lifeline: Connection, workdir: str) -> None:
    """Block until the parent closes its end of ``lifeline`` (or dies), then end this process.

    The child's OS parent is the forkserver, not the HTTP worker, so nothing else would stop an audit
    whose requester is gone. ``workdir`` (the invocation's folder) is removed first: a parent that died
    (SIGKILL) cannot, and its master's clean-up may have raced with this audit still writing there.
    """
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv()
    shutil.rmtree(workdir, ignore_errors=True)
    os._exit(ORPHANED_EXIT)


def _limit_threads(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)  # BLAS / OpenMP used while loading and scoring the target
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def run_helper(connection: Connection) -> None:
    """Helper-process entry: serve the sweep cells an audit child sends over ``connection`` until it closes
    (:func:`~mia_robustness.executor.serve_units`). The engine's own code on the engine's values: the model
    never reaches a helper."""
    with contextlib.suppress(OSError):
        os.nice(AUDIT_NICENESS)
    with contextlib.suppress(OSError, AttributeError):  # its name in ps and /proc: what it is, not "python"
        ctypes.CDLL(None).prctl(_PR_SET_NAME, HELPER_NAME, 0, 0, 0)
    from mia_robustness.executor import serve_units

    serve_units(connection)


def run_audit(
    job: AuditJob, results: Connection, lifeline: Connection, helpers: tuple[Connection, ...] = ()
) -> None:
    """Child-process entry: audit ``job`` and send the outcome over ``results``; ``helpers`` are the pipes
    of helper processes (:func:`run_helper`) the sweep may use beside this process."""
    threading.Thread(
        target=_exit_when_orphaned, args=(lifeline, job.workdir), daemon=True, name="lifeline"
    ).start()
    with contextlib.suppress(OSError):  # not permitted in some sandboxes; priority is a nicety
        os.nice(AUDIT_NICENESS)
    try:
        from mia_robustness import audit
        from mia_robustness.errors import MiaError
        from mia_robustness.report import render

        _limit_threads(job.threads)

        try:
            report = audit(
                job.source,
                overrides=job.overrides,
                progress=ProgressSender(results),
                limits=job.limits,
                workdir=job.workdir,
                workers=job.threads,
                max_memory_mb=job.max_memory_mb,
                sandbox_memory_mb=job.sandbox_memory_mb,
                cluster=job.cluster,
                helpers=helpers,
            )
            message: ChildMessage = Finished(render(report, job.fmt))
        except MiaError as error:
            message = Refused(type(error).__name__, error.code, error.message)
    except MemoryError:
        message = Crashed("the audit ran out of memory", traceback.format_exc())
    except BaseException as error:  # noqa: BLE001 - everything must reach the parent as a message
        message = Crashed(f"{type(error).__name__}: {error}", traceback.format_exc())
    results.send(message)
    results.close()
