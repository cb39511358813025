"""Every environment variable the serving and training shells read, parsed once into frozen settings.

No other module reads ``os.environ``: the shells call :meth:`ServerSettings.from_env` or
:meth:`TrainingSettings.from_env` once at start-up and pass the result down. A bad value raises
:class:`~mia_robustness.errors.OptionsError` (code ``bad_setting``) that names the variable, so a
misconfigured container fails at start with one clear line instead of at the first request.

Variables (all optional):

==========================================  ==========================================================
``MIA_BIND_HOST``                           interface to listen on (default ``0.0.0.0``)
``SAGEMAKER_BIND_TO_PORT``                  port (default 8080)
``SAGEMAKER_MODEL_SERVER_WORKERS``          audits that run at the same time (default ``min(2, CPUs)``)
``MIA_SERVER_THREADS``                      HTTP threads (default ``2 * workers + 2``)
``SAGEMAKER_MODEL_SERVER_TIMEOUT``          seconds one audit may run (default 3600)
``MIA_MAX_PAYLOAD_MB``                      largest request body in MB (default 100)
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``    report format when ``Accept`` is absent or ``*/*``
``MIA_MAX_UNPACKED_MB``                     bundle limit: total unpacked size in MB
``MIA_MAX_ARCHIVE_MEMBERS``                 bundle limit: number of archive members
``MIA_MAX_COMPRESSION_RATIO``               bundle limit: unpacked / packed size of a member
``MIA_TEMP_DIR``                            parent of every temporary folder (default: system temp)
``MIA_MAX_AUDIT_MEMORY_MB``                 refuse an audit whose estimated peak memory is above this
``MIA_OPT_ML``                              root of the SageMaker tree for ``train`` (``/opt/ml``)
``MIA_LOG_LEVEL``                           ``debug``, ``info`` (default), ``warning`` or ``error``
``MIA_FRONT_SERVER``                        ``nginx`` (default) in front of gunicorn, or ``none`` (tests)
==========================================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import OptionsError

if TYPE_CHECKING:  # the engine's archive module is only needed when limits are actually built
    from ..archive import BundleLimits

MB = 1024 * 1024
REPORT_MEDIA_TYPES = ("application/json", "text/csv", "text/html")
LOG_LEVELS = ("debug", "info", "warning", "error")
# What listens on the port: nginx in front of gunicorn (see front.py), or gunicorn itself ("none": only
# for machines without nginx, e.g. running the tests; slow clients can then hold every HTTP thread).
FRONT_SERVERS = ("nginx", "none")
# SageMaker batch transform refuses a MaxPayloadInMB above 100; a larger body limit can still serve
# direct HTTP callers, but the value advertised to SageMaker is capped.
SAGEMAKER_MAX_PAYLOAD_MB = 100
# Threads kept free for /ping and /execution-parameters whatever the invocations do.
RESERVED_THREADS = 2


def _error(name: str, raw: str, expected: str) -> OptionsError:
    return OptionsError(f"environment variable {name}={raw!r} is invalid: {expected}", code="bad_setting")


def _int(
    environ: Mapping[str, str], name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _error(name, raw, "give a whole number") from None
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise _error(name, raw, f"give a whole number {bounds}")
    return value


def _float(environ: Mapping[str, str], name: str, default: float | None, low: float) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise _error(name, raw, "give a number") from None
    if not value >= low or value == float("inf"):  # also rejects NaN
        raise _error(name, raw, f"give a finite number of at least {low:g}")
    return value


def _choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.split(";")[0].strip().lower()
    if value not in choices:
        raise _error(name, raw, f"choose one of {', '.join(choices)}")
    return value


def _directory(
    environ: Mapping[str, str], name: str, default: Path | None, *, must_exist: bool
) -> Path | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    path = Path(raw)
    if must_exist and not path.is_dir():
        raise _error(name, raw, "no such directory; create it or unset the variable")
    return path


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which ``taskset``/cpusets narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class UnpackLimits:
    """The bundle-unpacking limits set by the environment; ``None`` keeps the engine's default."""

    max_unpacked_bytes: int | None = None
    max_members: int | None = None
    max_compression_ratio: float | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> UnpackLimits:
        unpacked_mb = _int(environ, "MIA_MAX_UNPACKED_MB", None, 1)
        return cls(
            max_unpacked_bytes=None if unpacked_mb is None else unpacked_mb * MB,
            max_members=_int(environ, "MIA_MAX_ARCHIVE_MEMBERS", None, 1),
            max_compression_ratio=_float(environ, "MIA_MAX_COMPRESSION_RATIO", None, 1.0),
        )

    def bundle_limits(self) -> BundleLimits | None:
        """The engine's :class:`~mia_robustness.archive.BundleLimits`, or ``None`` for its defaults."""
        given = {name: value for name, value in vars(self).items() if value is not None}
        if not given:
            return None
        from ..archive import BundleLimits

        return BundleLimits(**given)


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the HTTP server (``serve``).

    Attributes
    ----------
    host, port:
        Where gunicorn listens.
    workers:
        Audits that run at the same time, each in its own child process; also the
        ``MaxConcurrentTransforms`` the server advertises.
    threads:
        HTTP threads of the (single) gunicorn worker process: one per running or queued invocation plus
        :data:`RESERVED_THREADS` that keep ``/ping`` answerable.
    timeout:
        Seconds one audit may run before it is stopped (batch transform allows an hour per call).
    max_payload_bytes:
        Largest accepted request body.
    default_accept:
        Report media type for a missing or ``*/*`` ``Accept`` header.
    unpack_limits:
        Bundle-unpacking limits (see :class:`UnpackLimits`).
    temp_root:
        Parent of every invocation's temporary folder (``None``: the system's temporary folder).
    max_audit_memory_bytes:
        Memory cap for one audit: an audit whose estimated peak memory (``audit(max_memory_mb=...)``) is
        above it is refused with ``LimitError`` code ``memory_limit`` (400) before any attack runs;
        ``None`` for no cap.
    cpus:
        CPUs the server may use; each audit gets ``max(1, cpus // workers)`` threads.
    log_level:
        Level of the server's and the audits' log lines.
    front_server:
        ``nginx`` (listens on ``host:port``, hands complete requests to gunicorn on a unix socket) or
        ``none`` (gunicorn listens on ``host:port`` itself).
    """

    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 4
    timeout: int = 3600
    max_payload_bytes: int = 100 * MB
    default_accept: str = "application/json"
    unpack_limits: UnpackLimits = UnpackLimits()
    temp_root: Path | None = None
    max_audit_memory_bytes: int | None = None
    cpus: int = 1
    log_level: str = "info"
    front_server: str = "nginx"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cpus: int | None = None) -> ServerSettings:
        """Parse ``environ`` (``os.environ`` when ``None``); ``cpus`` overrides the detected CPU count."""
        environ = os.environ if environ is None else environ
        cpus = cpus or usable_cpus()
        # Two audits by default: each is CPU-bound for minutes, so more than the CPUs only slows all
        # of them and multiplies memory; two still overlaps one audit's unpacking and loading with
        # another's training. One on a single-CPU machine.
        workers = _int(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", min(2, cpus), 1, 64)
        threads = _int(environ, "MIA_SERVER_THREADS", 2 * workers + RESERVED_THREADS, 1, 512)
        if threads < workers + RESERVED_THREADS:
            raise _error(
                "MIA_SERVER_THREADS",
                str(threads),
                f"give at least SAGEMAKER_MODEL_SERVER_WORKERS + {RESERVED_THREADS} = {workers + RESERVED_THREADS} "
                "so that /ping stays answerable while every audit runs",
            )
        memory_mb = _int(environ, "MIA_MAX_AUDIT_MEMORY_MB", None, 64)
        return cls(
            host=environ.get("MIA_BIND_HOST", "").strip() or "0.0.0.0",
            port=_int(environ, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            workers=workers,
            threads=threads,
            timeout=_int(environ, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 3600, 1),
            max_payload_bytes=_int(environ, "MIA_MAX_PAYLOAD_MB", 100, 1, 100_000) * MB,
            default_accept=_choice(
                environ, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "application/json", REPORT_MEDIA_TYPES
            ),
            unpack_limits=UnpackLimits.from_env(environ),
            temp_root=_directory(environ, "MIA_TEMP_DIR", None, must_exist=True),
            max_audit_memory_bytes=None if memory_mb is None else memory_mb * MB,
            cpus=cpus,
            log_level=_choice(environ, "MIA_LOG_LEVEL", "info", LOG_LEVELS),
            front_server=_choice(environ, "MIA_FRONT_SERVER", "nginx", FRONT_SERVERS),
        )

    @property
    def max_payload_mb(self) -> int:
        """The body limit in whole MB, as SageMaker's ``MaxPayloadInMB`` wants it (at most 100)."""
        return min(self.max_payload_bytes // MB, SAGEMAKER_MAX_PAYLOAD_MB)

    @property
    def max_audit_memory_mb(self) -> float | None:
        """The memory cap in MB, as ``audit(max_memory_mb=...)`` takes it."""
        return None if self.max_audit_memory_bytes is None else self.max_audit_memory_bytes / MB

    @property
    def threads_per_audit(self) -> int:
        """Compute threads for one audit, so that ``workers`` audits together fill the CPUs once."""
        return max(1, self.cpus // self.workers)


def opt_ml_root(environ: Mapping[str, str] | None = None) -> Path:
    """``MIA_OPT_ML`` or ``/opt/ml``; never fails, so a training job can report bad settings there."""
    environ = os.environ if environ is None else environ
    return Path(environ.get("MIA_OPT_ML", "").strip() or "/opt/ml")


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of the training-job shell (``train``).

    Attributes
    ----------
    opt_ml:
        Root of the SageMaker tree (``input/``, ``model/``, ``output/``); ``MIA_OPT_ML``, default ``/opt/ml``.
    unpack_limits, temp_root, max_audit_memory_bytes, log_level:
        As in :class:`ServerSettings`.
    """

    opt_ml: Path = Path("/opt/ml")
    unpack_limits: UnpackLimits = UnpackLimits()
    temp_root: Path | None = None
    max_audit_memory_bytes: int | None = None
    log_level: str = "info"

    @property
    def max_audit_memory_mb(self) -> float | None:
        """The memory cap in MB, as ``audit(max_memory_mb=...)`` takes it."""
        return None if self.max_audit_memory_bytes is None else self.max_audit_memory_bytes / MB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingSettings:
        """Parse ``environ`` (``os.environ`` when ``None``)."""
        environ = os.environ if environ is None else environ
        memory_mb = _int(environ, "MIA_MAX_AUDIT_MEMORY_MB", None, 64)
        return cls(
            opt_ml=opt_ml_root(environ),
            unpack_limits=UnpackLimits.from_env(environ),
            temp_root=_directory(environ, "MIA_TEMP_DIR", None, must_exist=True),
            max_audit_memory_bytes=None if memory_mb is None else memory_mb * MB,
            log_level=_choice(environ, "MIA_LOG_LEVEL", "info", LOG_LEVELS),
        )
