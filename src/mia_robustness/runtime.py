"""Settings every shell shares (CLI, ``serve``, ``train``): limits, temporary folder, memory, threads, log
level; and the names of every environment variable the product reads, in one place.

No module but this one and ``serving/settings.py`` reads the environment, and both read it through
``from_env(environ)`` once at start-up, so that a misconfigured container fails at start with one clear
line (:class:`~mia_robustness.errors.OptionsError`, code ``bad_setting``, naming the variable) and tests pass
a dict instead of patching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import OptionsError

if TYPE_CHECKING:  # the archive module is only needed when limits are actually built
    from .archive import BundleLimits
    from .reference_cache import ReferenceCache

# ---- every environment variable, by the shell that reads it ------------------------------------------
# Shared by the CLI, serve and train (RuntimeSettings).
ENV_TEMP_DIR = "MIA_TEMP_DIR"
ENV_MAX_AUDIT_MEMORY_MB = "MIA_MAX_AUDIT_MEMORY_MB"
ENV_SANDBOX_MEMORY_MB = "MIA_SANDBOX_MEMORY_MB"
ENV_MAX_UNPACKED_MB = "MIA_MAX_UNPACKED_MB"
ENV_MAX_ARCHIVE_MEMBERS = "MIA_MAX_ARCHIVE_MEMBERS"
ENV_MAX_COMPRESSION_RATIO = "MIA_MAX_COMPRESSION_RATIO"
ENV_LOG_LEVEL = "MIA_LOG_LEVEL"
# The reference models' answers kept between audits (reference_cache.py): off unless a folder is named.
ENV_CACHE_DIR = "MIA_CACHE_DIR"
ENV_CACHE_MAX_MB = "MIA_CACHE_MAX_MB"
# Where the audit's work runs: a Dask scheduler's address (tcp://HOST:PORT); unset, in this process.
ENV_DASK_SCHEDULER = "MIA_DASK_SCHEDULER"
# serve (serving/settings.py).
ENV_BIND_HOST = "MIA_BIND_HOST"
ENV_PORT = "SAGEMAKER_BIND_TO_PORT"
ENV_WORKERS = "SAGEMAKER_MODEL_SERVER_WORKERS"
ENV_SERVER_THREADS = "MIA_SERVER_THREADS"
ENV_SWEEP_HELPERS = "MIA_SWEEP_HELPERS"
ENV_TIMEOUT = "SAGEMAKER_MODEL_SERVER_TIMEOUT"
ENV_MAX_PAYLOAD_MB = "MIA_MAX_PAYLOAD_MB"
ENV_DEFAULT_ACCEPT = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
ENV_FRONT_SERVER = "MIA_FRONT_SERVER"
# Audit options for every invocation, in the custom-attributes header's form (name=value;name=value):
# batch transform sends no header, so `mia-robustness sagemaker audit --via batch` sets options here.
ENV_AUDIT_OPTIONS = "MIA_AUDIT_OPTIONS"
# train (training.py).
ENV_OPT_ML = "MIA_OPT_ML"
# train on several hosts (training_cluster.py): the Dask ports, how long hosts wait for each other, and
# where each host is (tests only: "algo-1=127.0.0.1;algo-2=127.0.0.1"; SageMaker's DNS otherwise).
ENV_SCHEDULER_PORT = "MIA_DASK_SCHEDULER_PORT"
ENV_WORKER_PORT = "MIA_DASK_WORKER_PORT"
ENV_CLUSTER_JOIN_TIMEOUT = "MIA_CLUSTER_JOIN_TIMEOUT_S"
ENV_HOST_ADDRESSES = "MIA_HOST_ADDRESSES"
# The CLI: a traceback instead of one line for unexpected errors.
ENV_DEBUG = "MIA_DEBUG"

MB = 1024 * 1024
LOG_LEVELS = ("debug", "info", "warning", "error")


def setting_error(name: str, raw: str, expected: str) -> OptionsError:
    return OptionsError(f"environment variable {name}={raw!r} is invalid: {expected}", code="bad_setting")


def env_int(
    environ: Mapping[str, str], name: str, default: int | None, low: int, high: int | None = None
) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise setting_error(name, raw, "give a whole number") from None
    if value < low or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise setting_error(name, raw, f"give a whole number {bounds}")
    return value


def env_float(environ: Mapping[str, str], name: str, default: float | None, low: float) -> float | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise setting_error(name, raw, "give a number") from None
    if not value >= low or value == float("inf"):  # also rejects NaN
        raise setting_error(name, raw, f"give a finite number of at least {low:g}")
    return value


def env_choice(environ: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    value = raw.split(";")[0].strip().lower()
    if value not in choices:
        raise setting_error(name, raw, f"choose one of {', '.join(choices)}")
    return value


def env_directory(
    environ: Mapping[str, str], name: str, default: Path | None, *, must_exist: bool
) -> Path | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    path = Path(raw)
    if must_exist and not path.is_dir():
        raise setting_error(name, raw, "no such directory; create it or unset the variable")
    return path


def env_scheduler(environ: Mapping[str, str], name: str) -> str | None:
    """A Dask scheduler address (``tcp://HOST:PORT``), or ``None`` when unset."""
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    from .executor import scheduler_address

    try:
        return scheduler_address(raw)
    except OptionsError:
        raise setting_error(name, raw, "give a Dask scheduler address, tcp://HOST:PORT") from None


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
        unpacked_mb = env_int(environ, ENV_MAX_UNPACKED_MB, None, 1)
        return cls(
            max_unpacked_bytes=None if unpacked_mb is None else unpacked_mb * MB,
            max_members=env_int(environ, ENV_MAX_ARCHIVE_MEMBERS, None, 1),
            max_compression_ratio=env_float(environ, ENV_MAX_COMPRESSION_RATIO, None, 1.0),
        )

    def bundle_limits(self) -> BundleLimits | None:
        """The engine's :class:`~mia_robustness.archive.BundleLimits`, or ``None`` for its defaults."""
        given = {name: value for name, value in vars(self).items() if value is not None}
        if not given:
            return None
        from .archive import BundleLimits

        return BundleLimits(**given)


@dataclass(frozen=True)
class RuntimeSettings:
    """How an audit runs, whatever the shell: what the environment sets, which flags may override.

    Attributes
    ----------
    unpack_limits:
        Bundle-unpacking limits (``MIA_MAX_UNPACKED_MB``, ``MIA_MAX_ARCHIVE_MEMBERS``,
        ``MIA_MAX_COMPRESSION_RATIO``).
    temp_root:
        Parent of every temporary folder (``MIA_TEMP_DIR``; ``None``: the system's temporary folder).
    max_audit_memory_bytes:
        Refuse an audit whose estimated peak memory is above this (``MIA_MAX_AUDIT_MEMORY_MB``).
    sandbox_memory_mb:
        Address-space limit of the sandboxed model process (``MIA_SANDBOX_MEMORY_MB``; ``None``: from
        the bundle's sizes).
    log_level:
        ``MIA_LOG_LEVEL``.
    cache_dir:
        Where the reference models' answers are kept between audits (``MIA_CACHE_DIR``; ``None``, the
        default: no cache; see ``reference_cache.py`` for why it is off unless asked for).
    cache_max_mb:
        The cache folder's size bound (``MIA_CACHE_MAX_MB``, default 1024); least recently used entries go.
    cluster:
        The Dask scheduler the audit's work runs on, ``tcp://HOST:PORT`` (``MIA_DASK_SCHEDULER``;
        ``None``: in this process). Where the work runs, not what is measured: not an audit option.
    """

    unpack_limits: UnpackLimits = UnpackLimits()
    temp_root: Path | None = None
    max_audit_memory_bytes: int | None = None
    sandbox_memory_mb: int | None = None
    log_level: str = "info"
    cache_dir: Path | None = None
    cache_max_mb: int = 1024
    cluster: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Parse ``environ`` (``os.environ`` when ``None``)."""
        environ = os.environ if environ is None else environ
        memory_mb = env_int(environ, ENV_MAX_AUDIT_MEMORY_MB, None, 64)
        return cls(
            unpack_limits=UnpackLimits.from_env(environ),
            temp_root=env_directory(environ, ENV_TEMP_DIR, None, must_exist=True),
            max_audit_memory_bytes=None if memory_mb is None else memory_mb * MB,
            sandbox_memory_mb=env_int(environ, ENV_SANDBOX_MEMORY_MB, None, 1024),
            log_level=env_choice(environ, ENV_LOG_LEVEL, "info", LOG_LEVELS),
            cache_dir=env_directory(environ, ENV_CACHE_DIR, None, must_exist=True),
            cache_max_mb=env_int(environ, ENV_CACHE_MAX_MB, 1024, 1),
            cluster=env_scheduler(environ, ENV_DASK_SCHEDULER),
        )

    @property
    def max_audit_memory_mb(self) -> float | None:
        """The memory cap in MB, as ``audit(max_memory_mb=...)`` takes it."""
        return None if self.max_audit_memory_bytes is None else self.max_audit_memory_bytes / MB

    def audit_arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``mia_robustness.audit`` these settings decide."""
        return {
            "limits": self.unpack_limits.bundle_limits(),
            "workdir": self.temp_root,
            "max_memory_mb": self.max_audit_memory_mb,
            "sandbox_memory_mb": self.sandbox_memory_mb,
            "cache": self.reference_cache(),
            "cluster": self.cluster,
        }

    def reference_cache(self) -> ReferenceCache | None:
        """The reference-answer cache these settings name, or ``None``."""
        if self.cache_dir is None:
            return None
        from .reference_cache import ReferenceCache

        return ReferenceCache(self.cache_dir, self.cache_max_mb * MB)
