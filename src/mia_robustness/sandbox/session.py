"""The audit's side of the sandbox: start a confined child for one bundle and talk to it.

:class:`SandboxedModel` and :class:`InProcessModel` have the same two steps, ``score()`` and
``reference()``; the audit uses whichever :func:`open_model` gives it. The sandboxed one is the default
everywhere (CLI, Python API, ``serve``, ``train``); the in-process one is for models the caller trusts
(``sandbox=False``), where it saves the child's start-up (about 1.5 s). ``bundle``'s check asks a sandboxed
child for ``check()`` instead of the two steps: a few rows scored and a summary back.

A child is a fresh interpreter (``python -I``), not a fork: its memory layout is its own, so nothing one
audit learns about its process tells it anything about another's. It gets an environment of its own
(no ``AWS_*`` credentials, no ``MIA_*`` settings, nothing inherited), copies of the three input files in a
private folder that is all it may write to, and the limits of :class:`~.confine.Limits`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import errors
from ..deadline import Deadline
from ..engine import InProcessModel
from ..errors import LimitError, MiaError, ModelError
from ..model_check import CheckRequest, ModelCheck
from ..reference import FitSet, ReferenceRequest
from ..remediation import WhatIfFits, WhatIfRequest
from ..target import ScoredTarget, ScoreRequest
from .child import EXIT_CONFINEMENT_FAILED
from .confine import nobody_cannot_run_python, nobody_ids
from .protocol import ProtocolError, clean_text, read_message, write_message
from .spare import FOLDER_PREFIX, SpareChild, spawn_child
from .stage import (
    CHILD_STAGES,
    ModelFiles,
    answers_from_message,
    checked_from_message,
    load_files,
    scored_from_message,
    what_if_from_message,
)

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("mia_robustness.sandbox")

ProgressCallback = Callable[[str, int, int], None]

# Child start-up: interpreter, numpy, pandas, scikit-learn, before the request can be answered.
START_SECONDS = 120.0
# Seconds a child gets to exit by itself once the audit is done with it.
EXIT_GRACE = 2.0
# How often a wait for the child looks whether the audit's other half failed (``Deadline.cancel``).
CANCEL_POLL_SECONDS = 0.25
# Virtual memory the child needs beyond its data: the interpreter with numpy, pandas, pyarrow and
# scikit-learn mapped, thread stacks and malloc arenas (measured VmPeak of a child scoring the sample:
# ~1.1 GB with MALLOC_ARENA_MAX=2, of which ~0.2 GB resident).
VIRTUAL_BASELINE_MB = 1536
# How much memory a model file and a table file take once loaded, per byte on disk (pickles unfold,
# CSV text becomes columns): upper ends of what bench/ measured.
MODEL_BYTES_IN_MEMORY = 4
TABLE_BYTES_IN_MEMORY = 12
DEFAULT_CPU_HOURS = 24
STDERR_TAIL_BYTES = 64 * 1024


def default_address_space_mb(
    files: ModelFiles, workers: int, n_models: int, max_memory_mb: float | None
) -> int:
    """The child's address-space limit: an upper end of what loading, scoring and refitting need.

    From the sizes on disk: each reference fit running at once holds a model as large as the target's.
    With ``max_memory_mb`` (the audit's memory cap) the child never gets more than that cap allows.
    """
    model_mb = files.model.stat().st_size / 2**20
    table_mb = (files.members.stat().st_size + files.non_members.stat().st_size) / 2**20
    concurrent_models = 1 + min(workers, max(n_models, 0))
    need = 1.3 * (MODEL_BYTES_IN_MEMORY * model_mb * concurrent_models + TABLE_BYTES_IN_MEMORY * table_mb)
    if max_memory_mb is not None:
        need = min(need, max_memory_mb)
    return int(VIRTUAL_BASELINE_MB + max(need, 512))


class SandboxedModel:
    """The model stage in a confined child process (see the module docstring).

    Parameters
    ----------
    files:
        The bundle's model file and tables (copied into the child's private folder).
    work_parent:
        Folder in which the child's private folder is made (the system's temporary folder when ``None``).
    threads:
        Compute threads for the child (BLAS, OpenMP, reference fits).
    address_space_mb:
        The child's ``RLIMIT_AS`` in MB.
    deadline:
        The audit's time limit; the child is killed when it passes.
    progress:
        Receives the child's progress reports.
    spare:
        A child started ahead (:class:`SpareChild`) to use instead of starting one, when it was started
        with these ``threads`` and ``work_parent`` and still waits; otherwise it is discarded.
    """

    def __init__(
        self,
        files: ModelFiles,
        *,
        work_parent: Path | None,
        threads: int,
        address_space_mb: int,
        deadline: Deadline,
        progress: ProgressCallback,
        spare: SpareChild | None = None,
        _test_probe: str | None = None,
    ) -> None:
        self.deadline = deadline
        self.progress = progress
        self.address_space_mb = address_space_mb
        self._stderr_tail: deque[bytes] = deque()
        self._messages: queue.Queue = queue.Queue()
        self._rows = 0  # rows the scored answer held: what the what-if's arrays must match
        self._max_array_bytes = 0
        blocker = nobody_cannot_run_python() if os.geteuid() == 0 else None
        self._drop = os.geteuid() == 0 and blocker is None
        if blocker is not None:
            log.info(
                "the sandbox child stays root: user %s cannot read %s (the Python installation); Landlock and "
                "seccomp still confine it",
                "nobody",
                blocker,
            )
        if spare is not None and (_test_probe is not None or not spare.usable(threads, work_parent)):
            spare.discard()
            spare = None
        if spare is not None:
            self.folder = spare.folder
        else:
            self.folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=work_parent))
        try:
            self.files = self._copy_inputs(files)
            self._max_array_bytes = self._array_budget()
            self.process = self._start(threads, _test_probe, spare)
            ready = self._receive("loading", START_SECONDS)
            if ready.get("kind") != "ready" or not isinstance(ready.get("containment"), dict):
                raise self._protocol_error()
            self.containment = {"sandbox": True, **_clean_containment(ready["containment"])}
            log.info(
                "sandbox child %s: %s, address space %d MB, %d CPU seconds",
                self.process.pid,
                self.containment,
                address_space_mb,
                self._cpu_seconds,
            )
        except BaseException:
            self.close()
            if spare is not None and getattr(self, "process", None) is None:
                spare.discard()  # taken but never handed its request: close() knew nothing of it
            raise

    # -- set-up ------------------------------------------------------------------------------------------

    def _copy_inputs(self, files: ModelFiles) -> ModelFiles:
        """Copies of the inputs in the child's folder, under their own names, readable by the child."""
        copies = {}
        for role in ("model", "members", "non_members"):
            source = getattr(files, role)
            target = self.folder / role / source.name
            target.parent.mkdir()
            shutil.copyfile(source, target)
            copies[role] = target
        if self._drop:
            uid, gid = nobody_ids()
            for path in [self.folder, *self.folder.rglob("*")]:
                os.chown(path, uid, gid)
            self._check_reachable(uid)
        return ModelFiles(**copies, classes=files.classes)

    def _check_reachable(self, uid: int) -> None:
        for folder in self.folder.parents:
            info = folder.stat()
            if info.st_uid != uid and not info.st_mode & 0o001:
                raise MiaError(
                    f"the sandbox folder {self.folder} is inside {folder}, which user nobody cannot enter; "
                    "set TMPDIR (or MIA_TEMP_DIR) to a folder every user may traverse, such as /tmp",
                    code="sandbox_unavailable",
                )

    def _array_budget(self) -> int:
        # The child's answers can never hold more than the rows of the tables allow: a bound for reading.
        table_bytes = self.files.members.stat().st_size + self.files.non_members.stat().st_size
        return max(64 * 2**20, 200 * table_bytes)

    def _start(self, threads: int, probe: str | None, spare: SpareChild | None) -> subprocess.Popen:
        threads = max(int(threads), 1)
        wall = self.deadline.seconds if self.deadline.seconds is not None else DEFAULT_CPU_HOURS * 3600
        # All its threads busy for the whole time limit, and a margin: past that it is stuck or hostile.
        self._cpu_seconds = int(math.ceil(wall * threads * 1.1)) + 60
        process = spare.process if spare is not None else spawn_child(self.folder, threads)
        threading.Thread(target=self._drain_stderr, args=(process.stderr,), daemon=True).start()
        threading.Thread(target=self._read_answers, args=(process.stdout,), daemon=True).start()
        request = {
            "work_folder": str(self.folder),
            "address_space_bytes": self.address_space_mb * 2**20,
            "cpu_seconds": self._cpu_seconds,
            "drop_privileges": self._drop,
            "parent_pid": os.getpid(),
            "files": {role: str(getattr(self.files, role)) for role in ("model", "members", "non_members")},
            "classes": None if self.files.classes is None else list(self.files.classes),
        }
        if probe is not None:
            request["probe"] = probe
        self._send(process, request)
        return process

    # -- the channel -------------------------------------------------------------------------------------

    def _drain_stderr(self, stream: Any) -> None:
        kept = 0
        for line in iter(stream.readline, b""):
            self._stderr_tail.append(line[:4096])
            kept += len(line)
            while kept > STDERR_TAIL_BYTES and self._stderr_tail:
                kept -= len(self._stderr_tail.popleft())
        stream.close()

    def _read_answers(self, stream: Any) -> None:
        try:
            while True:
                self._messages.put(read_message(stream, self._max_array_bytes))
        except EOFError:
            self._messages.put(None)
        except (ProtocolError, ValueError, OSError) as exc:
            self._messages.put(exc)

    @staticmethod
    def _send(process: subprocess.Popen, header: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):  # the child is gone; the next receive says how
            write_message(process.stdin, header)

    def _receive(self, stage: str, limit: float | None = None) -> dict[str, Any]:
        """The child's next answer other than progress, within the deadline."""
        self.deadline.stage = stage
        while True:
            left = self.deadline.remaining()
            wait = min(x for x in (left, limit) if x is not None) if (left, limit) != (None, None) else None
            if wait is not None and wait <= 0:
                raise self.deadline.error() if left is not None and left <= 0 else self._start_error()
            try:
                message = self._messages.get(timeout=min(wait or CANCEL_POLL_SECONDS, CANCEL_POLL_SECONDS))
            except queue.Empty:
                self.deadline.raise_if_cancelled()  # the sweep beside this failed: its error is the audit's
                continue
            if message is None:
                raise self._died_error()
            if isinstance(message, Exception):
                raise self._protocol_error()
            header, arrays = message
            if header.get("kind") == "progress":
                self._forward_progress(header)
                continue
            header["_arrays"] = arrays
            return header

    def _forward_progress(self, header: dict[str, Any]) -> None:
        stage, done, total = header.get("stage"), header.get("done"), header.get("total")
        if stage not in CHILD_STAGES or not all(type(v) is int and 0 <= v <= 10**9 for v in (done, total)):
            raise self._protocol_error()
        self.deadline.stage = stage
        self.progress(stage, done, total)

    # -- the two steps -----------------------------------------------------------------------------------

    def score(self, request: ScoreRequest) -> ScoredTarget:
        self._send(
            self.process,
            {
                "kind": "score",
                "score": {
                    "label_column": request.label_column,
                    "seed": request.seed,
                    "boundary_queries": request.boundary_queries,
                    "boundary_max_rows": request.boundary_max_rows,
                    "threads": request.threads,
                },
            },
        )
        answer = self._receive("loading")
        self._raise_if_failed(answer)
        if answer.get("kind") != "scored":
            raise self._protocol_error()
        try:
            scored = scored_from_message(answer, answer.pop("_arrays"), request)
        except ProtocolError:
            raise self._protocol_error() from None
        self._rows = len(scored.is_member)
        return scored

    def check(self, request: CheckRequest) -> ModelCheck:
        """The bundle check (:func:`~mia_robustness.model_check.check_model`) in the child, instead of
        an audit's two steps: the child exits after answering."""
        self._send(self.process, {"kind": "check", "check": dataclasses.asdict(request)})
        answer = self._receive("loading")
        self._raise_if_failed(answer)
        if answer.get("kind") != "checked":
            raise self._protocol_error()
        try:
            return checked_from_message(answer, request)
        except ProtocolError:
            raise self._protocol_error() from None

    def reference_answers(self, request: ReferenceRequest, fit_sets: list[FitSet]) -> list[np.ndarray]:
        """The reference fits in the child: each set's confidences, checked against this audit's plan."""
        command = {"kind": "reference", "reference": _reference_fields(request)}
        answer = self._exchange(command, "reference_models", "answers")
        shapes = [fit_set.in_mask.shape for fit_set in fit_sets]
        return self._checked(lambda: answers_from_message(answer, answer.pop("_arrays"), shapes))

    def reference_fits(
        self, request: ReferenceRequest, jobs: list[tuple[int, int]], pool_rows: list[int]
    ) -> list[np.ndarray]:
        """A share of the reference stage's fits (a cluster worker's): for each ``(i, k)`` of ``jobs``,
        model ``k`` of fit set ``i`` (:meth:`ReferenceRequest.fit_sets`), its true-class confidences
        ``(1, pool_rows[n])`` on that set's pool, checked as the whole stage's answers are."""
        command = {"kind": "reference_fits", "reference": _reference_fields(request), "jobs": jobs}
        answer = self._exchange(command, "reference_models", "answers")
        shapes = [(1, rows) for rows in pool_rows]
        return self._checked(lambda: answers_from_message(answer, answer.pop("_arrays"), shapes))

    def what_if_fits(self, request: WhatIfRequest, jobs: list[tuple[int, int]]) -> WhatIfFits:
        """The what-if's plan and a share of its fits (``(config, model)`` pairs; none: the plan only),
        arrays ``(len(jobs), 1, rows)``."""
        command = {"kind": "what_if_fits", "what_if": dataclasses.asdict(request), "jobs": jobs}
        answer = self._exchange(command, "what_if", "what_if")
        return self._checked(
            lambda: what_if_from_message(answer, answer.pop("_arrays"), request, self._rows, jobs)
        )

    def what_if(self, request: WhatIfRequest) -> WhatIfFits:
        """The what-if's plan and fits in the child (after ``reference()``, when that ran)."""
        answer = self._exchange(
            {"kind": "what_if", "what_if": dataclasses.asdict(request)}, "what_if", "what_if"
        )
        return self._checked(lambda: what_if_from_message(answer, answer.pop("_arrays"), request, self._rows))

    def _exchange(self, command: dict[str, Any], stage: str, kind: str) -> dict[str, Any]:
        """Send ``command`` and take the child's answer of ``kind`` (its failure raised as ours)."""
        self._send(self.process, command)
        answer = self._receive(stage)
        self._raise_if_failed(answer)
        if answer.get("kind") != kind:
            raise self._protocol_error()
        return answer

    def _checked(self, parse: Callable[[], Any]) -> Any:
        """``parse()`` of an answer, its protocol errors as the audit's."""
        try:
            return parse()
        except ProtocolError:
            raise self._protocol_error() from None

    def probe(self) -> dict[str, Any]:
        """The test probe's result (tests only)."""
        answer = self._receive("loading")
        if answer.get("kind") != "probe":
            self._raise_if_failed(answer)
            raise self._protocol_error()
        return answer["result"]

    def close(self) -> None:
        """Stop the child (it exits by itself once its input closes) and remove its folder."""
        process = getattr(self, "process", None)
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(EXIT_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self._log_stderr()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- errors ------------------------------------------------------------------------------------------

    def _raise_if_failed(self, answer: dict[str, Any]) -> None:
        kind = answer.get("kind")
        stage = str(self.deadline.stage).replace("_", " ")
        if kind == "error":
            # The child runs the model, so it may name any class: only the 400s of bad input pass.
            cls = errors.error_class(answer.get("class"), default=ModelError, base=errors.InputError)
            cls = cls if cls.http_status == ModelError.http_status else ModelError
            code = answer.get("code")
            code = (
                code
                if isinstance(code, str) and code.replace("_", "").isalnum() and len(code) <= 60
                else cls.default_code
            )
            raise cls(clean_text(answer.get("message", "")), code=code)
        if kind == "memory":
            raise LimitError(
                f"the model needed more memory during {stage} than its sandbox allows ({self.address_space_mb:,} MB of "
                "address space); audit fewer rows or reference models, or raise the limit (--sandbox-memory-mb, "
                "MIA_SANDBOX_MEMORY_MB)",
                code="model_memory_limit",
            )
        if kind == "failed":
            exception = answer.get("exception")
            name = (
                exception
                if isinstance(exception, str) and exception.isidentifier() and len(exception) < 80
                else "an error"
            )
            raise ModelError(
                f"the model's own code raised {name} during {stage}; the audit cannot go on with this model. "
                "Check that it was saved fitted, and that it scores these tables where it was trained",
                code="model_failed",
            )

    def _died_error(self) -> MiaError:
        process = self.process
        try:
            code = process.wait(EXIT_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        stage = str(self.deadline.stage).replace("_", " ")
        log.info("sandbox child %s ended with status %s during %s", process.pid, code, stage)
        if code == -signal.SIGXCPU:
            return LimitError(
                f"the model used more CPU time during {stage} than its sandbox allows; audit fewer rows or "
                "reference models, or raise the time limit (--timeout, max_runtime)",
                code="model_cpu_limit",
            )
        if code in (-signal.SIGSEGV, -signal.SIGBUS, -signal.SIGABRT, -signal.SIGILL):
            return ModelError(
                f"the model crashed its sandboxed process during {stage} (signal {-code}); the model file may be "
                "damaged, crafted, or built for another version of its library",
                code="model_crashed",
            )
        if code == EXIT_CONFINEMENT_FAILED:
            log.warning("the sandbox child could not confine itself: %s", self._stderr_text(2000))
            return MiaError(
                "the sandbox could not be set up on this machine (seccomp or rlimits refused); see the log. "
                "For a model you trust, --no-sandbox runs it without one",
                code="sandbox_unavailable",
            )
        return ModelError(
            f"the model's sandboxed process ended during {stage} without an answer (status {code}); the model "
            "file may be damaged or crafted",
            code="model_crashed",
        )

    def _start_error(self) -> MiaError:
        return MiaError(f"the sandbox did not start within {START_SECONDS:g} s", code="sandbox_unavailable")

    def _protocol_error(self) -> ModelError:
        return ModelError(
            "the model's sandboxed process sent a malformed answer; the model file may be crafted to attack "
            "the audit, which was stopped",
            code="model_protocol_violation",
        )

    def _stderr_text(self, limit: int = STDERR_TAIL_BYTES) -> str:
        return clean_text(b"".join(self._stderr_tail).decode("utf-8", "replace"), limit)

    def _log_stderr(self) -> None:
        if self._stderr_tail and log.isEnabledFor(logging.DEBUG):
            log.debug("sandbox child output (its end): %s", self._stderr_text())


def _reference_fields(request: ReferenceRequest) -> dict[str, Any]:
    return {**dataclasses.asdict(request), "attacks": list(request.attacks)}


def _clean_containment(raw: dict[str, Any]) -> dict[str, Any]:
    abi = raw.get("landlock_abi")
    return {
        "seccomp": raw.get("seccomp") is True,
        "landlock_abi": abi if type(abi) is int and 0 <= abi < 100 else 0,
        "user": clean_text(raw.get("user", ""), 40),
    }


def open_model(
    files: ModelFiles,
    *,
    sandbox: bool,
    deadline: Deadline,
    progress: ProgressCallback,
    work_parent: Path | None = None,
    threads: int = 1,
    address_space_mb: int | None = None,
    n_models: int = 0,
    max_memory_mb: float | None = None,
) -> SandboxedModel | InProcessModel:
    """The model stage for ``files``: in a sandbox child (default) or in this process."""
    if not sandbox:
        model, members, non_members, saved_version = load_files(files)
        return InProcessModel(model, members, non_members, saved_version=saved_version, progress=progress)
    if address_space_mb is None:
        address_space_mb = default_address_space_mb(files, threads, n_models, max_memory_mb)
    return SandboxedModel(
        files,
        work_parent=work_parent,
        threads=threads,
        address_space_mb=address_space_mb,
        deadline=deadline,
        progress=progress,
    )
