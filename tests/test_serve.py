"""The SageMaker serving shell, driven over real HTTP: `./serve` runs as a subprocess on a loopback port.

One session-scoped server (the ``server`` fixture of conftest.py: 2 concurrent audits, 1 MB body limit,
its own temporary root; the ``Server`` helper is in serving_helpers.py) serves most tests; the timeout
and SIGTERM tests start a second one. Load, leaks, a killed worker and the memory limit are in
test_server_stress.py; fuzzing in test_fuzz.py. Audits are tiny (threshold / rf, 1 repeat) so
the whole module runs in well under a minute on 2 cores.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import requests

import builders
from builders import archive_bytes, as_header, wait_until
from mia_robustness.errors import OptionsError
from mia_robustness.serving.settings import MB, ServerSettings
from serving_helpers import ATTRIBUTES, BUSY, SERVE, TINY, Server, alive

FAST = as_header(builders.FAST)
CHEAPEST = as_header(builders.CHEAPEST)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self").exists(), reason="needs Linux (/proc) to inspect processes"
)


# --------------------------------------------------------------------------------------------------
# Settings (no server)
# --------------------------------------------------------------------------------------------------


def test_settings_defaults_and_derived_values():
    settings = ServerSettings.from_env({}, cpus=8)
    assert (settings.host, settings.port, settings.workers, settings.timeout) == ("0.0.0.0", 8080, 2, 3600)
    assert settings.threads == 2 * 2 + 2 and settings.threads_per_audit == 4
    assert settings.max_helpers == 7  # one audit alone may use every CPU
    assert settings.max_payload_bytes == 100 * MB and settings.max_payload_mb == 100
    assert settings.default_accept == "application/json"
    assert settings.runtime.unpack_limits.bundle_limits() is None
    assert ServerSettings.from_env({}, cpus=1).workers == 1

    custom = ServerSettings.from_env(
        {
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "MIA_MAX_PAYLOAD_MB": "250",
            "MIA_MAX_ARCHIVE_MEMBERS": "7",
            "MIA_MAX_UNPACKED_MB": "5",
            "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv",
            "MIA_MAX_AUDIT_MEMORY_MB": "512",
            "MIA_SWEEP_HELPERS": "0",
        },
        cpus=2,
    )
    assert custom.workers == 3 and custom.threads_per_audit == 1 and custom.max_helpers == 0
    assert custom.max_payload_mb == 100  # SageMaker's ceiling, whatever the server accepts
    limits = custom.runtime.unpack_limits.bundle_limits()
    assert (limits.max_members, limits.max_unpacked_bytes) == (7, 5 * MB)
    assert custom.default_accept == "text/csv" and custom.runtime.max_audit_memory_bytes == 512 * MB


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("SAGEMAKER_BIND_TO_PORT", "70000"),
        ("SAGEMAKER_MODEL_SERVER_WORKERS", "0"),
        ("SAGEMAKER_MODEL_SERVER_TIMEOUT", "-5"),
        ("MIA_MAX_PAYLOAD_MB", "0.5"),
        ("MIA_MAX_COMPRESSION_RATIO", "nan"),
        ("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "image/png"),
        ("MIA_TEMP_DIR", "/no/such/dir"),
        ("MIA_SERVER_THREADS", "3"),
        ("MIA_SWEEP_HELPERS", "-1"),
    ],
)
def test_settings_name_the_bad_variable(name, value):
    with pytest.raises(OptionsError) as caught:
        ServerSettings.from_env({name: value}, cpus=2)
    assert name in caught.value.message and caught.value.code == "bad_setting"


def test_serve_refuses_bad_environment_with_one_line():
    environ = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    environ["SAGEMAKER_BIND_TO_PORT"] = "eighty"
    done = subprocess.run([str(SERVE)], env=environ, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "SAGEMAKER_BIND_TO_PORT='eighty'" in done.stderr and "Traceback" not in done.stderr


# --------------------------------------------------------------------------------------------------
# The HTTP contract
# --------------------------------------------------------------------------------------------------


def test_ping_and_execution_parameters(server):
    ping = requests.get(f"{server.url}/ping", timeout=5)
    assert ping.status_code == 200 and ping.content == b""
    params = requests.get(f"{server.url}/execution-parameters", timeout=5)
    assert params.status_code == 200
    assert params.json() == {
        "MaxConcurrentTransforms": 2,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 1,
    }


def test_json_report_with_options_from_the_header(server, bundles):
    response = server.invoke(
        bundles["small"], attributes="repeats=1;proportions=0.5,1;attack_models=threshold"
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    report = response.json()
    assert report["settings"]["attack_models"] == ["threshold"]
    assert report["settings"]["proportions"] == [0.5, 1.0]
    assert report["settings"]["repeats"] == 1
    assert {(row["attack_model"], row["proportion"]) for row in report["results"]} == {
        ("threshold", 0.5),
        ("threshold", 1.0),
    }
    assert report["data"]["rows_per_side"] == 300 and report["data"]["label_column"] == "label"


def test_csv_report(server, bundles):
    response = server.invoke(bundles["small"], attributes=FAST, Accept="text/csv")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert sorted((row["attack_model"], row["proportion"]) for row in rows) == [
        ("rf", "0.5"),
        ("rf", "1"),
        ("threshold", "0.5"),
        ("threshold", "1"),
    ]
    # The same request as JSON gives the same figures: the CSV is that report, not a plausible table.
    as_json = server.invoke(bundles["small"], attributes=FAST).json()
    expected = {(r["attack_model"], f"{r['proportion']:g}"): r["mean"]["auc"] for r in as_json["results"]}
    got = {(row["attack_model"], row["proportion"]): float(row["auc_mean"]) for row in rows}
    assert got == pytest.approx(expected, abs=1e-6)


def test_bundle_config_applies_and_the_header_overrides_it(server, bundles):
    from_config = server.invoke(bundles["other"], attributes=None, **{"Content-Type": "application/gzip"})
    assert from_config.status_code == 200, from_config.text
    assert from_config.json()["settings"]["attack_models"] == ["rf"]
    overridden = server.invoke(
        bundles["other"], attributes="attack_models=threshold", **{"Content-Type": "application/gzip"}
    )
    assert overridden.status_code == 200, overridden.text
    settings = overridden.json()["settings"]
    assert settings["attack_models"] == ["threshold"] and settings["proportions"] == [1.0]


@pytest.mark.parametrize("content_type", ["application/x-tar", "application/octet-stream", None])
def test_archive_kind_is_found_by_content(server, bundles, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = requests.post(
        f"{server.url}/invocations", data=bundles["tar"], headers={ATTRIBUTES: TINY, **headers}, timeout=300
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["rows_per_side"] == 150


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        (None, "application/json"),
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        ("application/json;q=0.5, text/csv", "text/csv"),
        ("text/csv;charset=utf-8", "text/csv"),
    ],
)
def test_accept_negotiation(server, bundles, accept, media_type):
    headers = {} if accept is None else {"Accept": accept}
    response = server.invoke(bundles["tar"], **headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].split(";")[0] == media_type


def test_html_report(server, bundles):
    response = server.invoke(bundles["tar"], Accept="text/html")
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/html")
    assert "<svg" in response.text and "Membership" in response.text


def test_the_log_gets_the_reference_stage_plan_and_estimates(server, bundles):
    """The audit child's progress reaches the server log with the engine's notes: the reference stage's
    plan at 0/N, its cost after the first fit, then the time left; nothing else rides along, and none
    of it reaches the client."""
    log_from = len(server.log())
    response = server.invoke(
        bundles["small"],
        attributes="attack_models=threshold,lira;repeats=1;proportions=1;reference_models=4",
    )
    assert response.status_code == 200, response.text
    steps = re.findall(
        r" progress reference_models (\d+)/4(?: \((.*)\))?$", server.log()[log_from:], flags=re.M
    )
    assert [int(done) for done, _ in steps][:2] == [0, 1] and steps[-1] == ("4", ""), steps
    assert re.fullmatch(
        r"4 fits of the target's recipe \(4 reference models x 1 repeat, \d at a time\); "
        r"the cost is estimated after the first",
        steps[0][1],
    ), steps[0]
    assert re.fullmatch(
        r"about \d+ (s|min) in all \(4 fits of the target's recipe\), \d+ (s|min) left", steps[1][1]
    ), steps[1]
    assert all(re.fullmatch(r"about \d+ (s|min) left", note) for _, note in steps[2:-1]), steps
    assert "fits of the target's recipe" not in response.text


def _corrupt_zip(bundle: bytes) -> bytes:
    return bundle[: len(bundle) // 2]  # a truncated zip: the central directory is gone


def _zip_without_subject() -> bytes:
    return archive_bytes({"train.csv": "x0,label\n1,0\n", "model.pkl": b"not a pickle"})


def _audit_running(server: Server, log_from: int) -> int | None:
    """The PID of an audit child that has reported progress in the log after offset ``log_from`` (so it
    runs the audit: the worker has handed it the job), or None."""
    child = next(iter(server.audit_children()), None)
    return child if child is not None and " progress " in server.log()[log_from:] else None


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("text/plain content type", 415, "unsupported_media_type"),
        ("image/png accept", 406, "not_acceptable"),
        ("corrupt zip", 400, "corrupt_archive"),
        ("not an archive", 400, "unknown_archive_format"),
        ("bundle without subject.csv", 400, "missing_non_members"),
        ("bad option value in header", 400, "bad_option"),
        ("unknown option in header", 400, "bad_option"),
        ("malformed header", 400, "bad_option"),
        ("empty body", 400, "empty_body"),
        ("declared length over the limit", 413, "payload_too_large"),
        ("chunked body over the limit", 413, "payload_too_large"),
    ],
)
def test_errors_are_json_and_never_200(server, bundles, case, status, code):
    body, attributes, headers = bundles["small"], TINY, {}
    if case == "text/plain content type":
        headers["Content-Type"] = "text/plain"
    elif case == "image/png accept":
        headers["Accept"] = "image/png"
    elif case == "corrupt zip":
        body = _corrupt_zip(body)
    elif case == "not an archive":
        body, headers["Content-Type"] = b"member,label\n1,0\n" * 10, "application/octet-stream"
    elif case == "bundle without subject.csv":
        body = _zip_without_subject()
    elif case == "bad option value in header":
        attributes = "repeats=0"
    elif case == "unknown option in header":
        attributes = "attack_modles=rf"
    elif case == "malformed header":
        attributes = "repeats"
    elif case == "empty body":
        body = b""
    elif case == "declared length over the limit":
        body = os.urandom(MB + 1)
    elif case == "chunked body over the limit":
        payload = os.urandom(3 * MB)
        body = (payload[i : i + 64 * 1024] for i in range(0, len(payload), 64 * 1024))  # no Content-Length
    response = server.invoke(body, attributes=attributes, **headers)
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()
    assert error["error"] == code and len(error["error-message"]) > 20
    assert "Traceback" not in error["error-message"]
    if case.startswith(("bad option", "unknown option")):
        assert ("repeats" if case.startswith("bad") else "attack_modles") in error["error-message"]
    assert requests.get(f"{server.url}/ping", timeout=5).status_code == 200  # still healthy


@pytest.mark.parametrize(
    ("method", "path", "status"), [("get", "/invocations", 405), ("get", "/nowhere", 404)]
)
def test_routing_errors_are_json(server, method, path, status):
    response = requests.request(method, f"{server.url}{path}", timeout=5)
    assert response.status_code == status
    assert set(response.json()) == {"error", "error-message"}


def _figures(report: dict) -> dict:
    return {
        key: value
        for key, value in report.items()
        if key not in ("timings", "created", "started", "finished")
    }


def test_a_lone_audit_runs_its_sweep_on_the_idle_cpus_with_the_figures_of_one_process(server, bundles):
    """Alone on the server, an audit gets the CPUs no other audit uses as sweep helpers (its cells are
    GIL-bound: 300 rows per side), which report the figures the same audit gives in one process and are
    gone once it answered."""
    from mia_robustness import audit
    from mia_robustness.report import render
    from mia_robustness.runtime import usable_cpus

    options = "attack_models=threshold,rf,nn;repeats=2;proportions=0.5,1"
    wait_until(lambda: not server.audit_children() and not server.helpers(), 60, what="an idle server")
    log_from = len(server.log())
    response = server.invoke(bundles["small"], attributes=options)
    assert response.status_code == 200, response.text
    cpus = usable_cpus()
    helpers = cpus - max(1, cpus // min(2, cpus))  # the fixture's server runs 2 audits at a time
    assert f"({helpers} sweep helpers)" in server.log()[log_from:]
    wait_until(lambda: not server.helpers(), 10, what="the helpers gone")
    overrides = dict(pair.split("=") for pair in options.split(";"))
    in_process = json.loads(render(audit(bundles["small"], overrides, workers=1), "json"))
    assert _figures(response.json()) == _figures(in_process)


def test_concurrent_invocations_each_get_their_own_report(server, bundles):
    jobs = [("small", 300, "label"), ("other", 200, "target")] * 2
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        responses = list(pool.map(lambda job: server.invoke(bundles[job[0]], attributes=FAST), jobs))
    for (_, rows, label), response in zip(jobs, responses, strict=True):
        # 4 at once: 2 run, 2 wait for a slot (2 * 2 + 2 threads, 2 of them kept for /ping).
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert (data["rows_per_side"], data["label_column"]) == (rows, label)


def test_ping_answers_fast_while_two_audits_run(server, bundles):
    running: list[tuple[float, float]] = []

    def busy_audit() -> requests.Response:
        start = time.monotonic()
        response = server.invoke(bundles["busy"], attributes=BUSY)
        running.append((start, time.monotonic()))
        return response

    latencies: list[float] = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(busy_audit) for _ in range(2)]
        wait_until(
            lambda: len(server.audit_children()) >= 2, 60, what="both uploads done, both children forked"
        )
        while not any(f.done() for f in futures):
            start = time.monotonic()
            assert requests.get(f"{server.url}/ping", timeout=10).status_code == 200
            latencies.append(time.monotonic() - start)
            wait(futures, timeout=0.1, return_when=FIRST_COMPLETED)  # a ping every 0.1 s until one is done
        responses = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in responses), [r.text[:200] for r in responses]
    assert len(latencies) >= 10, f"the audits were too short to measure ({len(latencies)} pings)"
    print(
        f"\n/ping under two audits: n={len(latencies)} median={statistics.median(latencies) * 1000:.1f} ms "
        f"max={max(latencies) * 1000:.1f} ms"
    )
    assert max(latencies) < 2.0


def test_a_crashed_audit_is_a_500_and_the_server_survives(server, bundles):
    result: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("r", server.invoke(bundles["busy"], attributes=BUSY))
    )
    log_from = len(server.log())
    thread.start()
    child = wait_until(lambda: _audit_running(server, log_from), 60, what="an audit child running the audit")
    helpers = server.helpers()  # alone on the server, it has the idle CPUs' (none on one CPU)
    os.kill(child, signal.SIGKILL)  # what the out-of-memory killer does
    thread.join(60)
    response = result["r"]
    assert response.status_code == 500
    assert response.json()["error"] == "audit_crashed" and "SIGKILL" in response.json()["error-message"]
    assert not [pid for pid in helpers if alive(pid)], "its sweep helpers outlived the answer"
    assert server.invoke(bundles["tar"]).status_code == 200


def test_no_temporary_files_are_left_behind(server, bundles):
    """Each way an invocation ends (an audit of a zip, a truncated zip, junk after a zip's magic, an audit
    of a tar) removes its folder: checked after each, so a leak is pinned to the kind that left it."""
    for name, body, status in [
        ("zip", bundles["small"], 200),
        ("truncated zip", _corrupt_zip(bundles["small"]), 400),
        ("zip magic then junk", b"PK\x03\x04" + b"\0" * 100, 400),
        ("tar", bundles["tar"], 200),
    ]:
        assert server.invoke(body, attributes=CHEAPEST).status_code == status, name
        wait_until(lambda: server.leftovers() == [], 10, what=f"the {name} invocation's folder removed")


# --------------------------------------------------------------------------------------------------
# Timeout and shutdown (a server of their own)
# --------------------------------------------------------------------------------------------------


def test_timeout_then_clean_sigterm(tmp_path, bundles):
    own = Server(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="1", SAGEMAKER_MODEL_SERVER_TIMEOUT="2")
    try:
        # Three at once with 1 audit slot and 4 threads (2 kept for /ping): one runs past the timeout
        # and is stopped, one waits for the slot past the timeout, one is refused at once as busy.
        with ThreadPoolExecutor(max_workers=3) as pool:
            responses = list(pool.map(lambda _: own.invoke(bundles["busy"], attributes=BUSY), range(3)))
        answers = sorted((r.status_code, r.json()["error"]) for r in responses)
        assert answers == [(500, "audit_timeout"), (500, "audit_timeout"), (503, "server_busy")], answers
        assert all(
            "SAGEMAKER_MODEL_SERVER_TIMEOUT" in r.json()["error-message"]
            for r in responses
            if r.status_code == 500
        )

        # SIGTERM while an audit runs: the audit is cancelled (503), the server exits 0 within seconds.
        result: dict[str, requests.Response] = {}
        thread = threading.Thread(
            target=lambda: result.setdefault("r", own.invoke(bundles["busy"], attributes=BUSY))
        )
        thread.start()
        # within the 2 s timeout: the upload is in and its audit child forked
        wait_until(own.audit_children, 60, what="an audit child")
        processes = own.descendants()
        started = time.monotonic()
        own.process.send_signal(signal.SIGTERM)
        assert own.process.wait(timeout=15) == 0, own.log()
        elapsed = time.monotonic() - started
        thread.join(15)
        assert result["r"].status_code == 503 and result["r"].json()["error"] == "shutting_down"
        assert elapsed < 10
        # the forkserver notices its parent is gone within its poll interval
        wait_until(
            lambda: not [pid for pid in processes if alive(pid)], 10, what="every process of serve gone"
        )
        assert own.leftovers() == []
    finally:
        own.stop()


def test_tar_member_paths_are_checked_by_the_server(server, tmp_path):
    body = archive_bytes({"../config.json": json.dumps({"repeats": 1})}, "tar")
    response = server.invoke(body, **{"Content-Type": "application/x-tar"})
    assert response.status_code == 400
    assert response.json()["error"] == "member_path_traversal"


@pytest.mark.parametrize(
    "raw",
    [
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: \x7f\r\nContent-Length: 0\r\n\r\n",
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nBad Header Name: 1\r\nContent-Length: 0\r\n\r\n",
        b"NOT AN HTTP REQUEST\r\n\r\n",
    ],
    ids=["control character in a header", "space in a header name", "bad request line"],
)
def test_requests_gunicorn_refuses_are_answered_with_json_too(server, raw):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"Content-Type: application/json" in head, head
    error = json.loads(body)
    assert error["error"] == "bad_http_request" and error["error-message"].startswith(
        "the HTTP request is malformed"
    )
