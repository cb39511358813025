"""Measure the HTTP server under load: `./serve` as a real process, `sample_input/` posted to /invocations.

Usage (from the repository root)::

    .venv/bin/python bench/serve_load.py                # prints a short table
    .venv/bin/python bench/serve_load.py --json out.json

What it measures (`bench/sweep.py --standard` calls :func:`measure` and writes the figures to RESULTS.md):

* one ``sample_input/`` audit through ``POST /invocations`` (default options, ``Accept: application/json``),
  end to end as a client sees it: the first call (cold: the forkserver's first child) and the median of
  the next ``calls`` calls;
* ``/ping`` latency while two audits run at once: two client threads post the bundle in a loop
  (``audits_per_client`` times each) while a third pings every 20 ms until both are done;
* per-invocation overhead: the same archive bytes audited in-process with ``mia_robustness.audit``
  (in a fresh process limited to the threads one server audit gets) vs through HTTP.

The server runs on a free loopback port with its own temporary folder and is stopped with SIGTERM at
the end, also when a measurement fails.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_input"
BUNDLE_FILES = ("model.joblib", "train.csv", "subject.csv", "config.json")
STARTUP_SECONDS = 120  # imports are slow on a busy 2-core machine
CALL_TIMEOUT_SECONDS = 600
PING_INTERVAL_SECONDS = 0.020
PING_TARGET_P99_MS = 50.0
CALL_TARGET_SECONDS = 10.0


def bundle_zip(folder: Path = SAMPLE) -> bytes:
    """The bundle files of ``folder`` (model, train.csv, subject.csv, config.json if present) as zip bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in BUNDLE_FILES:
            if (folder / name).exists():
                archive.write(folder / name, name)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by the nearest-rank method (a real observed value)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


class ServeProcess:
    """`./serve` on a free loopback port with a private temporary folder and log.

    Parameters
    ----------
    directory:
        Holds the server's ``MIA_TEMP_DIR`` (``tmp/``) and its log (``serve.log``).
    env:
        Extra settings for `./serve` (environment variables).
    """

    def __init__(self, directory: Path, **env: str) -> None:
        (directory / "tmp").mkdir()
        self.log_path = directory / "serve.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = dict(os.environ)
        environ.update(
            # ./serve runs `python3` from PATH: make that this interpreter (the venv's).
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{environ.get('PATH', '')}",
            SAGEMAKER_BIND_TO_PORT=str(self.port),
            MIA_BIND_HOST="127.0.0.1",
            MIA_TEMP_DIR=str(directory / "tmp"),
            **env,
        )
        self.environ = environ
        self._log = self.log_path.open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(ROOT / "serve")], env=environ, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        try:
            self._wait_until_up()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - started

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"serve did not answer /ping within {STARTUP_SECONDS} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def invoke(self, body: bytes) -> tuple[float, dict]:
        """POST ``body`` to /invocations; (wall seconds, report dict). Raises on any answer but 200."""
        started = time.perf_counter()
        answer = requests.post(
            f"{self.url}/invocations",
            data=body,
            headers={"Content-Type": "application/zip", "Accept": "application/json"},
            timeout=CALL_TIMEOUT_SECONDS,
        )
        wall = time.perf_counter() - started
        if answer.status_code != 200:
            raise RuntimeError(f"/invocations answered {answer.status_code}: {answer.text[:2000]}")
        return wall, answer.json()

    def stop(self) -> int | None:
        """SIGTERM, wait up to 30 s (then SIGKILL); the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def ping_under_load(server: ServeProcess, body: bytes, audits_per_client: int) -> dict:
    """Two threads post ``body`` ``audits_per_client`` times each; a third pings every 20 ms meanwhile."""
    done = threading.Event()
    errors: list[str] = []
    audit_walls: list[float] = []
    latencies_ms: list[float] = []
    failed_pings: list[str] = []

    def client() -> None:
        try:
            for _ in range(audits_per_client):
                wall, _report = server.invoke(body)
                audit_walls.append(wall)
        except Exception as error:  # reported after the threads are joined
            errors.append(f"{type(error).__name__}: {error}")

    def pinger() -> None:
        session = requests.Session()  # keep-alive, as a load balancer's health checker does
        next_at = time.perf_counter()
        while not done.is_set():
            started = time.perf_counter()
            try:
                status = session.get(f"{server.url}/ping", timeout=10).status_code
                if status != 200:
                    failed_pings.append(f"status {status}")
            except requests.RequestException as error:
                failed_pings.append(type(error).__name__)
            latencies_ms.append((time.perf_counter() - started) * 1000)
            next_at += PING_INTERVAL_SECONDS
            time.sleep(max(0.0, next_at - time.perf_counter()))
        session.close()

    clients = [threading.Thread(target=client) for _ in range(2)]
    ping_thread = threading.Thread(target=pinger)
    started = time.perf_counter()
    ping_thread.start()
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    done.set()
    ping_thread.join()
    if errors:
        raise RuntimeError("an audit under load failed: " + "; ".join(errors))
    return {
        "seconds": time.perf_counter() - started,
        "audits": len(audit_walls),
        "audit_walls": audit_walls,
        "pings": len(latencies_ms),
        "failed_pings": failed_pings,
        "ping_median_ms": statistics.median(latencies_ms),
        "ping_p99_ms": percentile(latencies_ms, 99),
        "ping_max_ms": max(latencies_ms),
    }


def in_process_child(archive: Path, calls: int, threads: int) -> None:
    """(Run in a fresh process.) Audit ``archive``'s bytes ``1 + calls`` times; print walls as JSON.

    Threads are limited as the server limits one audit's child (BLAS/OpenMP, torch, sweep workers), so
    the comparison with HTTP isolates the per-invocation overhead.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from mia_robustness import audit

    threadpool_limits(limits=threads)
    torch.set_num_threads(threads)
    body = archive.read_bytes()
    walls, totals = [], []
    for _ in range(1 + calls):
        started = time.perf_counter()
        report = audit(body, workers=threads)
        walls.append(time.perf_counter() - started)
        totals.append(report.timings["total"])
    print(json.dumps({"walls": walls, "audit_totals": totals}))


def in_process(body: bytes, calls: int, threads: int, scratch: Path) -> dict:
    archive = scratch / "bundle.zip"
    archive.write_bytes(body)
    command = [sys.executable, str(Path(__file__).resolve()), "--in-process-child", str(archive)]
    command += ["--calls", str(calls), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"the in-process audit failed:\n{done.stderr[-4000:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "cold_seconds": record["walls"][0],
        "walls": record["walls"][1:],
        "median_seconds": statistics.median(record["walls"][1:]),
        "threads": threads,
    }


def measure(calls: int = 3, audits_per_client: int = 2, progress=None) -> dict:
    """Start `./serve`, measure (see the module docstring), stop it; the figures as a JSON-ready dict.

    Parameters
    ----------
    calls:
        Warm HTTP calls (and in-process audits) whose median is reported, after one cold call each.
    audits_per_client:
        Audits each of the two load threads posts while /ping is measured (at least 2).
    progress:
        Called with a line of text as each phase starts (``None``: stderr).
    """
    say = progress or (lambda line: print(line, file=sys.stderr))
    body = bundle_zip()
    record: dict = {
        "bundle_bytes": len(body),
        "bundle_files": [n for n in BUNDLE_FILES if (SAMPLE / n).exists()],
        "load_average_at_start": os.getloadavg()[0],
    }
    with tempfile.TemporaryDirectory(prefix="mia-serve-load-") as scratch:
        say("  serve: starting ./serve")
        server = ServeProcess(Path(scratch))
        try:
            record["startup_seconds"] = server.startup_seconds
            from mia_robustness.serving.settings import ServerSettings

            settings = ServerSettings.from_env(server.environ)
            record["server_workers"] = settings.workers
            record["threads_per_audit"] = settings.threads_per_audit
            say("  serve: cold call, then warm calls")
            cold, report = server.invoke(body)
            walls, audit_totals, outside = [], [], []
            for _ in range(calls):
                wall, report = server.invoke(body)
                walls.append(wall)
                audit_totals.append(report["timings"]["total"])
                outside.append(wall - report["timings"]["total"])
            record["http"] = {
                "cold_seconds": cold,
                "walls": walls,
                "median_seconds": statistics.median(walls),
                # audit() inside the server child, so wall - this = HTTP, upload, unpack-to-disk, fork, JSON
                "audit_total_median_seconds": statistics.median(audit_totals),
                # per call, so drift in the machine's load cancels out
                "outside_audit_median_seconds": statistics.median(outside),
                "load_average_after": os.getloadavg()[0],
                "risk": report["summary"]["risk_level"],
                "auc": report["summary"]["auc"],
            }
            say(f"  serve: /ping every 20 ms while 2 clients post {audits_per_client} audits each")
            record["load"] = ping_under_load(server, body, max(2, audits_per_client))
            record["load"]["load_average_after"] = os.getloadavg()[0]
        finally:
            record["exit_status"] = server.stop()
            record["log_tail"] = server.log()[-2000:]
        if record["exit_status"] != 0:
            raise RuntimeError(f"serve exited {record['exit_status']} on SIGTERM:\n{record['log_tail']}")
        say("  serve: the same archive in-process")
        record["in_process"] = in_process(body, calls, record["threads_per_audit"], Path(scratch))
        record["in_process"]["load_average_after"] = os.getloadavg()[0]
    record["overhead_seconds"] = record["http"]["median_seconds"] - record["in_process"]["median_seconds"]
    return record


def describe(record: dict) -> list[str]:
    """Markdown lines: a table of the figures and whether the issue-4 targets are met."""
    http, load, local = record["http"], record["load"], record["in_process"]
    call_ok = http["median_seconds"] < CALL_TARGET_SECONDS
    ping_ok = load["ping_p99_ms"] < PING_TARGET_P99_MS and not load["failed_pings"]
    return [
        "| measurement | figure | target |",
        "|---|---|---|",
        f"| `./serve` start until /ping answers | {record['startup_seconds']:.1f} s | |",
        f"| `sample_input/` via POST /invocations, cold (first call) | {http['cold_seconds']:.2f} s | |",
        f"| `sample_input/` via POST /invocations, median of {len(http['walls'])} warm | "
        f"**{http['median_seconds']:.2f} s** ({', '.join(f'{w:.2f}' for w in http['walls'])}) | "
        f"< {CALL_TARGET_SECONDS:g} s: {'met' if call_ok else 'NOT met'} |",
        f"| same archive in-process, `audit()` in a fresh process, median of {len(local['walls'])} "
        f"(cold {local['cold_seconds']:.2f} s; {local['threads']} thread(s), as one server audit) | "
        f"{local['median_seconds']:.2f} s ({', '.join(f'{w:.2f}' for w in local['walls'])}) | |",
        f"| per-invocation overhead, per call: HTTP wall - `audit()` time inside the server child (median) | "
        f"**{http['outside_audit_median_seconds']:.2f} s** | |",
        f"| per-invocation overhead, HTTP median - in-process median (sensitive to other load on the machine) | "
        f"{record['overhead_seconds']:+.2f} s | |",
        f"| /ping during 2 concurrent audits ({load['audits']} audits in {load['seconds']:.0f} s) | "
        f"{load['pings']} pings, {len(load['failed_pings'])} failed; median {load['ping_median_ms']:.1f} ms, "
        f"p99 **{load['ping_p99_ms']:.1f} ms**, max {load['ping_max_ms']:.1f} ms | "
        f"p99 < {PING_TARGET_P99_MS:g} ms: {'met' if ping_ok else 'NOT met'} |",
        f"| audit wall under that load (per call) | "
        f"{', '.join(f'{w:.1f}' for w in sorted(load['audit_walls']))} s | |",
        f"| machine load average: at start / after the calls / after the load phase / after in-process | "
        f"{record['load_average_at_start']:.2f} / {http['load_average_after']:.2f} / "
        f"{load['load_average_after']:.2f} / {local['load_average_after']:.2f} | |",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3, help="warm calls whose median is reported")
    parser.add_argument(
        "--audits-per-client", type=int, default=2, help="audits each load thread posts (>= 2)"
    )
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    parser.add_argument("--in-process-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.in_process_child:
        in_process_child(args.in_process_child, args.calls, args.threads)
        return
    print(f"load average at start {os.getloadavg()[0]:.2f}", file=sys.stderr)
    record = measure(args.calls, args.audits_per_client)
    print("\n".join(describe(record)))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
