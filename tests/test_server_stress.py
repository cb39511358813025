"""`./serve` under load and abuse, over real HTTP: many different bundles at once, /ping while every audit
slot and queue place is taken, a killed gunicorn worker, 12 invocations after a warm-up without leaking
files, memory or processes, and the memory limit (``MIA_MAX_AUDIT_MEMORY_MB``).

Audits are as cheap as an audit gets (150-odd rows per side, the threshold attack, one proportion, one
repeat: about 0.3 s each on an idle 2-core machine), so the module runs in about two minutes.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

import builders
from builders import as_header, wait_until
from mia_robustness import training
from serving_helpers import BUSY, Server, alive, bundle_bytes, open_fds, rss_mb

CHEAPEST = as_header(builders.CHEAPEST)
CONCURRENT = 20
# Invocations for the leak test, sent by as many clients as the server has audit slots. Each starts a
# fresh sandbox child (2-3 s of interpreter start-up on 2 cores), so 12 keep the test near half a minute;
# a leak of one file descriptor or two megabytes per invocation still shows above the tolerances below
# (fds +-2, LEAK_MB: 24 MB at the least). After the warm-up, 24 invocations moved the server's resident
# memory by 0.1 MB; the bound leaves room for the allocator's noise on another machine (it was 50 MB
# over 24 invocations: a leak below 2 MB per invocation passed).
LEAK_CALLS = 12
LEAK_MB = 20
LEAK_WARM_UP_CALLS = 4
LEAK_CLIENTS = 2
# Clients of the 503 test, all at once against the shared server's queue of 4 (2 slots + 2 waiting).
RETRYING_CLIENTS = 8
# How long a client retries a 503 before the test gives up on the server.
RETRY_FOR_SECONDS = 300

pytestmark = pytest.mark.skipif(
    not Path("/proc/self").exists(), reason="needs Linux (/proc) to inspect processes"
)


@pytest.fixture(scope="module")
def stress_server(tmp_path_factory):
    """2 audits at a time and enough HTTP threads that 20 invocations are all admitted (18 wait)."""
    running = Server(
        tmp_path_factory.mktemp("stress"),
        SAGEMAKER_MODEL_SERVER_WORKERS="2",
        MIA_SERVER_THREADS=str(CONCURRENT + 4),
    )
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture(scope="module")
def varied_bundles(tmp_path_factory):
    """Twenty different bundles: each its own label column name, row count, feature count, seed and
    archive kind, so a report that came from someone else's bundle cannot pass for the right one."""
    root = tmp_path_factory.mktemp("varied")
    kinds = ("zip", "tar", "tar.gz")
    made = []
    for i in range(CONCURRENT):
        spec = {"label": f"outcome_{i}", "rows": 140 + 3 * i, "features": 3 + i % 5, "kind": kinds[i % 3]}
        body = bundle_bytes(
            root / str(i),
            spec["rows"],
            kind=spec["kind"],
            label=spec["label"],
            seed=100 + i,
            features=spec["features"],
        )
        made.append((spec, body))
    return made


def _check_report(spec: dict, response: requests.Response) -> None:
    assert response.status_code == 200, (spec, response.status_code, response.text[:300])
    report = response.json()
    data, target = report["data"], report["target"]
    assert data["label_column"] == spec["label"], (spec, data)
    assert data["rows_per_side"] == spec["rows"], (spec, data)
    assert data["members_available"] == data["non_members_available"] == spec["rows"], (spec, data)
    assert data["feature_columns"] == target["n_features"] == spec["features"], (spec, data, target)
    assert report["settings"]["attack_models"] == ["threshold"]


def _content_type(spec: dict) -> str:
    return {"zip": "application/zip", "tar": "application/x-tar", "tar.gz": "application/gzip"}[spec["kind"]]


def _ping_until(server: Server, done: threading.Event, latencies: list[float]) -> None:
    """Ping every 0.1 s until ``done`` is set, recording each answer's latency (a failure as inf)."""
    while not done.is_set():
        start = time.monotonic()
        try:
            ok = requests.get(f"{server.url}/ping", timeout=10).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.monotonic() - start if ok else float("inf"))
        done.wait(0.1)


def _settled(server: Server) -> bool:
    """No audit child or sweep helper running, and none left unreaped."""
    return not server.audit_children() and not server.helpers() and not server.zombies()


# --------------------------------------------------------------------------------------------------
# Many bundles at once
# --------------------------------------------------------------------------------------------------


def test_twenty_concurrent_bundles_each_get_their_own_report_and_ping_stays_fast(
    stress_server, varied_bundles
):
    """All 20 are admitted at once (2 run, 18 wait for a slot); /ping answers within 2 s throughout."""
    done, latencies = threading.Event(), []
    pinger = threading.Thread(target=_ping_until, args=(stress_server, done, latencies))
    pinger.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            responses = list(
                pool.map(
                    lambda item: stress_server.invoke(
                        item[1], attributes=CHEAPEST, **{"Content-Type": _content_type(item[0])}
                    ),
                    varied_bundles,
                )
            )
    finally:
        done.set()
        pinger.join()
    elapsed = time.monotonic() - started
    for (spec, _), response in zip(varied_bundles, responses, strict=True):
        _check_report(spec, response)
    print(
        f"\n{CONCURRENT} concurrent invocations in {elapsed:.1f} s; /ping meanwhile: n={len(latencies)} "
        f"median={statistics.median(latencies) * 1000:.1f} ms max={max(latencies) * 1000:.1f} ms"
    )
    assert len(latencies) >= 5, "the invocations were too quick to measure /ping under load"
    assert max(latencies) < 2.0
    assert stress_server.leftovers() == []


def test_a_client_that_retries_on_503_gets_every_report_from_a_small_queue(server, varied_bundles):
    """The shared server admits 4 invocations (2 running + 2 waiting); the other 4 of 8 sent at once are
    refused with 503 server_busy, and retrying after a pause gets every bundle its own report."""
    # Twice the queue overflows it as surely as 20 (the 20-at-once property is the test above's, on a
    # server whose queue admits them all); each invocation costs a sandbox child's start.
    sent = varied_bundles[:RETRYING_CLIENTS]
    refusals = []

    def invoke_until_admitted(item):
        spec, body = item
        # A deadline, not a count of tries: how long the queue takes to drain depends on the machine.
        deadline = time.monotonic() + RETRY_FOR_SECONDS
        while time.monotonic() < deadline:
            response = server.invoke(body, attributes=CHEAPEST, **{"Content-Type": _content_type(spec)})
            if response.status_code != 503:
                return response
            assert response.json()["error"] == "server_busy", response.text
            refusals.append(spec["label"])
            time.sleep(0.2)  # the client's own back-off between retries, the behaviour under test
        raise AssertionError(f"{spec['label']} was refused for {RETRY_FOR_SECONDS} s")

    with ThreadPoolExecutor(max_workers=len(sent)) as pool:
        responses = list(pool.map(invoke_until_admitted, sent))
    for (spec, _), response in zip(sent, responses, strict=True):
        _check_report(spec, response)
    assert refusals, f"{len(sent)} at once should overflow a queue of 4"
    print(f"\n{len(refusals)} refusals (503 server_busy) before all {len(sent)} were admitted")


# --------------------------------------------------------------------------------------------------
# No leaks across many invocations
# --------------------------------------------------------------------------------------------------


def _footprint(server: Server) -> dict:
    worker, forkservers = server.worker(), server.forkservers()
    assert len(forkservers) == 1, forkservers
    return {
        "fds": {
            "master": open_fds(server.gunicorn_master()),
            "worker": open_fds(worker),
            "forkserver": open_fds(forkservers[0]),
        },
        "rss_mb": rss_mb(server.gunicorn_master()) + rss_mb(worker),
        "forkserver_rss_mb": rss_mb(forkservers[0]),
        "processes": len(server.descendants()),
    }


def test_no_growth_of_files_memory_or_processes_across_many_invocations(stress_server, varied_bundles):
    spec, body = varied_bundles[0]
    headers = {"Content-Type": _content_type(spec)}

    def client(calls: int) -> list[int]:
        return [stress_server.invoke(body, attributes=CHEAPEST, **headers).status_code for _ in range(calls)]

    # Warm-up: lazy imports, caches and the allocator's arenas settle, in as many threads as measured.
    with ThreadPoolExecutor(max_workers=LEAK_CLIENTS) as pool:
        warm_up = sum(pool.map(client, [LEAK_WARM_UP_CALLS // LEAK_CLIENTS] * LEAK_CLIENTS), [])
    assert warm_up == [200] * LEAK_WARM_UP_CALLS
    wait_until(lambda: _settled(stress_server), 10, what="the last audit child reaped")
    before = _footprint(stress_server)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=LEAK_CLIENTS) as pool:
        statuses = sum(pool.map(client, [LEAK_CALLS // LEAK_CLIENTS] * LEAK_CLIENTS), [])
    elapsed = time.monotonic() - started
    wait_until(lambda: _settled(stress_server), 10, what="the last audit child reaped")
    after = _footprint(stress_server)
    print(
        f"\n{LEAK_CALLS} invocations ({LEAK_CLIENTS} clients) in {elapsed:.1f} s "
        f"({elapsed / LEAK_CALLS * 1000:.0f} ms each); before {before}; after {after}"
    )
    assert statuses == [200] * LEAK_CALLS
    for name, count in before["fds"].items():
        assert abs(after["fds"][name] - count) <= 2, (name, before, after)
    assert after["rss_mb"] - before["rss_mb"] < LEAK_MB, (before, after)
    assert after["forkserver_rss_mb"] - before["forkserver_rss_mb"] < LEAK_MB, (before, after)
    assert after["processes"] == before["processes"], (before, after)  # no audit child left running
    assert stress_server.zombies() == []
    assert stress_server.leftovers() == []


# --------------------------------------------------------------------------------------------------
# A killed worker
# --------------------------------------------------------------------------------------------------


def test_a_killed_gunicorn_worker_is_replaced_and_leaves_nothing_behind(stress_server, bundles):
    """SIGKILL the worker process itself mid-audit: the in-flight request fails, the master starts a new
    worker that answers /ping and /invocations, and the old forkserver, audit child and invocation folder
    are gone."""
    server = stress_server
    outcome: dict = {}

    def busy_invocation() -> None:
        try:
            outcome["response"] = server.invoke(bundles["busy"], attributes=BUSY)
        except requests.RequestException as error:
            outcome["error"] = error

    thread = threading.Thread(target=busy_invocation)
    thread.start()
    wait_until(server.audit_children, 60, what="an audit child")
    old_worker = server.worker()
    old_processes = [old_worker, *server.descendants(old_worker)]  # not nginx nor the gunicorn master
    assert server.audit_children(), "no audit child appeared"
    assert server.leftovers(), "the running invocation should have its folder"

    os.kill(old_worker, signal.SIGKILL)
    thread.join(60)
    assert "error" in outcome or outcome["response"].status_code >= 500, outcome

    def new_worker_answering() -> int | None:
        workers = [pid for pid in server.descendants() if pid not in old_processes]
        if not workers or server.process.poll() is not None:
            return None
        try:
            worker = server.worker()
            return worker if requests.get(f"{server.url}/ping", timeout=2).status_code == 200 else None
        except (AssertionError, requests.RequestException):
            return None

    try:
        new_worker = wait_until(new_worker_answering, 60, interval=0.2, what="a new worker answering /ping")
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{server.log()[-3000:]}") from None
    assert new_worker != old_worker, server.log()[-3000:]
    assert server.invoke(bundles["tar"]).status_code == 200

    # the old forkserver and audit child notice their parent is gone
    wait_until(
        lambda: not [pid for pid in old_processes if alive(pid)],
        10,
        interval=0.2,
        what="the old processes gone",
    )
    assert server.leftovers() == []
    assert server.zombies() == []


# --------------------------------------------------------------------------------------------------
# The memory limit
# --------------------------------------------------------------------------------------------------


def test_an_audit_over_the_memory_limit_is_refused_with_a_clear_400(tmp_path, bundles):
    own = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1", MIA_MAX_AUDIT_MEMORY_MB="64")
    try:
        response = own.invoke(bundles["tar"], attributes=CHEAPEST)
        assert response.status_code == 400, response.text
        error = response.json()
        assert error["error"] == "memory_limit"
        assert "64 MB" in error["error-message"] and "fewer rows" in error["error-message"]
        assert requests.get(f"{own.url}/ping", timeout=5).status_code == 200
        assert own.leftovers() == []
    finally:
        assert own.stop() == 0


def test_training_job_refuses_an_audit_over_the_memory_limit(tmp_path, monkeypatch, bundles, capsys):
    root = tmp_path / "opt_ml"
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    (channel / "bundle.tar").write_bytes(bundles["tar"])
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(
        json.dumps({"attack_models": "threshold"})
    )
    monkeypatch.setenv("MIA_OPT_ML", str(root))
    monkeypatch.setenv("MIA_MAX_AUDIT_MEMORY_MB", "64")
    assert training.main([]) == training.EXIT_INPUT
    failure = (root / "output" / "failure").read_text()
    assert failure.startswith("memory_limit: ") and "64 MB" in failure
    assert not (root / "model" / "report.json").exists()
