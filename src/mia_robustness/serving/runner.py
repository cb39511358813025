"""Run audits for the HTTP worker: at most ``workers`` at a time, each in a child process.

Why child processes: an audit is minutes of CPU-bound work in native code (scikit-learn, torch). Run in
a thread of the gunicorn worker it would compete for the GIL with ``/ping``, and a segfault or an
out-of-memory kill would take the whole worker down with every request in it. In a child the worker
thread only waits on a pipe, a crash becomes one 500 answer, and a timeout can actually stop the work.

Why ``forkserver``: forking the threaded gunicorn worker itself (plain ``fork``) can deadlock the child on
a lock some other thread held; ``spawn`` re-imports torch and scikit-learn for every request (seconds).
The forkserver is a clean single-threaded process that imports the engine once and forks a child per
audit in milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from ..errors import (
    AuditCrashedError,
    MiaError,
    ServerBusyError,
    ServerTimeoutError,
    ShuttingDownError,
    error_class,
)
from . import child
from .settings import RESERVED_THREADS, ServerSettings

log = logging.getLogger("mia_robustness.serving")

# Imported once by the forkserver, so that each audit child starts with the engine loaded. The package's
# public names load on first use (PEP 562), so the modules behind ``audit`` and ``render`` (and with them
# scikit-learn and pandas) are named here: without them every child imported them again (2.8 s each).
PRELOAD = [
    "mia_robustness",
    "mia_robustness.bundle_audit",
    "mia_robustness.report",
    "mia_robustness.serving.child",
    "torch",
    # The nn attack's first optimiser imports torch._dynamo (torch imports it lazily, on an optimiser's first
    # call): 1.2 s of each audit child's first nn cell unless the forkserver has it already.
    "torch._dynamo",
]
# Seconds a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 3.0
# Invocation folders are named after the worker that made them ("mia-invocation-<pid>-<random>"), so that
# the gunicorn master can remove those of a worker that was killed before it could (see server.py).
WORKDIR_PREFIX = "mia-invocation-"

_SIGNAL_HINTS = {
    signal.SIGKILL: "it was killed (SIGKILL), most often by the out-of-memory killer: give the server more "
    "memory, lower SAGEMAKER_MODEL_SERVER_WORKERS, or audit fewer rows",
    signal.SIGSEGV: "it crashed (SIGSEGV) in native code; the model file may be damaged or built for "
    "another version of its library",
    signal.SIGABRT: "it aborted (SIGABRT) in native code",
    signal.SIGBUS: "it crashed (SIGBUS); the disk or shared memory may be full",
}


def _rebuild_error(refused: child.Refused) -> MiaError:
    """The child's :class:`MiaError` again, as its own class (and so its own HTTP status)."""
    return error_class(refused.error_class)(refused.message, code=refused.code)


class AuditRunner:
    """Admits invocations, runs their audits in child processes and cleans up after them.

    Parameters
    ----------
    settings:
        The server's settings (concurrency, threads, timeout, limits, temporary root).
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)
        self._slots = threading.BoundedSemaphore(settings.workers)
        self._lock = threading.Lock()
        self._admitted = 0
        # Invocations beyond this wait for a slot would take the threads /ping needs: they get a 503.
        self._max_admitted = settings.threads - RESERVED_THREADS
        self._children: set[Any] = set()
        self._cpus_in_use = 0  # by the running audits: their threads and their helpers
        self._closing = threading.Event()

    def warm_up(self) -> None:
        """Start the forkserver (importing the engine takes seconds) in the background."""
        threading.Thread(target=self._start_forkserver, daemon=True, name="forkserver-warm-up").start()

    @staticmethod
    def _start_forkserver() -> None:
        try:
            multiprocessing.forkserver.ensure_running()
        except Exception:  # the first audit retries and reports any real failure
            log.exception("could not start the audit forkserver ahead of time")

    def new_workdir(self) -> Path:
        """A fresh private folder for one invocation (under the configured temporary root)."""
        path = Path(
            tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=self.settings.runtime.temp_root)
        )
        # Enterable (not listable) by others: the audit's sandbox child runs as nobody in a folder of its
        # own inside this one, and must be able to reach it.
        path.chmod(0o711)
        return path

    def run(self, request_id: str, archive: Path, overrides: dict[str, str], fmt: str, workdir: Path) -> str:
        """Audit ``archive`` in a child process and return the report rendered as ``fmt``.

        ``workdir`` (holding ``archive``) becomes the parent of the audit's own temporary folder; the
        caller removes it. Raises the audit's :class:`MiaError`, or one with status 500 (crash, timeout),
        503 (too many waiting invocations, shutting down).
        """
        with self._lock:
            if self._admitted >= self._max_admitted:
                raise ServerBusyError(
                    f"the server is busy with {self._admitted} invocations; retry later or send at most "
                    f"{self.settings.workers} at a time (see /execution-parameters)"
                )
            self._admitted += 1
        try:
            deadline = time.monotonic() + self.settings.timeout
            if not self._slots.acquire(timeout=self.settings.timeout):
                raise self._timeout_error(waited=True)
            try:
                if self._closing.is_set():
                    raise self._shutdown_error()
                if time.monotonic() >= deadline:  # the slot came too late to start an audit
                    raise self._timeout_error(waited=True)
                return self._run_child(request_id, archive, overrides, fmt, workdir, deadline)
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._admitted -= 1

    def _run_child(
        self,
        request_id: str,
        archive: Path,
        overrides: dict[str, str],
        fmt: str,
        workdir: Path,
        deadline: float,
    ) -> str:
        job = child.AuditJob(
            request_id=request_id,
            source=str(archive),
            overrides=overrides,
            limits=self.settings.runtime.unpack_limits.bundle_limits(),
            workdir=str(workdir),
            fmt=fmt,
            threads=self.settings.threads_per_audit,
            max_memory_mb=self.settings.runtime.max_audit_memory_mb,
            sandbox_memory_mb=self.settings.runtime.sandbox_memory_mb,
            cluster=self.settings.runtime.cluster,
        )
        results, results_for_child = self._context.Pipe(duplex=False)
        lifeline_for_child, lifeline = self._context.Pipe(duplex=False)
        helpers: list[Any] = []
        helper_ends: list[Any] = []
        process = None
        # CPUs this audit holds in _cpus_in_use: given back whole at its end, however far its start got.
        held = 0
        started = time.monotonic()
        try:
            with self._lock:
                if self._closing.is_set():
                    raise self._shutdown_error()
                # CPUs no running audit uses go to this one's helpers (for its GIL-bound sweep cells); none
                # when a Dask cluster runs the cells.
                idle = max(0, self.settings.cpus - self._cpus_in_use - job.threads)
                count = 0 if job.cluster is not None else min(idle, self.settings.max_helpers)
                held = job.threads + count
                self._cpus_in_use += held
                for index in range(count):
                    mine, theirs = self._context.Pipe(duplex=True)
                    helper = self._context.Process(
                        target=child.run_helper, args=(theirs,), name=f"helper-{request_id}-{index}"
                    )
                    try:
                        helper.start()
                    finally:
                        theirs.close()  # the helper's own: its pipe ends when the audit child's end does
                    helpers.append(helper)
                    helper_ends.append(mine)
                    self._children.add(helper)
                process = self._context.Process(
                    target=child.run_audit,
                    args=(job, results_for_child, lifeline_for_child, tuple(helper_ends)),
                    name=f"audit-{request_id}",
                    daemon=False,
                )
                process.start()
                self._children.add(process)
        except BaseException:
            for end in (results, lifeline):
                end.close()
            self._end_audit(process, helpers, held)
            raise
        finally:
            # Only the child may hold these ends, so that its death reads as EOF here and ours as EOF there.
            for end in (results_for_child, lifeline_for_child, *helper_ends):
                end.close()
        pid = process.pid
        progress = child_progress_logger(request_id)
        try:
            outcome = self._wait(process, results, deadline, progress)
        finally:
            lifeline.close()
            results.close()
            self._end_audit(process, helpers, held)
        log.info(
            "%s audit child %s finished in %.2f s (%d sweep helpers)",
            request_id,
            pid,
            time.monotonic() - started,
            len(helpers),
        )
        return outcome

    def _wait(self, process: Any, results: Any, deadline: float, progress: Callable[..., None]) -> str:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout_error(waited=False)
            ready = wait([results, process.sentinel], timeout=min(remaining, 1.0))
            # Read the pipe before looking at the sentinel: the report may arrive just before the exit.
            if results in ready or results.poll():
                try:
                    message = results.recv()
                except EOFError:
                    process.join(TERMINATE_GRACE)
                    raise self._crash_error(process) from None
                if isinstance(message, child.Progress):
                    progress(message.stage, message.done, message.total, note=message.note)
                    continue
                if isinstance(message, child.Finished):
                    return message.report
                if isinstance(message, child.Refused):
                    raise _rebuild_error(message)
                log.error("audit failed unexpectedly (%s):\n%s", message.summary, message.traceback)
                raise MiaError("the audit failed unexpectedly; the server log has the details")
            if process.sentinel in ready:
                process.join(TERMINATE_GRACE)
                raise self._crash_error(process)

    def _crash_error(self, process: Any) -> MiaError:
        if self._closing.is_set():
            return self._shutdown_error()
        code = process.exitcode
        if code is not None and code < 0:
            try:
                hint = _SIGNAL_HINTS.get(signal.Signals(-code), f"it was stopped by signal {-code}")
            except ValueError:
                hint = f"it was stopped by signal {-code}"
        else:
            hint = f"it exited with status {code} without a report"
        log.error("audit child %s died: exit code %s", process.pid, code)
        return AuditCrashedError(f"the audit process ended abnormally: {hint}")

    def _timeout_error(self, *, waited: bool) -> MiaError:
        what = "waited for a free audit slot" if waited else "ran"
        return ServerTimeoutError(
            f"the audit {what} longer than SAGEMAKER_MODEL_SERVER_TIMEOUT={self.settings.timeout} s and was "
            "stopped; audit fewer rows, attack models, proportions or repeats, or raise the timeout"
        )

    @staticmethod
    def _shutdown_error() -> MiaError:
        return ShuttingDownError("the server is shutting down; send the request again")

    def _end_audit(self, process: Any, helpers: list[Any], held: int) -> None:
        """Stop an audit's child and helpers (those not started: nothing to stop) and give back the ``held``
        CPUs it took (its threads and every helper it meant to start, started or not)."""
        for started in ([process] if process is not None else []) + helpers:
            if started.pid is not None:
                self._stop(started)
        with self._lock:
            self._children.difference_update([process, *helpers])
            self._cpus_in_use -= held

    @staticmethod
    def _stop(process: Any) -> None:
        """Make sure ``process`` has ended: wait briefly, then SIGTERM, then SIGKILL."""
        process.join(0.5)
        if process.exitcode is None:
            process.terminate()
            process.join(TERMINATE_GRACE)
        if process.exitcode is None:
            process.kill()
            process.join()
        process.close()

    def shutdown(self) -> None:
        """Stop admitting audits and terminate the running ones (safe to call from a signal handler).

        Their requests are answered 503 by the threads waiting on them.
        """
        self._closing.set()
        # No lock here: a signal handler interrupting a thread that holds it would deadlock.
        for process in list(self._children):
            with contextlib.suppress(ValueError, OSError):  # already closed or gone
                process.terminate()


def child_progress_logger(request_id: str) -> Callable[..., None]:
    """The worker-side logger of a child's progress messages, notes included (``progress(stage, done,
    total, note="")``)."""
    from .progress import ProgressLog

    return ProgressLog(log.info, prefix=f"{request_id} ")


def remove_workdir(path: Path) -> None:
    """Remove an invocation's folder; log, never raise (the answer is already decided)."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove the invocation folder %s", path)


def remove_workdirs_of(pid: int, temp_root: Path | None) -> int:
    """Remove every invocation folder that the worker process ``pid`` left under ``temp_root`` (the
    system's temporary folder when ``None``); returns how many there were.

    For the gunicorn master once the worker has exited: a worker killed by SIGKILL (the out-of-memory
    killer, a heartbeat timeout) never reaches the ``finally`` that removes its invocations' folders.
    """
    root = Path(tempfile.gettempdir()) if temp_root is None else Path(temp_root)
    try:
        left = list(root.glob(f"{WORKDIR_PREFIX}{int(pid)}-*"))
    except OSError:
        return 0
    for path in left:
        remove_workdir(path)
    return len(left)
