"""The sandbox child: ``python -I -m mia_robustness.sandbox.child``, a fresh interpreter for every audit.

It reads its request from standard input, confines itself (:func:`~.confine.confine`), and only then opens
the model file. It answers on standard output in the protocol of :mod:`.protocol`; whatever the model's
code prints goes to standard error, which the parent keeps for its log and never shows to a user.

Exceptions raised by the engine on purpose (:class:`~mia_robustness.errors.MiaError`) travel as their
class, code and message. Any other exception was raised by the model's own code (or a library it drove),
so only its class name travels: its text may hold memory addresses or file contents (issue #9, finding 2).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from .protocol import read_message, write_message

_PR_SET_PDEATHSIG = 1
# Exit status when confinement itself failed: the parent reports it as "the sandbox could not start".
EXIT_CONFINEMENT_FAILED = 71
# Exit status when the parent was gone before the child could tie its life to it.
EXIT_ORPHANED = 72


def _thread_locks_for_multiprocessing() -> None:
    """Make ``multiprocessing``'s locks thread locks in this process.

    joblib's threading backend (used by scikit-learn's forests and histogram boosting for ``n_jobs``)
    builds a ``multiprocessing.pool.ThreadPool``, whose queue takes POSIX semaphores from ``/dev/shm``:
    a folder shared with every other process, which the sandbox does not let the child write. The child
    cannot start processes, so a lock between processes and one between threads are the same thing here.
    """
    import multiprocessing.synchronize as synchronize

    synchronize.Lock = lambda *, ctx=None: threading.Lock()
    synchronize.RLock = lambda *, ctx=None: threading.RLock()
    synchronize.Semaphore = lambda value=1, *, ctx=None: threading.Semaphore(value)
    synchronize.BoundedSemaphore = lambda value=1, *, ctx=None: threading.BoundedSemaphore(value)
    synchronize.Condition = lambda lock=None, *, ctx=None: threading.Condition(lock)
    synchronize.Event = lambda *, ctx=None: threading.Event()


def _die_with_parent(parent_pid: int) -> None:
    # Set after the user change (which clears it): a killed audit must not leave its model stage running.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before the line above: then this process was handed to another one. (Not
    # "the parent is PID 1": in a container, `train` itself is PID 1.)
    if os.getppid() != parent_pid:
        os._exit(EXIT_ORPHANED)


def _channels() -> tuple[BinaryIO, BinaryIO]:
    """Private copies of stdin/stdout for messages; fd 1 then points at stderr and fd 0 at /dev/null, so
    a model that prints (verbose estimators do) cannot corrupt the message stream."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    return requests, answers


def _send_failure(answers: BinaryIO, stage: str, error: BaseException) -> None:
    from ..errors import MiaError

    if isinstance(error, MiaError):
        header: dict[str, Any] = {
            "kind": "error",
            "class": type(error).__name__,
            "code": error.code,
            "message": error.message,
        }
    elif isinstance(error, MemoryError):
        header = {"kind": "memory", "stage": stage}
    else:
        header = {"kind": "failed", "stage": stage, "exception": type(error).__name__}
        traceback.print_exc(file=sys.stderr)
    write_message(answers, header)


def main() -> int:
    requests, answers = _channels()
    # Everything the stage imports is imported before confinement (trusted code, read while readable), and
    # before the request is read: a child started ahead of its audit (spare.SpareChild) waits with them
    # loaded.
    from ..errors import MiaError  # noqa: F401 - imported now, used after confinement
    from ..model_check import CheckRequest, check_model
    from ..recipe import has_recipe
    from ..reference import ReferenceRequest, reference_answers, reference_fits
    from ..remediation.fits import WhatIfRequest, fit_what_if
    from ..target import ScoreRequest, score_target
    from . import stage
    from .confine import ConfinementError, Limits, confine

    for module in (
        "loading",
        "tables",
        "target",
        "reference",
        "signals",
        "model_check",
        "remediation.family",
    ):
        __import__(f"mia_robustness.{module}")
    import sklearn.ensemble  # noqa: F401 - the common targets' modules, before the interpreter may be unreadable
    import sklearn.pipeline  # noqa: F401

    _thread_locks_for_multiprocessing()
    # The model stage has no use for torch (only the parent's nn attack does); shared helpers that set
    # its thread count when it is present then skip it instead of mapping a gigabyte of kernels here.
    sys.modules["torch"] = None
    try:
        request, _ = read_message(requests, max_array_bytes=0)
    except EOFError:
        return 0  # a spare child nobody needed
    work = Path(request["work_folder"])
    try:
        containment = confine(
            work,
            Limits(
                address_space_bytes=int(request["address_space_bytes"]),
                cpu_seconds=int(request["cpu_seconds"]),
            ),
            drop_privileges=bool(request["drop_privileges"]),
        )
    except (ConfinementError, OSError) as exc:
        sys.stderr.write(f"confinement failed: {exc}\n")
        return EXIT_CONFINEMENT_FAILED
    _die_with_parent(int(request["parent_pid"]))
    os.chdir(work)
    write_message(answers, {"kind": "ready", "containment": containment.to_dict()})

    def progress(stage_name: str, done: int, total: int) -> None:
        write_message(
            answers, {"kind": "progress", "stage": stage_name, "done": int(done), "total": int(total)}
        )

    if request.get("probe"):  # test-only: attacker code run on purpose inside the confinement
        probe_result: dict[str, Any] = {}
        exec(request["probe"], {"result": probe_result, "work": work, "answers": answers})  # noqa: S102
        write_message(answers, {"kind": "probe", "result": probe_result})
        return 0

    files = stage.ModelFiles(
        **{key: Path(value) for key, value in request["files"].items()},
        classes=tuple(request["classes"]) if isinstance(request.get("classes"), list) else None,
    )
    step = "loading"
    try:
        command, _ = read_message(requests, max_array_bytes=0)
        if command.get("kind") not in ("score", "check"):
            return 0
        model, members, non_members, saved_version = stage.load_files(files)
        if command["kind"] == "check":  # `bundle`'s check: a few rows scored, a summary back, nothing after
            progress("loading", 1, 1)
            step = "target_scoring"
            checked = check_model(
                model,
                members,
                non_members,
                CheckRequest(**command["check"]),
                model_name=files.model.name,
                table_names=(files.members.name, files.non_members.name),
            )
            progress("target_scoring", 1, 1)
            write_message(answers, stage.check_to_message(checked))
            return 0
        progress("loading", 1, 1)
        step = "target_scoring"
        loaded = score_target(
            model, members, non_members, ScoreRequest(**command["score"]), saved_version=saved_version
        )
        loaded.scored = dataclasses.replace(loaded.scored, has_recipe=has_recipe(model))
        progress("target_scoring", 1, 1)
        write_message(answers, *stage.scored_to_message(loaded.scored))
        # Then, each when asked: the reference stage and the what-if (an audit's own child, in that order),
        # or shares of their fits (a cluster worker's child, as many as the worker is given).
        while True:
            command, _ = read_message(requests, max_array_bytes=0)
            kind = command.get("kind")
            if kind in ("reference", "reference_fits"):
                step = "reference_models"
                reference = command["reference"]
                request = ReferenceRequest(**{**reference, "attacks": tuple(reference["attacks"])})
                if kind == "reference":
                    fitted = reference_answers(loaded, request, progress)
                else:
                    fitted = reference_fits(loaded, request, [(int(i), int(k)) for i, k in command["jobs"]])
                write_message(answers, *stage.answers_to_message(fitted))
            elif kind in ("what_if", "what_if_fits"):
                step = "what_if"
                jobs = None if kind == "what_if" else [(int(c), int(k)) for c, k in command["jobs"]]
                fits = fit_what_if(
                    loaded.model,
                    loaded.features,
                    loaded.labels,
                    loaded.scored.label_index,
                    loaded.scored.classes,
                    WhatIfRequest(**command["what_if"]),
                    progress,
                    jobs=jobs,
                    kept=loaded.refits,
                )
                write_message(answers, *stage.what_if_to_message(fits))
            else:
                return 0
    except EOFError:
        return 0  # the parent is done with this model
    except BaseException as error:  # noqa: BLE001 - every outcome must reach the parent as a message
        _send_failure(answers, step, error)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stderr.flush()
    # No interpreter shutdown (a second of finalising numpy, pandas and scikit-learn, and of running
    # whatever finalisers the model's objects carry): the answers are written and flushed already.
    os._exit(status)
