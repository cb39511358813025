"""``train`` on several hosts: the Dask cluster of a multi-instance SageMaker training job.

SageMaker writes ``/opt/ml/input/config/resourceconfig.json`` on every host of a training job::

    {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], ...}

With one host (or no such file) ``train`` audits as it always has, and Dask is not imported. With several,
each host takes a role by its name, the first of the sorted names leading (as SageMaker's own toolkits do):

- **the first host** starts a Dask scheduler on ``MIA_DASK_SCHEDULER_PORT`` (8786) and a worker with its
  cores, waits until every host's worker has joined, runs the audit on that cluster, then tells the others
  the outcome and stops the scheduler once their workers have left;
- **every other host** waits for the scheduler (``MIA_CLUSTER_JOIN_TIMEOUT_S``, 300 s), starts a worker
  with its cores on ``MIA_DASK_WORKER_PORT`` (8788) and stays until the scheduler says the audit is over.

The outcome travels as the scheduler's metadata, so a worker host leaves when it is told, not on a timer.
Failures: the host that sees one writes ``output/failure`` and exits non-zero; the first host tells the
others (each then exits 1 with ``peer_failed: host algo-1 failed: <its reason>`` in its own failure file), and
a worker host that fails tells the first host, whose audit is interrupted and which then tells the rest.
A host that loses its peers (the scheduler gone, a host's worker gone) fails the same way.

The scheduler and the workers are ``dask scheduler`` / ``dask worker`` processes, children of ``train`` that
die with it (``PR_SET_PDEATHSIG``). Dask's protocol is unauthenticated: these ports must be reachable only
inside the job, which is what SageMaker's network isolation and the job's own VPC security group give.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ClusterError, InputError, MiaError
from .executor import WORKER_PRELOAD
from .json_config import load_json_config
from .serving.settings import JobClusterSettings

# resourceconfig.json is a few hundred bytes; a file this size is not SageMaker's.
MAX_RESOURCE_CONFIG_BYTES = 1024 * 1024
# Scheduler metadata under which the hosts talk: the first host's outcome, a worker host's failure.
METADATA_ROOT = "mia-robustness-train"
OUTCOME = [METADATA_ROOT, "outcome"]
# How often hosts look at each other, and how long a host waits for its peers at the end.
POLL_S = 0.5
LEAVE_TIMEOUT_S = 60.0
# How long the first host waits for a vanished host's own reason before giving its own.
REPORT_GRACE_S = 3.0
# A scheduler that cannot be reached for this long is gone (a host that stopped drops off the network
# without refusing connections).
SCHEDULER_LOST_S = 30.0
# How long a Dask process may take to start listening.
START_TIMEOUT_S = 60.0
# The Dask processes log warnings and errors only: their start-up chatter would bury the audit's progress.
DASK_ENVIRONMENT = {"DASK_LOGGING__DISTRIBUTED": "warning"}
# Runs a Dask command line module as a child that gets SIGTERM when train dies, whatever killed it.
_LAUNCHER = (
    "import ctypes, runpy, signal, sys; ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0); "
    "module = sys.argv.pop(1); sys.argv[0] = module; runpy.run_module(module, run_name='__main__')"
)


@dataclass(frozen=True)
class JobHosts:
    """The hosts of a training job, as ``resourceconfig.json`` lists them.

    Attributes
    ----------
    hosts:
        Every host's name, sorted; the first leads.
    current:
        This host's name (one of ``hosts``).
    """

    hosts: tuple[str, ...]
    current: str

    @property
    def leader(self) -> str:
        return self.hosts[0]

    @property
    def is_leader(self) -> bool:
        return self.current == self.leader

    @property
    def several(self) -> bool:
        return len(self.hosts) > 1


def read_resource_config(path: Path) -> JobHosts | None:
    """The job's hosts from ``resourceconfig.json`` (``None`` when there is no such file: one host).

    Raises :class:`~mia_robustness.errors.InputError` (``bad_resource_config``) for a file that is not a
    JSON object, ``hosts`` that is not a list of distinct names, a missing ``current_host``, or a
    ``current_host`` that is not one of ``hosts``.
    """
    if not path.is_file():
        return None

    def refuse(problem: str) -> InputError:
        return InputError(
            f"{path.name} {problem}; SageMaker writes it as "
            '{"current_host": "algo-1", "hosts": ["algo-1", "algo-2"], ...}',
            code="bad_resource_config",
        )

    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RESOURCE_CONFIG_BYTES + 1)
    except OSError as error:
        raise refuse(f"cannot be read ({error.strerror})") from None
    config = load_json_config(
        data,
        path.name,
        error=InputError,
        code="bad_resource_config",
        max_bytes=MAX_RESOURCE_CONFIG_BYTES,
        max_depth=8,
    )
    hosts, current = config.get("hosts"), config.get("current_host")
    if not isinstance(hosts, list) or not hosts:
        raise refuse("has no list of host names under 'hosts'")
    if not all(isinstance(host, str) and host.strip() and len(host) <= 255 for host in hosts):
        raise refuse("lists a host that is not a name")
    if len(set(hosts)) != len(hosts):
        raise refuse("lists a host twice")
    if not isinstance(current, str) or not current:
        raise refuse("does not say which host this is ('current_host')")
    if current not in hosts:
        raise refuse(f"names current_host {current[:60]!r}, which is not one of its {len(hosts)} hosts")
    return JobHosts(hosts=tuple(sorted(hosts)), current=current)


def resolve(host: str, settings: JobClusterSettings) -> str | None:
    """The IPv4 address of ``host``: from ``MIA_HOST_ADDRESSES``, else DNS (``None`` while it has none:
    SageMaker's names resolve a little after the hosts start)."""
    given = dict(settings.host_addresses).get(host)
    if given:
        return given
    try:
        return socket.gethostbyname(host)
    except OSError:
        return None


def _listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2.0):
            return True
    except OSError:
        return False


def _dask_process(module: str, *args: str) -> subprocess.Popen:
    """``python -m <module> ARGS`` (a Dask command line), its output on train's, dying with train."""
    environ = {**os.environ, **DASK_ENVIRONMENT}
    return subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, module, *args], env=environ, stdin=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Host:
    """What both roles share: this host's worker process and a client of the scheduler."""

    def __init__(self, hosts: JobHosts, settings: JobClusterSettings, cpus: int, say: Callable[[str], None]):
        self.hosts, self.settings, self.cpus, self.say = hosts, settings, cpus, say
        self.deadline = time.monotonic() + settings.join_timeout
        self.worker: subprocess.Popen | None = None
        self.client: Any = None
        self.scheduler_host = ""
        self.address = ""  # tcp://HOST:PORT of the scheduler, what the audit attaches to

    def _own_address(self) -> str:
        while (address := resolve(self.hosts.current, self.settings)) is None:
            if time.monotonic() > self.deadline:
                raise ClusterError(
                    f"this host's name {self.hosts.current!r} got no address in DNS within "
                    f"{self.settings.join_timeout:g} s (MIA_CLUSTER_JOIN_TIMEOUT_S); the hosts cannot reach "
                    "each other",
                    code="host_unresolved",
                )
            time.sleep(1.0)
        return address

    def _start_worker(self) -> None:
        self.worker = _dask_process(
            "distributed.cli.dask_worker",
            self.address,
            "--name", self.hosts.current,
            "--nthreads", str(self.cpus),
            "--host", self._own_address(),
            "--worker-port", str(self.settings.worker_port),
            "--no-nanny",  # one process per host, whose end this host sees (a nanny would restart it)
            "--no-dashboard",
            *[argument for module in WORKER_PRELOAD for argument in ("--preload", module)],
            "--memory-limit", "0",  # the audit's own memory checks and the sandbox's limits apply
            "--death-timeout", str(max(1, round(self.deadline - time.monotonic()))),
        )  # fmt: skip

    def _connect(self) -> None:
        from distributed import Client

        remaining = max(1.0, self.deadline - time.monotonic())
        self.client = Client(self.address, timeout=remaining, set_as_default=False)

    def worker_hosts(self) -> set[str]:
        """Names of the hosts whose worker the scheduler has now."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return {str(info.get("name")) for info in workers.values()}

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close(timeout=5)
            self.client = None
        _stop(self.worker)


class LeaderHost(_Host):
    """The first host: the scheduler, a worker, the audit. Use as a context manager around the audit:

    ``with LeaderHost(...) as leader: run(cluster=leader.address); leader.finish()``. Leaving it with an
    exception tells the other hosts the audit failed (``fail`` first, to give them the reason)."""

    def __init__(self, hosts: JobHosts, settings: JobClusterSettings, cpus: int, say: Callable[[str], None]):
        super().__init__(hosts, settings, cpus, say)
        self.scheduler: subprocess.Popen | None = None
        self._trouble: str | None = None
        self._stop_watching = threading.Event()
        self._watcher: threading.Thread | None = None
        self._told = False

    def __enter__(self) -> LeaderHost:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        self._disarm()
        if error is not None and not self._told:
            reason = f"{error.code}: {error.message}" if isinstance(error, MiaError) else "internal_error"
            self.fail(reason)
        self.close()

    def _start(self) -> None:
        self.scheduler_host = self._own_address()
        port = self.settings.scheduler_port
        self.address = f"tcp://{self.scheduler_host}:{port}"
        self.say(f"host {self.hosts.current} of {len(self.hosts.hosts)}: scheduler at {self.address}")
        self.scheduler = _dask_process(
            "distributed.cli.dask_scheduler",
            "--host",
            self.scheduler_host,
            "--port",
            str(port),
            "--no-dashboard",
        )
        # Started now, the worker imports Dask while the scheduler does: it keeps trying to connect.
        self._start_worker()
        started = time.monotonic()
        while not _listening(self.scheduler_host, port):
            if self.scheduler.poll() is not None:
                raise ClusterError(
                    f"the Dask scheduler exited at start (status {self.scheduler.returncode}); is port {port} "
                    f"free? (MIA_DASK_SCHEDULER_PORT)",
                    code="scheduler_failed",
                )
            if time.monotonic() - started > START_TIMEOUT_S:
                raise ClusterError(
                    f"the Dask scheduler did not listen on port {port} within {START_TIMEOUT_S:.0f} s",
                    code="scheduler_failed",
                )
            time.sleep(0.2)
        self._connect()
        self._wait_for_every_host()
        self._arm()

    def _wait_for_every_host(self) -> None:
        wanted = set(self.hosts.hosts)
        while True:
            self._check_processes()
            self._check_peer_failures()
            missing = sorted(wanted - self.worker_hosts())
            if not missing:
                break
            if time.monotonic() > self.deadline:
                raise ClusterError(
                    f"host(s) {', '.join(missing)} did not join the cluster at {self.address} within "
                    f"{self.settings.join_timeout:g} s (MIA_CLUSTER_JOIN_TIMEOUT_S); their own logs say why",
                    code="hosts_missing",
                )
            time.sleep(POLL_S)
        self.say(f"all {len(wanted)} hosts' workers joined: {', '.join(sorted(wanted))}")

    def _check_processes(self) -> None:
        for name, process in (("scheduler", self.scheduler), ("worker", self.worker)):
            if process is not None and process.poll() is not None:
                raise ClusterError(
                    f"this host's Dask {name} exited (status {process.returncode}); its log is above",
                    code=f"{name}_failed",
                )

    def _check_peer_failures(self) -> None:
        failures = self.client.get_metadata([METADATA_ROOT, "failed"], default=None) or {}
        for host, reason in sorted(failures.items()):
            raise ClusterError(f"host {host} failed: {reason}", code="peer_failed")

    # ---- watching the peers while the audit runs: trouble interrupts it with SIGUSR1 ------------------

    def _arm(self) -> None:
        def interrupt(signum: int, frame: Any) -> None:
            if self._trouble is not None and not self._stop_watching.is_set():
                self._stop_watching.set()
                raise ClusterError(self._trouble, code="peer_failed")

        signal.signal(signal.SIGUSR1, interrupt)
        self._watcher = threading.Thread(target=self._watch, name="mia-train-hosts", daemon=True)
        self._watcher.start()

    def _disarm(self) -> None:
        # The handler stays: it does nothing once told to stop, whereas putting back SIGUSR1's default
        # would let a signal the watcher sent just before end the process.
        self._stop_watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
            self._watcher = None

    def _watch(self) -> None:
        wanted = set(self.hosts.hosts)
        while not self._stop_watching.wait(POLL_S):
            try:
                self._check_processes()
                self._check_peer_failures()
                gone = sorted(wanted - self.worker_hosts())
                if gone:
                    # A host whose worker died says why within a poll or two: prefer its own reason.
                    time.sleep(REPORT_GRACE_S)
                    self._check_peer_failures()
                    raise ClusterError(
                        f"host {', '.join(gone)} left the cluster during the audit; its log says why"
                    )
            except ClusterError as error:
                self._trouble = error.message
            except Exception as error:  # noqa: BLE001 - the scheduler itself is unreachable
                self._trouble = f"the scheduler stopped answering ({type(error).__name__})"
            if self._trouble is not None:
                os.kill(os.getpid(), signal.SIGUSR1)
                return

    # ---- the end ----------------------------------------------------------------------------------------

    def worker_tasks(self) -> dict[str, int]:
        """Tasks each host's worker ran, by host name."""
        counts = self.client.run(lambda dask_worker: dask_worker.state.executed_count)
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        return {str(workers[address]["name"]): int(n) for address, n in counts.items() if address in workers}

    def finish(self) -> dict[str, int]:
        """The audit is done: tell every host, wait until their workers have left; the tasks per host."""
        self._disarm()
        tasks = self.worker_tasks()
        for host, count in sorted(tasks.items()):
            self.say(f"host {host}'s worker ran {count} tasks")
        self._tell({"status": "done", "tasks": tasks})
        return tasks

    def fail(self, reason: str) -> None:
        """The audit failed here with ``reason``: tell every host (best effort)."""
        self._disarm()
        with contextlib.suppress(Exception):
            self._tell({"status": "failed", "host": self.hosts.current, "reason": reason})

    def _tell(self, outcome: dict[str, Any]) -> None:
        self._told = True
        if self.client is None:
            return
        self.client.set_metadata(OUTCOME, outcome)
        others = set(self.hosts.hosts) - {self.hosts.current}
        until = time.monotonic() + LEAVE_TIMEOUT_S
        while time.monotonic() < until and others & self.worker_hosts():
            time.sleep(POLL_S)

    def close(self) -> None:
        super().close()
        _stop(self.scheduler)


class WorkerHost(_Host):
    """Any host but the first: a worker with this host's cores, until the scheduler says the audit is over."""

    def serve(self) -> int:
        """Join the first host's cluster and work until the audit is over; the tasks this host ran.

        Raises :class:`ClusterError` when the scheduler cannot be reached in time, when it goes away
        without an outcome, when this host's worker exits, or when the audit failed elsewhere.
        """
        try:
            self._join()
            return self._work()
        except ClusterError as error:
            if error.code != "peer_failed":
                self._report(f"{error.code}: {error.message}")
            raise
        finally:
            self.close()

    def _join(self) -> None:
        leader = self.hosts.leader
        port = self.settings.scheduler_port
        address = None
        while True:
            if address is None and (address := resolve(leader, self.settings)) is not None:
                self.scheduler_host = address
                self.address = f"tcp://{address}:{port}"
                self.say(
                    f"host {self.hosts.current} of {len(self.hosts.hosts)}: worker of the scheduler at "
                    f"{self.address}"
                )
                # Started now, it imports Dask while the first host starts: it keeps trying to connect.
                self._start_worker()
            if address is not None and _listening(address, port):
                break
            if time.monotonic() > self.deadline:
                where = f"{leader} ({address}) port {port}" if address else f"{leader} (no address in DNS)"
                raise ClusterError(
                    f"could not reach the Dask scheduler on the first host {where} within "
                    f"{self.settings.join_timeout:g} s (MIA_CLUSTER_JOIN_TIMEOUT_S); see that host's log",
                    code="scheduler_unreachable",
                )
            time.sleep(0.5)
        self._connect()

    def _work(self) -> int:
        unreachable_since: float | None = None
        while True:
            if self.worker is not None and self.worker.poll() is not None:
                raise ClusterError(
                    f"this host's Dask worker exited (status {self.worker.returncode}); its log is above",
                    code="worker_failed",
                )
            try:
                outcome = self.client.get_metadata(OUTCOME, default=None)
                unreachable_since = None
            except Exception:  # noqa: BLE001 - OSError, Dask's CommClosedError, a timeout
                outcome = None
                unreachable_since = unreachable_since or time.monotonic()
                if time.monotonic() - unreachable_since > SCHEDULER_LOST_S:
                    raise ClusterError(
                        f"the scheduler at {self.address} went away before saying the audit was over; "
                        f"host {self.hosts.leader}'s log says why",
                        code="scheduler_lost",
                    ) from None
            if isinstance(outcome, dict) and outcome.get("status") == "done":
                count = int(dict(outcome.get("tasks") or {}).get(self.hosts.current, 0))
                self.say(f"the audit is done; this host's worker ran {count} tasks")
                return count
            if isinstance(outcome, dict) and outcome.get("status") == "failed":
                raise ClusterError(
                    f"host {outcome.get('host')} failed: {outcome.get('reason')}", code="peer_failed"
                )
            time.sleep(POLL_S)

    def _report(self, reason: str) -> None:
        """Tell the first host this one failed (when the scheduler can still hear it)."""
        if self.client is None:
            return
        with contextlib.suppress(Exception):
            failures = dict(self.client.get_metadata([METADATA_ROOT, "failed"], default=None) or {})
            failures[self.hosts.current] = reason
            self.client.set_metadata([METADATA_ROOT, "failed"], failures)
