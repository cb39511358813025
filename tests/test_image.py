"""The built Docker image, run the way SageMaker runs it: `docker run IMAGE serve` and `docker run IMAGE train`.

Skipped unless ``MIA_TEST_IMAGE`` names a built image; ``make docker-test`` (``.ci/docker-test``) starts a
private dockerd, builds the image and runs this file with it set (and ``DOCKER_HOST`` pointing at that
daemon). ``MIA_TEST_DOCKER`` may name the docker client (default: ``docker`` on PATH).

The daemon has no bridge network, so ``-p`` publishing has nothing to forward to: ``serve`` runs in the
host's network namespace on a free loopback port, told by ``SAGEMAKER_BIND_TO_PORT`` (which the image's
accept-bind-to-port label promises to honour). ``train`` runs with no network at all. Every container
carries the label ``mia.docker-test``, by which ``.ci/dockerd-stop`` removes any a killed run left.

The figures are compared with what this host's CLI gives for the same bundle, options and seed, computed
here: the nn attack's figures move with the CPU's instruction set, so a report recorded elsewhere may differ.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from builders import REPO_ROOT, archive_bytes, folder_files, wait_until
from mia_robustness.serving import front
from mia_robustness.serving.settings import ServerSettings
from serving_helpers import ATTRIBUTES, free_port
from slow_clients import SlowClients, describe, ping_latencies

IMAGE = os.environ.get("MIA_TEST_IMAGE", "")
DOCKER = os.environ.get("MIA_TEST_DOCKER") or shutil.which("docker") or "docker"
LABEL = "mia.docker-test"
SAMPLE = REPO_ROOT / "sample_input"
STARTUP_SECONDS = 120
AUDIT_SECONDS = 900
SLOW_CONNECTIONS = 50  # of each kind: trickling headers and trickling bodies
PING_SECONDS = 10.0

pytestmark = pytest.mark.skipif(
    not IMAGE,
    reason="MIA_TEST_IMAGE is not set: these tests check a built image (make docker-test builds one and runs them)",
)


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the docker client; raise with its output when it fails."""
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(
            f"docker {' '.join(args[:3])} ... exited {done.returncode}: {done.stderr[-2000:]}"
        )
    return done


def cli_report(tmp_path: Path, *flags: str) -> dict:
    """The host CLI's JSON report on sample_input/ with ``flags``."""
    out = tmp_path / "cli.json"
    subprocess.run(
        [sys.executable, "-m", "mia_robustness.cli", "audit", str(SAMPLE), *flags, "-q", "-o", str(out)],
        check=True,
        timeout=AUDIT_SECONDS,
    )
    return json.loads(out.read_text(encoding="utf-8"))


def assert_same_figures(image: dict, host: dict) -> None:
    """The image's report equals the host CLI's, timings aside; containment differs (the image's sandbox
    runs as nobody) and is checked on its own by :func:`assert_contained`."""
    image, host = dict(image), dict(host)
    for doc in (image, host):
        doc.pop("timings", None)
        doc.pop("containment", None)
    differing = [key for key in sorted(set(image) | set(host)) if image.get(key) != host.get(key)]
    assert not differing, f"the image's report differs from the CLI's in: {', '.join(differing)}"
    assert host["results"], "the CLI's report has no results"


def assert_contained(report: dict) -> None:
    """The model ran in the sandbox with every layer in place: as root in the image, seccomp, Landlock and
    the drop to nobody all work under Docker's default seccomp profile."""
    containment = report.get("containment", {})
    wanted = {"sandbox": True, "seccomp": True, "user": "nobody"}
    assert {key: containment.get(key) for key in wanted} == wanted, containment
    assert containment.get("landlock_abi", 0) >= 1, containment


class ServeContainer:
    """`docker run -d IMAGE serve` on a free loopback port of the host's network."""

    def __init__(self, *run_options: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = f"mia-docker-test-serve-{os.getpid()}-{self.port}"
        docker(
            "run", "-d", "--name", self.name, "--label", LABEL, "--network=host", *run_options,
            "-e", f"SAGEMAKER_BIND_TO_PORT={self.port}", "-e", "MIA_BIND_HOST=127.0.0.1", IMAGE, "serve",
        )  # fmt: skip

    def state(self, field: str) -> str:
        return docker("inspect", "--format", f"{{{{.State.{field}}}}}", self.name).stdout.strip()

    def logs(self) -> str:
        done = subprocess.run([DOCKER, "logs", "--tail", "40", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr

    def ping(self) -> bool:
        try:
            return requests.get(f"{self.url}/ping", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def wait_until_up(self) -> None:
        def up() -> bool:
            if self.ping():
                return True
            assert self.state("Running") == "true", f"serve exited before answering /ping:\n{self.logs()}"
            return False

        wait_until(up, timeout=STARTUP_SECONDS, interval=1.0, what="/ping answering 200")

    def invoke(self, body: bytes, accept: str, content_type: str = "application/zip", **headers: str):
        headers = {"Content-Type": content_type, "Accept": accept, **headers}
        return requests.post(f"{self.url}/invocations", data=body, headers=headers, timeout=AUDIT_SECONDS)

    def remove(self) -> None:
        subprocess.run([DOCKER, "rm", "-f", self.name], capture_output=True)


@pytest.fixture(scope="module")
def bundle_zip() -> bytes:
    """sample_input/ as a zip archive, its files at the top level."""
    return archive_bytes(folder_files(SAMPLE))


@pytest.fixture(scope="module")
def served():
    """The image's `serve` as SageMaker starts it (as root), answering /ping."""
    container = ServeContainer()
    try:
        container.wait_until_up()
        yield container
    finally:
        container.remove()


# --------------------------------------------------------------------------------------------------
# serve: /invocations
# --------------------------------------------------------------------------------------------------


def test_json_report_has_the_cli_figures_and_ran_contained(served, bundle_zip, tmp_path):
    """The default options (what a SageMaker user gets) give the host CLI's figures, audited contained."""
    answer = served.invoke(bundle_zip, "application/json")
    assert answer.status_code == 200, (answer.text[:600], served.logs())
    report = answer.json()
    assert "schema_version" in report
    assert_same_figures(report, cli_report(tmp_path))
    assert_contained(report)


def test_csv_report_takes_its_options_from_the_custom_attributes(served, bundle_zip):
    """Per-request options reach the audit: repeats=1 through SageMaker's custom attributes header."""
    answer = served.invoke(bundle_zip, "text/csv", **{ATTRIBUTES: "repeats=1"})
    assert answer.status_code == 200, (answer.text[:600], served.logs())
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert len(rows) >= 2, f"CSV report has {len(rows)} row(s); expected a header and data"
    header = rows[0]
    assert len(header) >= 2 and all(name.strip() for name in header), header
    assert not any(name.replace(".", "", 1).isdigit() for name in header), (
        f"CSV header looks like data: {header}"
    )
    repeats = header.index("repeats")
    assert {row[repeats] for row in rows[1:]} <= {"1", ""}, "the audit did not run with repeats=1"
    assert any(row[repeats] == "1" for row in rows[1:])


def test_random_bytes_are_a_4xx_with_a_json_error(served):
    answer = served.invoke(os.urandom(4096), "application/json", content_type="application/octet-stream")
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:600])
    error = answer.json()
    assert isinstance(error, dict) and error.get("error") and error.get("error-message"), error


# --------------------------------------------------------------------------------------------------
# serve: the front server (nginx)
# --------------------------------------------------------------------------------------------------


def test_ping_stays_fast_while_100_slow_clients_trickle(served):
    """Slow clients must not starve /ping: 50 connections trickle a header and 50 a body, one byte a second,
    and none is dropped early (the check would then prove nothing)."""
    with SlowClients("127.0.0.1", served.port, headers=SLOW_CONNECTIONS, bodies=SLOW_CONNECTIONS) as slow:
        assert slow.wait_rounds(1), "the slow connections could not send their first byte"
        latencies = ping_latencies("127.0.0.1", served.port, PING_SECONDS)
        still_open = slow.still_open()
    print(f"\n/ping with {2 * SLOW_CONNECTIONS} slow connections: {describe(latencies)}")
    assert still_open == 2 * SLOW_CONNECTIONS and slow.dropped == 0, (still_open, slow.dropped)
    assert max(latencies) < 2.0, describe(latencies)


def _raw(port: int, request: bytes) -> tuple[str, bytes, bytes]:
    """Send ``request`` as is; (status line, head, body) of the answer, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:  # nginx may reset after refusing an unread body
            pass
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), head, body


@pytest.mark.parametrize(
    ("status", "code", "request_bytes"),
    [
        pytest.param(413, "payload_too_large", b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\nContent-Length: 105906177\r\n\r\n", id="101-MB-declared"),
        pytest.param(400, "bad_http_request", b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/zip\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nabc\r\n0\r\n\r\n", id="malformed-chunked"),
    ],
)  # fmt: skip
def test_nginx_refusals_are_the_apps_json(served, status, code, request_bytes):
    line, head, body = _raw(served.port, request_bytes)
    assert line.startswith(f"HTTP/1.1 {status} "), line
    assert b"Content-Type: application/json" in head, head
    messages = {
        answer_code: message
        for _, _, answer_code, message in front.error_answers(ServerSettings.from_env({}))
    }
    assert json.loads(body) == {"error": code, "error-message": messages[code]}


# --------------------------------------------------------------------------------------------------
# serve: users and stopping
# --------------------------------------------------------------------------------------------------


def test_serve_starts_as_the_unprivileged_user_mia():
    """The image runs as root for SageMaker; the README offers `--user mia` for local serving."""
    container = ServeContainer("--user", "mia")
    try:
        container.wait_until_up()
        assert docker("exec", container.name, "id", "-un").stdout.strip() == "mia"
        assert docker("exec", container.name, "id", "-u").stdout.strip() != "0"
    finally:
        container.remove()


def test_sigterm_stops_serve_with_exit_0(served):
    """nginx and gunicorn stop cleanly on `docker stop`. Last in this file: it stops the shared container."""
    docker("stop", "--time", "20", served.name, timeout=60)
    assert served.state("ExitCode") == "0", served.logs()


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def test_train_writes_a_contained_report_with_the_cli_figures(tmp_path):
    """A training job on a temporary /opt/ml, with no network; SageMaker writes every hyperparameter as a
    string."""
    ml = tmp_path / "opt-ml"
    for folder in ("input/config", "input/data/training", "model", "output"):
        (ml / folder).mkdir(parents=True)
    (ml / "input/config/hyperparameters.json").write_text('{"repeats": "1"}\n')
    (ml / "input/config/inputdataconfig.json").write_text(
        '{"training": {"ContentType": "application/x-directory", "TrainingInputMode": "File"}}\n'
    )
    shutil.copytree(SAMPLE, ml / "input/data/training", dirs_exist_ok=True)
    name = f"mia-docker-test-train-{os.getpid()}"
    started = time.monotonic()
    try:
        done = subprocess.run(
            [
                DOCKER,
                "run",
                "--name",
                name,
                "--label",
                LABEL,
                "--network=none",
                "-v",
                f"{ml}:/opt/ml",
                IMAGE,
                "train",
            ],
            capture_output=True,
            text=True,
            timeout=AUDIT_SECONDS,
        )
    finally:
        subprocess.run([DOCKER, "rm", "-f", name], capture_output=True)
    failure = ml / "output/failure"
    log = (done.stdout + done.stderr)[-2000:]
    assert done.returncode == 0, (log, failure.read_text()[:2000] if failure.exists() else "no failure file")
    print(
        f"\ntrain: exit 0 in {time.monotonic() - started:.0f} s; model/: {sorted(p.name for p in (ml / 'model').iterdir())}"
    )
    report = json.loads((ml / "model/report.json").read_text(encoding="utf-8"))
    assert "schema_version" in report
    assert_contained(report)
    assert_same_figures(report, cli_report(tmp_path, "--repeats", "1"))


# --------------------------------------------------------------------------------------------------
# train on two hosts: a multi-instance training job
# --------------------------------------------------------------------------------------------------

# A private network of its own (the daemon has no default bridge): the two containers reach each other on
# it and nothing else, as SageMaker's hosts of one job under network isolation.
JOB_SUBNET = "10.213.{}.0/24"
JOB_HOSTS = ("algo-1", "algo-2")


def test_train_on_two_hosts_over_a_private_network(tmp_path):
    """Two containers as SageMaker starts the hosts of a job of two instances: each with its own /opt/ml
    (the bundle on both), resourceconfig.json listing algo-1 and algo-2, host names in /etc/hosts, the
    default ports. The job completes, both exit 0 and both hosts' workers ran tasks."""
    network = f"mia-docker-test-{os.getpid()}"
    subnet = JOB_SUBNET.format(os.getpid() % 250)
    addresses = {host: subnet.replace(".0/24", f".{10 + i}") for i, host in enumerate(JOB_HOSTS)}
    docker(
        "network", "create", "--driver", "bridge", "--internal", "--subnet", subnet, "--label", LABEL, network
    )
    names = {host: f"{network}-{host}" for host in JOB_HOSTS}
    roots = {}
    try:
        for host in JOB_HOSTS:
            ml = roots[host] = tmp_path / host
            for folder in ("input/config", "input/data/training", "model", "output"):
                (ml / folder).mkdir(parents=True)
            (ml / "input/config/hyperparameters.json").write_text('{"repeats": "1"}\n')
            (ml / "input/config/resourceconfig.json").write_text(
                json.dumps({"current_host": host, "hosts": list(JOB_HOSTS), "network_interface_name": "eth0"})
            )
            shutil.copytree(SAMPLE, ml / "input/data/training", dirs_exist_ok=True)
            others = [f"--add-host={other}:{addresses[other]}" for other in JOB_HOSTS if other != host]
            docker(
                "run", "-d", "--name", names[host], "--label", LABEL, "--network", network,
                "--ip", addresses[host], "--hostname", host, *others, "-v", f"{ml}:/opt/ml", IMAGE, "train",
            )  # fmt: skip
        statuses = {
            host: int(docker("wait", names[host], timeout=AUDIT_SECONDS).stdout.strip()) for host in JOB_HOSTS
        }
        logs = {}
        for host in JOB_HOSTS:
            done = subprocess.run([DOCKER, "logs", names[host]], capture_output=True, text=True)
            logs[host] = done.stdout + done.stderr
    finally:
        for host in JOB_HOSTS:
            subprocess.run([DOCKER, "rm", "-f", names[host]], capture_output=True)
        subprocess.run([DOCKER, "network", "rm", network], capture_output=True)
    for host in JOB_HOSTS:
        failure = roots[host] / "output/failure"
        reason = failure.read_text()[:2000] if failure.exists() else "no failure file"
        assert statuses[host] == 0, (host, logs[host][-3000:], reason)
    leader_log = logs["algo-1"]
    print(f"\n{leader_log[-1500:]}\n{logs['algo-2'][-500:]}")
    assert "all 2 hosts' workers joined" in leader_log
    for host in JOB_HOSTS:
        count = int(leader_log.split(f"host {host}'s worker ran ")[1].split()[0])
        assert count > 0, f"{host}'s worker ran no task:\n{leader_log[-3000:]}"
    assert int(logs["algo-2"].split("this host's worker ran ")[1].split()[0]) > 0
    report = json.loads((roots["algo-1"] / "model/report.json").read_text(encoding="utf-8"))
    assert_contained(report)
    assert report["results"]
    assert not (roots["algo-2"] / "model/report.json").exists()
