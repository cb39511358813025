"""`train` on several hosts (training_cluster.py): resourceconfig.json, the hosts' settings, and two real
`train` processes on loopback as algo-1 and algo-2, each with its own /opt/ml tree (MIA_OPT_ML) and the
host names mapped to 127.0.0.1 (MIA_HOST_ADDRESSES)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    wait_until,
    write_bundle,
)
from mia_robustness import training
from mia_robustness.errors import OptionsError
from mia_robustness.serving.settings import JobClusterSettings, TrainingSettings
from mia_robustness.training_cluster import JobHosts, read_resource_config, resolve
from serving_helpers import cmdline, free_port, process_table

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


def test_a_failure_on_the_first_host_stops_the_other(tmp_path, bundle):
    (tmp_path / "corrupt").mkdir()
    corrupt = tmp_path / "corrupt" / bundle.name
    corrupt.write_bytes(b"PK\x03\x04" + b"\0" * 200)
    leader, worker_host = _job(tmp_path, corrupt)
    assert leader.finish() == 2, leader.log[-3000:]
    assert leader.failure.startswith("corrupt_archive: ")
    assert worker_host.finish() == 1, worker_host.log[-3000:]
    assert worker_host.failure.startswith("peer_failed: host algo-1 failed: corrupt_archive: "), (
        worker_host.failure
    )
    assert "Traceback" not in leader.log + worker_host.log


def _dask_worker_of(train: TrainProcess) -> int:
    children = [pid for pid, (_, parent) in process_table().items() if parent == train.process.pid]
    return next(pid for pid in children if "dask_worker" in cmdline(pid))


def test_a_failure_on_a_worker_host_stops_the_audit(tmp_path, bundle):
    """algo-2's worker dies mid-audit (as if killed for memory): algo-2 fails saying so, and algo-1's audit
    is interrupted instead of finishing on its own worker."""
    heavier = {"attack_models": "threshold,rf,gb", "repeats": "3", "proportions": "0.25,0.5,0.75,1"}
    leader, worker_host = _job(tmp_path, bundle, heavier)
    wait_until(lambda: "workers joined" in leader.log, timeout=60, interval=0.2, what="both hosts joined")
    os.kill(_dask_worker_of(worker_host), signal.SIGKILL)
    assert worker_host.finish() == 1, worker_host.log[-3000:]
    assert worker_host.failure.startswith("worker_failed: this host's Dask worker exited"), (
        worker_host.failure
    )
    assert leader.finish() == 1, leader.log[-3000:]
    assert leader.failure.startswith("peer_failed: host algo-2 "), leader.failure
    assert not (leader.root / "model" / "report.json").exists()
    assert "Traceback" not in leader.log + worker_host.log


def test_a_worker_host_that_cannot_reach_the_scheduler_fails_in_bounded_time(tmp_path, bundle):
    root = _host_tree(tmp_path / "algo-2", "algo-2", bundle, FAST)
    started = time.monotonic()
    worker_host = TrainProcess(root, free_port(), MIA_CLUSTER_JOIN_TIMEOUT_S="3")
    assert worker_host.finish(timeout=60) == 1, worker_host.log[-3000:]
    assert worker_host.failure.startswith(
        "scheduler_unreachable: could not reach the Dask scheduler on the first host algo-1"
    )
    assert "within 3 s (MIA_CLUSTER_JOIN_TIMEOUT_S)" in worker_host.failure
    assert time.monotonic() - started < 30
