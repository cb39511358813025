"""`train` on several hosts (training_cluster.py): resourceconfig.json, the hosts' settings, and two real
`train` processes on loopback as algo-1 and algo-2, each with its own /opt/ml tree (MIA_OPT_ML) and the
host names mapped to 127.0.0.1 (MIA_HOST_ADDRESSES)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sklearn.tree import DecisionTreeClassifier

from builders import (
    CHEAPEST,
    FAST,
    REPO_ROOT,
    noisy_numeric_frame,
    raised,
    split_fit,
    write_bundle,
)
from mia_robustness import training
from mia_robustness.errors import BundleError, ClusterError, OptionsError
from mia_robustness.serving.settings import JobClusterSettings, TrainingSettings
from mia_robustness.training_cluster import JobHosts, LeaderHost, WorkerHost, read_resource_config, resolve
from serving_helpers import free_port

TRAIN = REPO_ROOT / "train"
HOSTS = ["algo-1", "algo-2"]


def _resource_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "resourceconfig.json"
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------------
# resourceconfig.json and the settings
# --------------------------------------------------------------------------------------------------


def test_no_resource_config_is_one_host(tmp_path):
    assert read_resource_config(tmp_path / "resourceconfig.json") is None


def test_resource_config_as_sagemaker_writes_it(tmp_path):
    config = {
        "current_host": "algo-2",
        "current_instance_type": "ml.c5.2xlarge",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-2", "algo-10", "algo-1"],
        "instance_groups": [
            {"instance_group_name": "homogeneousCluster", "instance_type": "ml.c5.2xlarge",
             "hosts": ["algo-2", "algo-10", "algo-1"]}
        ],
        "network_interface_name": "eth0",
    }  # fmt: skip
    hosts = read_resource_config(_resource_config(tmp_path, json.dumps(config)))
    # Sorted as text, as SageMaker's own toolkits sort them: algo-1 leads, algo-10 comes before algo-2.
    assert hosts == JobHosts(hosts=("algo-1", "algo-10", "algo-2"), current="algo-2")
    assert hosts.leader == "algo-1" and hosts.several and not hosts.is_leader


def test_one_host_is_not_several(tmp_path):
    hosts = read_resource_config(
        _resource_config(tmp_path, '{"current_host": "algo-1", "hosts": ["algo-1"]}')
    )
    assert hosts is not None and hosts.is_leader and not hosts.several


def test_a_job_of_one_host_audits_in_this_process_as_before(tmp_path, monkeypatch):
    root = tmp_path / "opt_ml"
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "hyperparameters.json").write_text(json.dumps(CHEAPEST))
    (root / "input" / "config" / "resourceconfig.json").write_text(
        '{"current_host": "algo-1", "hosts": ["algo-1"]}'
    )
    model, members, non_members = split_fit(
        noisy_numeric_frame(300, seed=4), DecisionTreeClassifier(random_state=0)
    )
    write_bundle(tmp_path / "made", model, members, non_members, kind="folder").rename(tmp_path / "bundle")
    (root / "input" / "data").mkdir()
    (tmp_path / "bundle").rename(root / "input" / "data" / "training")
    monkeypatch.setenv("MIA_OPT_ML", str(root))
    monkeypatch.setenv("MIA_DASK_SCHEDULER_PORT", "1")  # would fail if a scheduler were started
    assert training.main([]) == 0
    report = json.loads((root / "model" / "report.json").read_text())
    assert report["data"]["rows_per_side"] == 150 and report["results"]


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("{not json", "not valid JSON"),
        ('["algo-1"]', "JSON object"),
        ('{"current_host": "algo-1"}', "no list of host names"),
        ('{"current_host": "algo-1", "hosts": []}', "no list of host names"),
        ('{"current_host": "algo-1", "hosts": ["algo-1", 2]}', "not a name"),
        ('{"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}', "twice"),
        ('{"hosts": ["algo-1", "algo-2"]}', "current_host"),
        ('{"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}', "not one of its 2 hosts"),
    ],
)
def test_malformed_resource_config_is_refused_clearly(tmp_path, text, phrase):
    error = raised(Exception, "bad_resource_config", read_resource_config, _resource_config(tmp_path, text))
    assert phrase in error.message and "resourceconfig.json" in error.message
    assert error.http_status == 400  # train exits 2: the job's setup is wrong


def test_cluster_settings_from_the_environment():
    assert TrainingSettings.from_env({}).job_cluster == JobClusterSettings()
    settings = JobClusterSettings.from_env(
        {
            "MIA_DASK_SCHEDULER_PORT": "9786",
            "MIA_DASK_WORKER_PORT": "0",
            "MIA_CLUSTER_JOIN_TIMEOUT_S": "12.5",
            "MIA_HOST_ADDRESSES": "algo-1=127.0.0.1; algo-2=127.0.0.2;",
        }
    )
    assert settings == JobClusterSettings(9786, 0, 12.5, (("algo-1", "127.0.0.1"), ("algo-2", "127.0.0.2")))
    assert resolve("algo-2", settings) == "127.0.0.2"
    assert resolve("localhost", settings) == "127.0.0.1"  # not listed: DNS
    assert resolve("no-such-host.invalid", settings) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MIA_DASK_SCHEDULER_PORT", "0"),
        ("MIA_DASK_WORKER_PORT", "70000"),
        ("MIA_CLUSTER_JOIN_TIMEOUT_S", "soon"),
        ("MIA_HOST_ADDRESSES", "algo-1:127.0.0.1"),
        ("MIA_HOST_ADDRESSES", "algo-1=127.0.0.1;=127.0.0.2"),
    ],
)
def test_bad_cluster_settings_name_the_variable(name, value):
    error = raised(OptionsError, "bad_setting", JobClusterSettings.from_env, {name: value})
    assert name in error.message


# --------------------------------------------------------------------------------------------------
# Two `train` processes on loopback
# --------------------------------------------------------------------------------------------------


def _host_tree(root: Path, host: str, bundle: Path, hyperparameters: dict) -> Path:
    config = root / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": host, "hosts": HOSTS}))
    channel = root / "input" / "data" / "training"
    channel.mkdir(parents=True)
    (channel / bundle.name).write_bytes(bundle.read_bytes())  # every host gets the channel (FullyReplicated)
    return root


class TrainProcess:
    """`./train` as one host of the job, its output in ``root/train.log``."""

    def __init__(self, root: Path, scheduler_port: int, **extra: str) -> None:
        environ = {
            **os.environ,
            "MIA_OPT_ML": str(root),
            "MIA_HOST_ADDRESSES": "algo-1=127.0.0.1;algo-2=127.0.0.1",
            "MIA_DASK_SCHEDULER_PORT": str(scheduler_port),
            "MIA_DASK_WORKER_PORT": "0",  # both workers share 127.0.0.1
            "MIA_CLUSTER_JOIN_TIMEOUT_S": "60",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **extra,
        }
        self.root = root
        self.log_path = root / "train.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(TRAIN)], env=environ, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def failure(self) -> str:
        return (self.root / "output" / "failure").read_text()

    def finish(self, timeout: float = 240) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"train did not finish in {timeout} s:\n{self.log[-3000:]}") from None


def _job(tmp_path: Path, bundle: Path, hyperparameters: dict = FAST) -> list[TrainProcess]:
    """algo-2 then algo-1 started (the worker host waits for the scheduler), on a free scheduler port."""
    port = free_port()
    roots = [_host_tree(tmp_path / host, host, bundle, hyperparameters) for host in HOSTS]
    worker_host = TrainProcess(roots[1], port)
    return [TrainProcess(roots[0], port), worker_host]


@pytest.fixture
def bundle(tmp_path) -> Path:
    model, members, non_members = split_fit(
        noisy_numeric_frame(600, seed=3), DecisionTreeClassifier(random_state=0)
    )
    return write_bundle(tmp_path / "made", model, members, non_members, kind="zip")


def test_two_hosts_audit_together_and_both_exit_0(tmp_path, bundle):
    started = time.monotonic()
    leader, worker_host = _job(tmp_path, bundle)
    assert leader.finish() == 0, leader.log[-3000:]
    assert worker_host.finish() == 0, worker_host.log[-3000:]
    elapsed = time.monotonic() - started
    report = json.loads((leader.root / "model" / "report.json").read_text())
    assert report["data"]["rows_per_side"] == 300 and report["results"]
    assert "all 2 hosts' workers joined" in leader.log
    for host in HOSTS:
        count = int(leader.log.split(f"host {host}'s worker ran ")[1].split()[0])
        assert count > 0, f"{host}'s worker ran no task:\n{leader.log[-3000:]}"
    assert int(worker_host.log.split("the audit is done; this host's worker ran ")[1].split()[0]) > 0
    assert not (worker_host.root / "model" / "report.json").exists()  # one report, from the first host
    assert not any((p.root / "output" / "failure").exists() for p in (leader, worker_host))
    print(f"\ntwo-host training job on loopback: {elapsed:.1f} s")


# --------------------------------------------------------------------------------------------------
# The hosts' roles in this process: a real scheduler and workers, the roles' failure paths
# --------------------------------------------------------------------------------------------------


def _settings(scheduler_port: int, join_timeout: float = 60) -> JobClusterSettings:
    return JobClusterSettings(
        scheduler_port, 0, join_timeout, (("algo-1", "127.0.0.1"), ("algo-2", "127.0.0.1"))
    )


class WorkerHostThread:
    """algo-2's role (:class:`WorkerHost`) in a thread of this process: its worker is a real `dask worker`."""

    def __init__(self, settings: JobClusterSettings) -> None:
        self.host = WorkerHost(JobHosts(tuple(HOSTS), "algo-2"), settings, 1, lambda line: None)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.host.serve()
        except BaseException as error:  # noqa: BLE001 - the test asserts on it
            self.error = error

    def finish(self, timeout: float = 60) -> BaseException | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "algo-2 did not finish"
        assert self.host.worker is None or self.host.worker.poll() is not None  # its worker was stopped
        return self.error


def test_a_failure_on_the_first_host_stops_the_other():
    """algo-1's audit fails (a corrupt bundle, say): algo-2 stops with algo-1's reason."""
    settings = _settings(free_port())
    worker_host = WorkerHostThread(settings)
    leader = LeaderHost(JobHosts(tuple(HOSTS), "algo-1"), settings, 1, lambda line: None)
    with pytest.raises(BundleError), leader:
        raise BundleError("the archive is corrupt", code="corrupt_archive")
    error = worker_host.finish()
    assert isinstance(error, ClusterError) and error.code == "peer_failed", error
    assert error.message == "host algo-1 failed: corrupt_archive: the archive is corrupt"
    # What train then writes: exit 1, the peer's reason in this host's own failure file.
    assert training.failure_of(error) == (f"peer_failed: {error.message}", 1)


def test_a_failure_on_a_worker_host_stops_the_audit():
    """algo-2's worker dies mid-audit (as if killed for memory): algo-2 fails saying so, and algo-1's audit
    is interrupted at once (its watcher signals the auditing thread) instead of finishing without it."""
    settings = _settings(free_port())
    worker_host = WorkerHostThread(settings)
    started = time.monotonic()
    leader = LeaderHost(JobHosts(tuple(HOSTS), "algo-1"), settings, 1, lambda line: None)
    with pytest.raises(ClusterError) as caught, leader:
        os.kill(worker_host.host.worker.pid, signal.SIGKILL)
        while time.monotonic() - started < 120:  # the audit's work, until the watcher interrupts it
            time.sleep(0.05)
    assert caught.value.code == "peer_failed"
    assert caught.value.message.startswith(
        "host algo-2 failed: worker_failed: this host's Dask worker exited"
    )
    error = worker_host.finish()
    assert isinstance(error, ClusterError) and error.code == "worker_failed"
    assert time.monotonic() - started < 60


def test_a_worker_host_that_cannot_reach_the_scheduler_fails_in_bounded_time():
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        WorkerHost(JobHosts(tuple(HOSTS), "algo-2"), _settings(free_port(), 3), 1, lambda line: None).serve()
    assert caught.value.code == "scheduler_unreachable"
    assert caught.value.message.startswith("could not reach the Dask scheduler on the first host algo-1")
    assert "within 3 s (MIA_CLUSTER_JOIN_TIMEOUT_S)" in caught.value.message
    assert time.monotonic() - started < 30
