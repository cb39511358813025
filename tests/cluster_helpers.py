"""A real Dask cluster on loopback for tests and bench/cluster.py: `dask scheduler` and `dask worker`
processes (the installed command line, as a user starts them), on a free port, always torn down.

``with loopback_cluster(workers=2) as cluster: ...`` gives the scheduler's ``cluster.address``
(``tcp://127.0.0.1:PORT``) and the workers' process ids once every worker has joined. Each worker is single-threaded (``--nthreads 1``) and runs without a nanny, so the test's process
tree is the scheduler and the workers only; they import this checkout's ``mia_robustness`` (the same
interpreter as the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

START_SECONDS = 60.0


@dataclass(frozen=True)
class LoopbackCluster:
    address: str
    worker_pids: tuple[int, ...]


def _dask_command() -> list[str]:
    return [sys.executable, "-m", "dask"]


def _wait_for_scheduler_file(path: Path, process: subprocess.Popen, limit: float) -> str:
    ends = time.monotonic() + limit
    while time.monotonic() < ends:
        if process.poll() is not None:
            raise RuntimeError(f"dask scheduler exited with status {process.returncode}")
        with contextlib.suppress(OSError, ValueError):
            return json.loads(path.read_text())["address"]
        time.sleep(0.1)
    raise RuntimeError("dask scheduler did not write its address in time")


def _wait_for_workers(address: str, count: int, processes: list[subprocess.Popen], limit: float) -> None:
    from distributed import Client

    with Client(address, timeout=limit, set_as_default=False) as client:
        ends = time.monotonic() + limit
        while len(client.nthreads()) < count:
            if any(p.poll() is not None for p in processes):
                raise RuntimeError("a dask worker exited before joining")
            if time.monotonic() > ends:
                raise RuntimeError(f"only {len(client.nthreads())} of {count} dask workers joined in time")
            time.sleep(0.1)


@contextlib.contextmanager
def loopback_cluster(
    workers: int = 2, threads: int = 1, preload: tuple[str, ...] = ()
) -> Iterator[LoopbackCluster]:
    """A scheduler and ``workers`` workers of ``threads`` threads each on 127.0.0.1; yields the address."""
    folder = Path(tempfile.mkdtemp(prefix="mia-dask-test-"))
    scheduler_file = folder / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False", "PYTHONWARNINGS": "ignore"}
    processes: list[subprocess.Popen] = []
    logs = []

    def start(arguments: list[str], name: str) -> subprocess.Popen:
        log = open(folder / f"{name}.log", "wb")  # noqa: SIM115 - closed at teardown
        logs.append(log)
        process = subprocess.Popen(
            _dask_command() + arguments,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
            start_new_session=True,
        )
        processes.append(process)
        return process

    try:
        scheduler = start(
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            "scheduler",
        )
        address = _wait_for_scheduler_file(scheduler_file, scheduler, START_SECONDS)
        for index in range(workers):
            start(
                [
                    "worker",
                    address,
                    "--nthreads",
                    str(threads),
                    "--no-nanny",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    "--memory-limit",
                    "0",
                    "--name",
                    f"worker-{index}",
                    "--local-directory",
                    str(folder / f"worker-{index}"),
                    *[argument for module in preload for argument in ("--preload", module)],
                ],
                f"worker-{index}",
            )
        _wait_for_workers(address, workers, processes, START_SECONDS)
        yield LoopbackCluster(address, tuple(process.pid for process in processes[1:]))
    finally:
        for process in reversed(processes):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(2)  # a throwaway cluster: no need to wait for a graceful end
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        for log in logs:
            log.close()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def wait_until_idle(pids: tuple[int, ...], quiet: float = 0.5, limit: float = 30.0) -> None:
    """Wait until ``pids`` and their children have used no CPU for ``quiet`` seconds (at most ``limit``):
    workers that joined may still be warming up (a spare sandbox child importing the engine), which a
    cluster that has been up a while has done long ago."""
    import psutil

    def used() -> float:
        total = 0.0
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(pid)
                for member in [process, *process.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = member.cpu_times()
                        total += times.user + times.system
        return total

    ends = time.monotonic() + limit
    before = used()
    while time.monotonic() < ends:
        time.sleep(quiet)
        now = used()
        if now - before < 0.05 * quiet:  # a worker's heartbeats, not an import
            return
        before = now


def free_port() -> int:
    """A TCP port nothing listens on now (for an address that must be unreachable)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
