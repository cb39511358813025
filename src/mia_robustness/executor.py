"""Where the audit's units of work run: threads in this process (the default), or tasks on a Dask cluster.

The units are independent and each carries its own seed: the sweep's cells (``sweep.py``), the reference
stage's fits and the what-if's fits (``sandbox/cluster.py``, which runs those in a sandboxed child on the
worker). Either executor returns results in the jobs' order, so the report does not depend on where or in
which order the units ran.

With no cluster nothing here imports Dask: :class:`ThreadExecutor` is the thread pool the audit always
used. :func:`open_executor` with a scheduler address imports ``distributed`` and connects.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pickle
import queue
import re
import sys
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from threadpoolctl import threadpool_limits

from .errors import ClusterError, OptionsError

log = logging.getLogger("mia_robustness.executor")

T = TypeVar("T")
R = TypeVar("R")

# The modules a cluster's workers run for an audit (the sweep's cells, the sandboxed fits), by name: what
# `dask worker --preload` should name, so that a worker imports the engine once when it starts instead of
# in every audit's first seconds (2-2.5 s of CPU each time, on a worker process's first audit only).
WORKER_PRELOAD = ("mia_robustness.sweep", "mia_robustness.sandbox.cluster")
# A scheduler that does not answer within this is reported as unreachable (never a hang).
CONNECT_SECONDS = 5.0
# How long an attached scheduler may take to show its first worker.
WORKERS_SECONDS = 10.0


class DeadlineCheck(Protocol):
    """The audit's time limit (``deadline.Deadline``, a sibling module): ``check()`` raises once it passed."""

    def check(self) -> None: ...


_ADDRESS = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(?P<port>[0-9]{1,5})$")


def scheduler_address(text: str, where: str = "the cluster address") -> str:
    """``text`` checked as a Dask scheduler address, ``tcp://HOST:PORT``.

    Raises :class:`~mia_robustness.errors.OptionsError` (code ``bad_cluster``) naming ``where`` the text
    came from (a flag, an environment variable) and the form to give.
    """
    value = text.strip()
    found = _ADDRESS.match(value)
    if found is None or not 1 <= int(found["port"]) <= 65535:
        raise OptionsError(
            f"{where} {text[:80]!r} is not a Dask scheduler address; give tcp://HOST:PORT "
            "(what `dask scheduler` prints, e.g. tcp://10.0.0.5:8786)",
            code="bad_cluster",
        )
    return value


def single_threaded_worker() -> None:
    """Run in each worker thread as it starts (a sweep cell's, a refit's, a boundary query pass's):
    OpenMP's thread count is per calling thread, so a limit set in the main thread does not reach its
    workers; without this each histogram-boosting fit in a worker starts a team of all cores and the teams
    fight (several times slower)."""
    threadpool_limits(limits=1, user_api="openmp")
    # Only where torch is in use already (the sweep imports it before its threads start): importing it
    # here would add seconds to a refit or a query pass that never touches it. The import statement, not
    # sys.modules' entry: beside the sweep, another thread may be importing it still, and the statement
    # waits for that import to end where the entry is a half-made module (no set_num_threads yet). A None
    # entry is the sandbox child's way of saying torch is not there (sandbox/child.py).
    if sys.modules.get("torch") is not None:
        import torch

        torch.set_num_threads(1)


class ThreadExecutor:
    """Units in a pool of up to ``workers`` threads of this process: the audit's behaviour without a cluster.

    ``order`` is the order units are started in (the jobs' order when ``None``); ``on_done(count)`` is
    called as they finish, counted in that order; ``initializer`` runs in each thread as it starts.
    A unit that raises cancels those not yet started, and the error is raised here.
    """

    cluster = None

    def __init__(self, workers: int) -> None:
        self.slots = max(1, int(workers))
        self.workers = 1

    def share(self, value: Any, key: str | None = None) -> Any:
        return value

    def map(
        self,
        function: Callable[..., R],
        jobs: Sequence[Any],
        *,
        shared: Sequence[Any] = (),
        order: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
        initializer: Callable[[], None] | None = None,
        name: str = "unit",
    ) -> list[R]:
        order = list(range(len(jobs))) if order is None else list(order)
        with ThreadPoolExecutor(max_workers=self.slots, initializer=initializer) as pool:
            futures = {i: pool.submit(function, jobs[i], *shared) for i in order}
            try:
                for done, i in enumerate(order, 1):
                    futures[i].result()
                    if on_done is not None:
                        on_done(done)  # may raise: the audit's time limit passed
            except BaseException:
                # Units not yet started never will; leaving the pool then waits only for the running ones.
                pool.shutdown(cancel_futures=True)
                raise
            return [futures[i].result() for i in range(len(jobs))]

    def close(self) -> None:
        pass


def _run_unit(
    initializer: Callable[[], None] | None, function: Callable[..., R], job: Any, *shared: Any
) -> R:
    """A unit on a Dask worker: one BLAS / OpenMP thread, as in the in-process pool's threads."""
    with threadpool_limits(limits=1):
        if initializer is not None:
            initializer()
        return function(job, *shared)


def side_by_side(
    function: Callable[[Any], R],
    jobs: Sequence[Any],
    workers: int,
    on_done: Callable[[int], None] | None = None,
) -> list[R]:
    """``[function(job) for job in jobs]``, ``workers`` at a time in threads of this process, in the jobs'
    order; ``on_done(count)`` after each result in that order. For the model's own work: the reference and
    what-if refits, the boundary attack's query passes.

    One BLAS/OpenMP thread per unit: they run side by side, and a model's figures must not depend on how
    many threads the machine (CLI, server child, training job) happens to give the audit.

    The units may silence their warnings (``warnings.catch_warnings``, which swaps one process-wide list):
    units that leave in the order they came in put back a copy holding another's "ignore", so the list is
    saved and put back here, in the calling thread, around them all.
    """
    with threadpool_limits(limits=1), warnings.catch_warnings():
        return ThreadExecutor(workers).map(
            function, list(jobs), on_done=on_done, initializer=single_threaded_worker
        )


class _Shared:
    """A value :meth:`PipeExecutor.share` sent to every helper: its key there."""

    def __init__(self, key: int) -> None:
        self.key = key


class HelperLost(Exception):
    """A helper process ended or its pipe broke: its runner thread takes its units in this process."""


class PipeExecutor:
    """Units in one thread of this process and in helper processes, each on one core, in the jobs' order.

    For units that hold the GIL most of their time (the sweep's cells on few distinct signal rows: torch and
    scikit-learn calls on a few hundred rows), which threads of one process cannot run side by side but
    processes can. ``helpers`` are the audit's ends of :class:`multiprocessing.connection.Connection` pipes
    whose other end a helper process serves (:func:`serve_units`), started by the caller from a process that
    has the engine imported already (the server's forkserver). Helpers run the engine's own code on the
    engine's own values only: never the model, which stays in the sandbox child.

    Shared values go to each helper once (:meth:`share`). A helper that dies or breaks its pipe costs no
    unit: the unit it held runs here instead, and so do the units its thread takes after it.
    """

    cluster = None

    def __init__(self, helpers: Sequence[Any]) -> None:
        self.helpers = list(helpers)
        self.slots = 1 + len(self.helpers)
        self.workers = self.slots  # processes: this one and the helpers
        self._values: dict[int, Any] = {}

    def share(self, value: Any, key: str | None = None) -> Any:
        handle = _Shared(len(self._values))
        self._values[handle.key] = value
        for index, helper in enumerate(self.helpers):
            if helper is not None:
                try:
                    helper.send(("share", handle.key, value))
                except (OSError, ValueError):
                    self.helpers[index] = None
        return handle

    def _local(self, shared: Sequence[Any]) -> list[Any]:
        return [self._values[value.key] if isinstance(value, _Shared) else value for value in shared]

    def _remote(
        self, helper: Any, function: Callable[..., R], job: Any, shared: Sequence[Any], initializer: Any
    ) -> R:
        keys = [("shared", value.key) if isinstance(value, _Shared) else ("value", value) for value in shared]
        try:
            helper.send(("run", initializer, function, job, keys))
            kind, result = helper.recv()
        except (EOFError, OSError, ValueError) as exc:
            raise HelperLost from exc
        if kind == "failed":
            raise result
        return result

    def _helper(self, slot: int) -> Any:
        """Slot ``slot``'s helper pipe: ``None`` for slot 0 (this process) and for a helper that was lost."""
        return self.helpers[slot - 1] if slot else None

    def map(
        self,
        function: Callable[..., R],
        jobs: Sequence[Any],
        *,
        shared: Sequence[Any] = (),
        order: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
        initializer: Callable[[], None] | None = None,
        name: str = "unit",
    ) -> list[R]:
        # A pool of one thread per slot (ThreadExecutor's order, progress and cancelling): the thread of slot
        # 0 runs its units here, each other thread hands its units to its helper and waits for the answer.
        free_slots: queue.SimpleQueue[int] = queue.SimpleQueue()
        for slot in range(self.slots):
            free_slots.put(slot)
        thread_slot = threading.local()
        local = self._local(shared)

        def take_slot() -> None:
            thread_slot.value = free_slots.get()
            if self._helper(thread_slot.value) is None and initializer is not None:
                initializer()

        def unit(job: Any) -> R:
            slot = thread_slot.value
            helper = self._helper(slot)
            if helper is not None:
                try:
                    return self._remote(helper, function, job, shared, initializer)
                except HelperLost:
                    log.warning("a sweep helper process went away; its units run in the audit's process")
                    self.helpers[slot - 1] = None
                    if initializer is not None:
                        initializer()
            return function(job, *local)

        return ThreadExecutor(self.slots).map(
            unit, jobs, order=order, on_done=on_done, initializer=take_slot, name=name
        )

    def close(self) -> None:
        for helper in self.helpers:
            if helper is not None:
                with contextlib.suppress(OSError, ValueError):
                    helper.close()


class HelperTraceback(Exception):
    """Where a helper's error was raised: its traceback there, as the ``__cause__`` of the error the audit's
    process raises (so that the server's log of an unexpected failure shows the unit's own frames)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


def _with_cause(error: BaseException, text: str) -> BaseException:
    error.__cause__ = HelperTraceback(text)
    return error


class _SentError:
    """A unit's error on its way from a helper: unpickled, the error itself with the helper's traceback as
    its cause; an error that would not come back as itself (one whose constructor does not take its
    ``args`` back raises a TypeError on unpickling instead) travels as a RuntimeError naming it."""

    def __init__(self, error: BaseException) -> None:
        self.text = "".join(traceback.format_exception(error))
        try:
            pickle.loads(pickle.dumps(error))
        except Exception:  # noqa: BLE001 - any failure to make the trip
            error = RuntimeError(f"{type(error).__name__} in a sweep helper: {error}")
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return _with_cause, (self.error, self.text)


def serve_units(connection: Any) -> None:
    """A helper process's loop (:class:`PipeExecutor`): keep the values shared with it, run each unit it is
    sent on one BLAS / OpenMP / torch thread, send back its result or its error; return when the audit's end
    of the pipe closes."""
    values: dict[int, Any] = {}
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message[0] == "share":
            values[message[1]] = message[2]
            continue
        _, initializer, function, job, keys = message
        try:
            arguments = [values[value] if kind == "shared" else value for kind, value in keys]
            answer: tuple[str, Any] = ("done", _run_unit(initializer, function, job, *arguments))
        except BaseException as exc:  # noqa: BLE001 - the audit's process raises it
            answer = ("failed", _SentError(exc))
        try:
            connection.send(answer)
        except (EOFError, OSError):
            return
        except Exception:  # noqa: BLE001 - a result that does not pickle: an error naming its class
            connection.send(
                ("failed", RuntimeError(f"a sweep unit's {type(answer[1]).__name__} could not be sent back"))
            )


def _import_modules(names: list[str]) -> None:
    for name in names:
        importlib.import_module(name)


class DaskExecutor:
    """Units as tasks on a Dask cluster (``distributed.Client`` connected to ``address``).

    Shared values are scattered to every worker once (:meth:`share`); each task gets the handles, never a
    copy. Progress comes from task completion; results are gathered in the jobs' order.
    """

    def __init__(
        self, address: str, preload: Sequence[str] = (), deadline: DeadlineCheck | None = None
    ) -> None:
        from distributed import Client

        self.cluster = address
        self.deadline = deadline
        try:
            self.client = Client(address, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {address} within {CONNECT_SECONDS:g} s "
                f"({type(exc).__name__}); start it (`dask scheduler`), check the address and port, or audit "
                "without --cluster / MIA_DASK_SCHEDULER"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=WORKERS_SECONDS)
        except (OSError, TimeoutError):
            self.client.close()
            raise ClusterError(
                f"the Dask scheduler at {address} has no workers after {WORKERS_SECONDS:g} s; start some "
                f"(`dask worker {address} --nthreads 1`) or audit without a cluster"
            ) from None
        threads = self.client.nthreads()
        self.workers = len(threads)
        self.slots = max(1, sum(threads.values()))
        self.token = uuid.uuid4().hex[:12]
        if preload:
            # The tasks' modules (scikit-learn, pandas...) load on every worker while this process unpacks
            # and scores the bundle, instead of on each worker's first task.
            self.start_on_each_worker(_import_modules, list(preload))

    def start_on_each_worker(self, function: Callable[..., Any], *args: Any) -> None:
        """Start ``function(*args)`` as a task on every worker, and do not wait for it (a warm-up)."""
        from distributed import fire_and_forget

        fire_and_forget(
            [
                self.client.submit(function, *args, workers=[worker], pure=False, priority=10**6)
                for worker in self.client.nthreads()
            ]
        )

    def share(self, value: Any, key: str | None = None) -> Any:
        """``value`` on every worker, once; the handle stands for it in :meth:`map`'s ``shared``. Under
        ``key`` when given (the workers can then ask the scheduler whether the audit still holds it)."""
        try:
            if key is not None:
                return self.client.scatter({key: value}, broadcast=True, hash=False)[key]
            # A list, so that a value that is itself a list or a dict is scattered whole.
            return self.client.scatter([value], broadcast=True, hash=False)[0]
        except (OSError, TimeoutError) as exc:
            raise self._lost(type(exc).__name__) from None

    def map(
        self,
        function: Callable[..., R],
        jobs: Sequence[Any],
        *,
        shared: Sequence[Any] = (),
        order: Sequence[int] | None = None,
        on_done: Callable[[int], None] | None = None,
        initializer: Callable[[], None] | None = None,
        name: str = "unit",
    ) -> list[R]:
        order = list(range(len(jobs))) if order is None else list(order)
        rank = {i: len(order) - position for position, i in enumerate(order)}  # first in order runs first
        futures = [
            self.client.submit(
                _run_unit,
                initializer,
                function,
                job,
                *shared,
                key=f"mia-{name}-{self.token}-{uuid.uuid4().hex[:8]}-{i}",
                priority=rank[i],
                pure=False,
            )
            for i, job in enumerate(jobs)
        ]
        try:
            failed = self._wait(futures, on_done)
            if failed is None:
                try:
                    return self.client.gather(futures)
                except (OSError, TimeoutError) as exc:
                    raise self._lost(type(exc).__name__) from None
        except BaseException:
            self.client.cancel(futures)
            raise
        self.client.cancel(futures)
        # A unit's own error (an OSError of its own too), as the thread pool raises it: same class, code
        # and text, without the worker's traceback.
        raise failed.with_traceback(None) from None

    def _wait(self, futures: list[Any], on_done: Callable[[int], None] | None) -> BaseException | None:
        """Wait for ``futures``, counting them to ``on_done`` as they finish and checking the audit's time
        limit as it waits; the first unit's own error (``None``: all done). The cluster failing (lost
        connection, every worker gone, a worker killed by its task) is raised as a ClusterError."""
        from distributed import as_completed

        try:
            completed, done, quiet_since = as_completed(futures, loop=self.client.loop), 0, time.monotonic()
            while not completed.is_empty():
                if self.deadline is not None:
                    self.deadline.check()  # the tasks still running are cancelled by map
                finished = completed.next_batch(block=False)
                if not finished:
                    # Dask keeps the tasks of a cluster that lost every worker waiting for one, forever.
                    if time.monotonic() - quiet_since > WORKERS_SECONDS:
                        if not self.client.nthreads():
                            raise ClusterError(
                                f"the Dask cluster at {self.cluster} lost all its workers during the audit; "
                                "check the cluster and run the audit again"
                            )
                        quiet_since = time.monotonic() - WORKERS_SECONDS + 1.0  # ask again in a second
                    time.sleep(0.05)
                    continue
                quiet_since = time.monotonic()
                for future in finished:
                    if future.status == "error":
                        error = future.exception()
                        if type(error).__name__ == "KilledWorker":  # its worker died running it
                            raise self._lost("KilledWorker")
                        return error
                    if future.status != "finished":  # cancelled: the scheduler forgot it
                        raise self._lost("FutureCancelledError")
                    done += 1
                    if on_done is not None:
                        on_done(done)  # may raise: the audit's time limit passed
            return None
        except (OSError, TimeoutError) as exc:  # this client's connection: never a task's own error here
            raise self._lost(type(exc).__name__) from None
        except BaseException as exc:
            if type(exc).__name__ in ("FutureCancelledError", "FuturesCancelledError", "CancelledError"):
                raise self._lost(type(exc).__name__) from None
            raise

    def run_on_workers(self, function: Callable[..., Any], *args: Any) -> dict[str, Any]:
        """``function(*args)`` once in every worker process (``Client.run``), by worker address."""
        return self.client.run(function, *args)

    def _lost(self, what: str) -> ClusterError:
        return ClusterError(
            f"the Dask cluster at {self.cluster} failed during the audit ({what}): a worker or "
            "the scheduler went away; check the cluster and run the audit again"
        )

    def close(self) -> None:
        self.client.close()


# Where units run: both have ``cluster`` (the scheduler's address, or None here), ``slots`` (units at the
# same time), ``workers`` (processes), ``share(value)``, ``map(function, jobs, shared=...)`` and ``close()``.
Executor = ThreadExecutor | PipeExecutor | DaskExecutor


def open_executor(
    cluster: str | None,
    workers: int,
    preload: Sequence[str] = (),
    deadline: DeadlineCheck | None = None,
    helpers: Sequence[Any] = (),
) -> Executor:
    """Threads in this process when ``cluster`` is ``None`` (and this process with ``helpers``, the pipes
    of helper processes, when there are some: :class:`PipeExecutor`), else a client of the scheduler at
    ``cluster`` whose workers start importing the ``preload`` modules (those the audit's tasks run) at once,
    and whose waits stop at ``deadline`` (the audit's time limit; in-process, units check it as they
    finish)."""
    if cluster is None:
        return PipeExecutor(helpers) if helpers else ThreadExecutor(workers)
    return DaskExecutor(scheduler_address(cluster), preload, deadline)
