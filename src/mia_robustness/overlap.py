"""The audit's overlap: the sweep in the audit's thread while the model stage's fits (the reference stage's,
then the what-if's) run in one background thread, when one side alone would leave a core idle.

Each side reports its own progress, checks the audit's time limit and names its own stage in its errors
(``Deadline`` keeps the stage per thread); the report is the one the sequence gives, whatever the overlap.
Figures (bench/RESULTS.md, Adult 16k + 16k forest pipeline) are where the rule below came from.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from .attacks import AttackInput
from .deadline import Cancelled, Deadline
from .sweep import default_workers, one_thread_sweep, single_threaded_kernels


def one_at_a_time(progress: Callable[..., None]) -> Callable[..., None]:
    """``progress`` behind a lock: the caller's callback (a pipe, a stream, a log) gets one call at a time
    when both sides report at once."""
    lock = threading.Lock()

    def report(stage: str, done: int, total: int, **note: str) -> None:
        with lock:
            progress(stage, done, total, **note)

    return report


#: Tests only: ``True`` / ``False`` forces the overlap on / off; ``None`` lets :func:`overlap_pays` decide.
FORCE_OVERLAP: bool | None = None


def overlap_pays(
    model: Any, executor: Any, workers: int, inputs: AttackInput, learned: list, model_work: Any
) -> bool:
    """Whether the sweep and the model stage's fits run side by side (:func:`run_beside`): when both have
    work, no cluster runs the units (its tasks already spread them), and either the sweep runs on one
    thread (few distinct signal rows: a core would idle beside it), or the fits run in another process (the
    sandbox child: the two never share a GIL) and the sweep's threads and the fits' (``workers``) together
    fit in the CPUs.

    Measured on 2 cores, Adult 16k at every default with 2 workers (a one-thread sweep beside 2 fits at a
    time), median of 3 each way (bench/RESULTS.md): in the sandbox 24.5 s overlapped vs 30.5 s in sequence;
    in-process 28.1 s vs 30.0 s. (Before the refits ran dense, dense_fit.py, the sparse refits made both
    slower overlapped: 70.1 vs 59.8 s and 54.1 vs 44.9 s.) A sweep on several threads keeps the sequence
    in-process: its threads and the fits' would share one GIL.
    """
    if FORCE_OVERLAP is not None:
        return FORCE_OVERLAP and bool(learned)
    if not learned or not model_work or executor.cluster is not None:
        return False
    if one_thread_sweep(inputs):
        return default_workers() > 1
    return bool(model.containment.get("sandbox")) and 2 * workers <= default_workers()


def run_beside(
    sweep: Callable[[], Any], model_work: Callable[[], Any], deadline: Deadline
) -> tuple[Any, Any]:
    """``sweep()`` here and ``model_work()`` in one background thread (which owns the model stage until
    it ends); both results once both ended.

    An error on either side cancels the other (``Deadline.cancel``: its next check raises) and is raised
    here once both ended, so no thread is left running; when both failed, the sweep's error wins, as it
    would have in sequence, where the sweep came first.
    """
    outcome: dict[str, Any] = {}

    def background() -> None:
        try:
            outcome["result"] = model_work()
        except BaseException as exc:  # noqa: BLE001 -- raised in the audit's thread below
            outcome["error"] = exc
            deadline.cancel()

    # Both sides limit BLAS (one process-wide setting) to one thread and put back what they found; the
    # side that enters second finds the other's limit and, leaving last, would put it back for good (or
    # the side leaving first would lift the other's while it runs). Limited here, around both, they find
    # and put back one thread, and this puts back the caller's.
    with single_threaded_kernels():
        thread = threading.Thread(target=background, name="mia-model-stage", daemon=True)
        thread.start()
        try:
            swept = sweep()
        except Cancelled:
            thread.join()
            raise outcome["error"] from None
        except BaseException:
            deadline.cancel()
            thread.join()
            raise
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return swept, outcome["result"]
