"""The serving and training shells' settings, parsed once from the environment into frozen objects.

The variables' names are constants in :mod:`mia_robustness.runtime`, which also parses what every shell
shares (:class:`~mia_robustness.runtime.RuntimeSettings`). The shells call :meth:`ServerSettings.from_env`
or :meth:`TrainingSettings.from_env` once at start-up and pass the result down. A bad value raises
:class:`~mia_robustness.errors.OptionsError` (code ``bad_setting``) that names the variable, so a
misconfigured container fails at start with one clear line instead of at the first request.

Variables (all optional):

==========================================  ==========================================================
``MIA_BIND_HOST``                           interface to listen on (default ``0.0.0.0``)
``SAGEMAKER_BIND_TO_PORT``                  port (default 8080)
``SAGEMAKER_MODEL_SERVER_WORKERS``          audits that run at the same time (default ``min(2, CPUs)``)
``MIA_SERVER_THREADS``                      HTTP threads (default ``2 * workers + 2``)
``MIA_SWEEP_HELPERS``                       most sweep helper processes one audit gets (default CPUs - 1)
``SAGEMAKER_MODEL_SERVER_TIMEOUT``          seconds one audit may run (default 3600)
``MIA_MAX_PAYLOAD_MB``                      largest request body in MB (default 100)
``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT``    report format when ``Accept`` is absent or ``*/*``
``MIA_MAX_UNPACKED_MB``                     bundle limit: total unpacked size in MB
``MIA_MAX_ARCHIVE_MEMBERS``                 bundle limit: number of archive members
``MIA_MAX_COMPRESSION_RATIO``               bundle limit: unpacked / packed size of a member
``MIA_TEMP_DIR``                            parent of every temporary folder (default: system temp)
``MIA_MAX_AUDIT_MEMORY_MB``                 refuse an audit whose estimated peak memory is above this
``MIA_SANDBOX_MEMORY_MB``                   address-space limit of the sandboxed model process
``MIA_OPT_ML``                              root of the SageMaker tree for ``train`` (``/opt/ml``)
``MIA_DASK_SCHEDULER_PORT``                 ``train`` on several hosts: the first host's scheduler port (8786)
``MIA_DASK_WORKER_PORT``                    ``train`` on several hosts: each host's worker port (8788; 0: any)
``MIA_CLUSTER_JOIN_TIMEOUT_S``              ``train`` on several hosts: seconds to wait for each other (300)
``MIA_HOST_ADDRESSES``                      ``train`` on several hosts: ``host=address;...`` instead of DNS
``MIA_LOG_LEVEL``                           ``debug``, ``info`` (default), ``warning`` or ``error``
``MIA_DASK_SCHEDULER``                      run the audits' work on this Dask scheduler (``tcp://HOST:PORT``)
``MIA_FRONT_SERVER``                        ``nginx`` (default) in front of gunicorn, or ``none`` (tests)
``MIA_AUDIT_OPTIONS``                       audit options for every invocation (``name=value;...``); the
                                            custom-attributes header overrides them
==========================================  ==========================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionsError
from ..options import normalize_name, options_from_mapping, parse_key_value_pairs
from ..runtime import (
    ENV_AUDIT_OPTIONS,
    ENV_BIND_HOST,
    ENV_CLUSTER_JOIN_TIMEOUT,
    ENV_DEFAULT_ACCEPT,
    ENV_FRONT_SERVER,
    ENV_HOST_ADDRESSES,
    ENV_MAX_PAYLOAD_MB,
    ENV_OPT_ML,
    ENV_PORT,
    ENV_SCHEDULER_PORT,
    ENV_SERVER_THREADS,
    ENV_SWEEP_HELPERS,
    ENV_TIMEOUT,
    ENV_WORKER_PORT,
    ENV_WORKERS,
    MB,
    RuntimeSettings,
    env_choice,
    env_float,
    env_int,
    setting_error,
    usable_cpus,
)

REPORT_MEDIA_TYPES = ("application/json", "text/csv", "text/html")
# What listens on the port: nginx in front of gunicorn (see front.py), or gunicorn itself ("none": only
# for machines without nginx, e.g. running the tests; slow clients can then hold every HTTP thread).
FRONT_SERVERS = ("nginx", "none")
# SageMaker batch transform refuses a MaxPayloadInMB above 100; a larger body limit can still serve
# direct HTTP callers, but the value advertised to SageMaker is capped.
SAGEMAKER_MAX_PAYLOAD_MB = 100
# Threads kept free for /ping and /execution-parameters whatever the invocations do.
RESERVED_THREADS = 2


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the HTTP server (``serve``).

    Attributes
    ----------
    host, port:
        Where the server listens.
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
    runtime:
        What every shell shares: unpacking limits, temporary folder, memory caps, log level
        (:class:`~mia_robustness.runtime.RuntimeSettings`).
    cpus:
        CPUs the server may use; each audit gets ``max(1, cpus // workers)`` threads, and the CPUs no
        running audit uses as sweep helper processes (``runner.py``).
    max_helpers:
        Most sweep helper processes one audit gets (``MIA_SWEEP_HELPERS``; 0: none, every audit keeps to
        its threads).
    front_server:
        ``nginx`` (listens on ``host:port``, hands complete requests to gunicorn on a unix socket) or
        ``none`` (gunicorn listens on ``host:port`` itself).
    default_options:
        Audit options for every invocation, ``(name, value)`` pairs with normalised names
        (``MIA_AUDIT_OPTIONS``); the custom-attributes header overrides them.
    """

    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    threads: int = 4
    timeout: int = 3600
    max_payload_bytes: int = 100 * MB
    default_accept: str = "application/json"
    runtime: RuntimeSettings = RuntimeSettings()
    cpus: int = 1
    max_helpers: int = 0
    front_server: str = "nginx"
    default_options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, cpus: int | None = None) -> ServerSettings:
        """Parse ``environ`` (``os.environ`` when ``None``); ``cpus`` overrides the detected CPU count."""
        environ = os.environ if environ is None else environ
        cpus = cpus or usable_cpus()
        # Two audits by default: each is CPU-bound for minutes, so more than the CPUs only slows all
        # of them and multiplies memory; two still overlaps one audit's unpacking and loading with
        # another's training. One on a single-CPU machine.
        workers = env_int(environ, ENV_WORKERS, min(2, cpus), 1, 64)
        threads = env_int(environ, ENV_SERVER_THREADS, 2 * workers + RESERVED_THREADS, 1, 512)
        if threads < workers + RESERVED_THREADS:
            raise setting_error(
                ENV_SERVER_THREADS,
                str(threads),
                f"give at least {ENV_WORKERS} + {RESERVED_THREADS} = {workers + RESERVED_THREADS} "
                "so that /ping stays answerable while every audit runs",
            )
        return cls(
            host=environ.get(ENV_BIND_HOST, "").strip() or "0.0.0.0",
            port=env_int(environ, ENV_PORT, 8080, 1, 65535),
            workers=workers,
            threads=threads,
            timeout=env_int(environ, ENV_TIMEOUT, 3600, 1),
            max_payload_bytes=env_int(environ, ENV_MAX_PAYLOAD_MB, 100, 1, 100_000) * MB,
            default_accept=env_choice(environ, ENV_DEFAULT_ACCEPT, "application/json", REPORT_MEDIA_TYPES),
            runtime=RuntimeSettings.from_env(environ),
            cpus=cpus,
            max_helpers=env_int(environ, ENV_SWEEP_HELPERS, cpus - 1, 0, 256),
            front_server=env_choice(environ, ENV_FRONT_SERVER, "nginx", FRONT_SERVERS),
            default_options=env_audit_options(environ),
        )

    @property
    def default_overrides(self) -> dict[str, str]:
        """:attr:`default_options` as a dict, ready to be laid under a request's own options."""
        return dict(self.default_options)

    @property
    def max_payload_mb(self) -> int:
        """The body limit in whole MB, as SageMaker's ``MaxPayloadInMB`` wants it (at most 100)."""
        return min(self.max_payload_bytes // MB, SAGEMAKER_MAX_PAYLOAD_MB)

    @property
    def threads_per_audit(self) -> int:
        """Compute threads for one audit, so that ``workers`` audits together fill the CPUs once."""
        return max(1, self.cpus // self.workers)


def opt_ml_root(environ: Mapping[str, str] | None = None) -> Path:
    """``MIA_OPT_ML`` or ``/opt/ml``; never fails, so a training job can report bad settings there."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ENV_OPT_ML, "").strip() or "/opt/ml")


@dataclass(frozen=True)
class JobClusterSettings:
    """How the hosts of a multi-instance training job find each other (see ``training_cluster``).

    Attributes
    ----------
    scheduler_port:
        Port of the Dask scheduler on the first host (``MIA_DASK_SCHEDULER_PORT``, Dask's own 8786).
    worker_port:
        Port of each host's Dask worker (``MIA_DASK_WORKER_PORT``, 8788; 0: any free port).
    join_timeout:
        Seconds the first host waits for every host's worker, and another host for the scheduler
        (``MIA_CLUSTER_JOIN_TIMEOUT_S``, 300): hosts of one job start minutes apart at most.
    host_addresses:
        ``(host, address)`` pairs that replace DNS for those hosts (``MIA_HOST_ADDRESSES``,
        ``algo-1=127.0.0.1;algo-2=127.0.0.1``): for tests that run every host on one machine.
    """

    scheduler_port: int = 8786
    worker_port: int = 8788
    join_timeout: float = 300.0
    host_addresses: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> JobClusterSettings:
        return cls(
            scheduler_port=env_int(environ, ENV_SCHEDULER_PORT, 8786, 1, 65535),
            worker_port=env_int(environ, ENV_WORKER_PORT, 8788, 0, 65535),
            join_timeout=env_float(environ, ENV_CLUSTER_JOIN_TIMEOUT, 300.0, 1.0),
            host_addresses=env_host_addresses(environ),
        )


@dataclass(frozen=True)
class TrainingSettings:
    """Settings of the training-job shell (``train``).

    Attributes
    ----------
    opt_ml:
        Root of the SageMaker tree (``input/``, ``model/``, ``output/``); ``MIA_OPT_ML``, default ``/opt/ml``.
    runtime:
        What every shell shares (:class:`~mia_robustness.runtime.RuntimeSettings`).
    job_cluster:
        How the hosts of a multi-instance job find each other (:class:`JobClusterSettings`).
    cpus:
        CPUs of this host: the threads of its Dask worker in a multi-instance job.
    """

    opt_ml: Path = Path("/opt/ml")
    runtime: RuntimeSettings = RuntimeSettings()
    job_cluster: JobClusterSettings = JobClusterSettings()
    cpus: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrainingSettings:
        """Parse ``environ`` (``os.environ`` when ``None``)."""
        environ = os.environ if environ is None else environ
        return cls(
            opt_ml=opt_ml_root(environ),
            runtime=RuntimeSettings.from_env(environ),
            job_cluster=JobClusterSettings.from_env(environ),
            cpus=usable_cpus(),
        )


def env_host_addresses(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``MIA_HOST_ADDRESSES`` (``host=address;host=address``) as ``(host, address)`` pairs."""
    raw = environ.get(ENV_HOST_ADDRESSES, "").strip()
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(";"))):
        host, sep, address = (text.strip() for text in item.partition("="))
        if not sep or not host or not address or any(c.isspace() for c in host + address):
            raise setting_error(
                ENV_HOST_ADDRESSES, raw[:200], "give host=address pairs, e.g. algo-1=10.0.0.1;algo-2=10.0.0.2"
            )
        pairs[host] = address
    return tuple(pairs.items())


def env_audit_options(environ: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """``MIA_AUDIT_OPTIONS`` parsed and validated, as ``(normalised name, value)`` pairs."""
    raw = environ.get(ENV_AUDIT_OPTIONS, "").strip()
    if not raw:
        return ()
    try:
        pairs = {normalize_name(name): value for name, value in parse_key_value_pairs(raw).items()}
        options_from_mapping(pairs)
    except OptionsError as error:
        raise setting_error(
            ENV_AUDIT_OPTIONS, raw[:200], f"{error.message} (the form is name=value;name=value)"
        ) from None
    return tuple(pairs.items())
