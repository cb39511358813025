"""The audit on a Dask cluster: a real `dask scheduler` and two single-threaded `dask worker` processes on
loopback. The same bundle and seed give the same figures as in one process; both workers ran tasks (the
sweep's cells, the reference fits, the what-if's fits), the model's in sandboxed children there; and an
address nothing answers on is one clear error within seconds, never a hang."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback

import psutil
import pytest
from pandas.api.types import is_numeric_dtype
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from builders import ADULT_NUMBER_COLUMNS, REPO_ROOT, adult_frame, needs_adult, split_fit, write_bundle
from cluster_helpers import free_port, loopback_cluster
from mia_robustness import audit, audit_estimator
from mia_robustness.engine import scaled_for_cluster
from mia_robustness.errors import ClusterError, ModelError, OptionsError, TimeLimitError, error_class
from mia_robustness.executor import open_executor
from mia_robustness.options import options_from_mapping
from mia_robustness.remediation import MODELS_PER_CONFIG
from mia_robustness.report import render

pytestmark = needs_adult

# Every kind of work unit: learned and threshold cells, LiRA / RMIA fits, the what-if's fits.
OPTIONS = {
    "attack_models": "threshold,rf,lira,rmia",
    "repeats": "2",
    "proportions": "0.5,1",
    "reference_models": "4",
}


def _adult_forest(rows_per_side: int = 300):
    frame = adult_frame(2 * rows_per_side, seed=3)
    categorical = [c for c in frame.columns if not is_numeric_dtype(frame[c]) and c != "income"]
    model = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), categorical), remainder="passthrough"
        ),
        RandomForestClassifier(n_estimators=8, min_samples_leaf=2, random_state=0),
    )
    return split_fit(frame, model, label="income")


@pytest.fixture(scope="module")
def cluster():
    """A scheduler and two single-threaded workers for this module's tests."""
    with loopback_cluster(workers=2) as running:
        yield running


@pytest.fixture(scope="module")
def adult_bundle(tmp_path_factory):
    model, members, non_members = _adult_forest()
    return write_bundle(tmp_path_factory.mktemp("cluster"), model, members, non_members)


def _figures(report) -> dict:
    """The report without what depends on where and when it ran (timings, the cluster's description)."""
    document = json.loads(render(report, "json"))
    for key in ("timings", "resolved", "created", "started", "finished"):
        document.pop(key, None)
    return document


def _tasks_by_worker(address: str, before: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """The mia task keys each worker has run (its state machine's log), by worker address; those not in
    ``before`` (an earlier answer) when given."""
    from distributed import Client

    def ran(dask_worker):
        return sorted({str(entry[0]) for entry in dask_worker.state.log if str(entry[0]).startswith("mia-")})

    with Client(address, set_as_default=False) as client:
        now = client.run(ran)
    before = before or {}
    return {worker: sorted(set(keys) - set(before.get(worker, []))) for worker, keys in now.items()}


def _confined(process: psutil.Process) -> bool:
    """Whether ``process`` runs under a seccomp filter: a sandbox child that has its request (and so a
    model), not a spare one that waits for its audit (``sandbox/spare.py``)."""
    for line in open(f"/proc/{process.pid}/status"):  # noqa: SIM115 - read at once
        if line.startswith("Seccomp:"):
            return line.split()[1] != "0"
    return False


class SandboxWatch:
    """Which worker processes had a sandbox child (``python -I -m mia_robustness.sandbox.child``) holding a
    model while the block ran: the model's fits ran there, not in the worker."""

    def __init__(self, worker_pids):
        self.worker_pids = worker_pids
        self.seen: set[int] = set()
        self.children: set[int] = set()  # the confined children themselves
        self._stop = threading.Event()

    def _watch(self):
        while not self._stop.wait(0.1):
            for pid in self.worker_pids:
                with contextlib.suppress(psutil.Error):
                    for child in psutil.Process(pid).children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            if "mia_robustness.sandbox.child" in child.cmdline() and _confined(child):
                                self.seen.add(pid)
                                self.children.add(child.pid)

    def __enter__(self):
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()


def test_a_cluster_audit_gives_the_in_process_figures_and_both_workers_work(adult_bundle, cluster, tmp_path):
    address = cluster.address
    alone = audit(adult_bundle, OPTIONS)
    before = _tasks_by_worker(address)
    started = time.perf_counter()
    with SandboxWatch(cluster.worker_pids) as watch:
        spread = audit(adult_bundle, OPTIONS, cluster=address, cache=tmp_path)
    took = time.perf_counter() - started
    tasks = _tasks_by_worker(address, before)
    assert _figures(spread) == _figures(alone)
    assert spread.remediation.status == "ran" and alone.remediation.status == "ran"
    assert spread.resolved["cluster"] == {
        "address": address,
        "workers": 2,
        "slots": 2,
        "reference_models": 4,
        "reference_max_rows": 40_000,
    }
    assert "cluster" not in alone.resolved
    assert len(tasks) == 2
    for keys in tasks.values():
        # Each worker ran cells and model fits (4 reference fits may all go to the first warm child).
        kinds = {key.split("-")[1] for key in keys}
        assert "cell" in kinds and kinds & {"reference", "what_if"}, keys
    # A task stolen from one worker by the other is in both logs: count each key once.
    every = {key for keys in tasks.values() for key in keys}
    # The baseline and each retrained variant, MODELS_PER_CONFIG fits each (serving-side options fit nothing).
    configs = 1 + sum(variant.kind == "retrained" for variant in spread.remediation.variants)
    assert sum(key.startswith("mia-what_if-") for key in every) == configs * MODELS_PER_CONFIG
    # One set of 4 reference models serves both repeats (reference.plan_fit_sets): 4 fits, not 2 x 4.
    assert sum(key.startswith("mia-reference-") for key in every) == 4
    # Each worker fitted the model in a sandboxed child of its own, and stopped it when the audit ended.
    assert watch.seen == set(cluster.worker_pids)
    assert not _sandbox_children(cluster.worker_pids)
    assert took < 60
    # The reference-answer cache sits above the cluster: the answers the workers fitted were kept, and a
    # rerun of the same reference stage (the same fit sets) on the cluster fits nothing.
    after = _tasks_by_worker(address)
    rerun = audit(
        adult_bundle,
        {**OPTIONS, "attack_models": "lira", "what_if": "false"},
        cluster=address,
        cache=tmp_path,
    )
    assert not any(
        key.startswith("mia-reference-") for keys in _tasks_by_worker(address, after).values() for key in keys
    )
    lira = [row for row in _figures(spread)["results"] if row["attack_model"].startswith("lira")]
    assert lira and _figures(rerun)["results"] == lira


def test_each_worker_starts_its_next_audits_child_ahead_and_that_audit_takes_it(adult_bundle, cluster):
    """After an audit each worker has a spare sandbox child (sandbox/spare.py): waiting unconfined, in an
    empty folder of its own. The next audit's child on that worker is that process, confined once it has
    its request (its imports were done while no audit waited)."""
    options = {
        **OPTIONS,
        "attack_models": "lira",
        "repeats": "1",
        "reference_models": "2",
        "what_if": "false",
    }
    audit(adult_bundle, options, cluster=cluster.address)
    assert _wait_until(lambda: len(_sandbox_children(cluster.worker_pids, spares=True)) == 2, 30) is not None
    spares = set(_sandbox_children(cluster.worker_pids, spares=True))
    for pid in spares:
        assert os.listdir(psutil.Process(pid).cwd()) == []
    with SandboxWatch(cluster.worker_pids) as watch:
        audit(adult_bundle, options, cluster=cluster.address)
    assert spares <= watch.children
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie" for pid in spares)


def test_on_a_cluster_the_default_reference_models_scale_with_its_slots(cluster):
    """Two single-threaded workers: 16 reference models by default (at least 16, 4 per slot), when the fits
    run there; an explicit number is kept, and fits that stay here (audit_estimator) do not scale."""
    executor = open_executor(cluster.address, 1)
    try:
        default = options_from_mapping({"attack_models": "threshold,lira"})
        scaled, resolved = scaled_for_cluster(default, executor, fits_spread=True)
        assert scaled.reference_models == 16 and resolved["reference_models"] == 16
        assert resolved == {"address": cluster.address, "workers": 2, "slots": 2, "reference_models": 16}
        assert scaled_for_cluster(default, executor, fits_spread=False)[0].reference_models == 4
        explicit = options_from_mapping({"attack_models": "threshold,lira", "reference_models": "6"})
        assert scaled_for_cluster(explicit, executor, fits_spread=True)[0].reference_models == 6
    finally:
        executor.close()


def test_audit_estimator_on_a_cluster_keeps_the_model_here_and_the_figures(cluster):
    model, members, non_members = _adult_forest(200)
    options = {"attack_models": "threshold,rf,lira", "repeats": "1", "proportions": "0.5,1"}
    alone = audit_estimator(model, members, non_members, **options)
    before = _tasks_by_worker(cluster.address)
    spread = audit_estimator(model, members, non_members, cluster=cluster.address, **options)
    tasks = _tasks_by_worker(cluster.address, before)
    assert _figures(spread) == _figures(alone)
    # The defaults do not scale: the reference fits ran here, only the cells on the workers.
    assert spread.resolved["cluster"]["reference_models"] == 4
    kinds = {key.split("-")[1] for keys in tasks.values() for key in keys}
    assert kinds == {"cell"}


def test_a_malformed_cluster_address_is_refused_before_any_work(adult_bundle):
    with pytest.raises(OptionsError, match="tcp://HOST:PORT"):
        audit(adult_bundle, OPTIONS, cluster="localhost:8786")


def test_an_unreachable_scheduler_is_one_line_and_exit_2_within_seconds(adult_bundle):
    # ClusterError: 503 cluster_unavailable through serve (the last test), exit 2 with one line here.
    for address, expected in ((f"tcp://127.0.0.1:{free_port()}", "cannot reach the Dask scheduler"),):
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mia_robustness.cli",
                "audit",
                str(adult_bundle),
                "--cluster",
                address,
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and expected in done.stderr
        assert "Traceback" not in done.stderr
        assert time.perf_counter() - started < 30


def test_without_a_cluster_dask_is_never_imported(adult_bundle):
    script = (
        "import sys, mia_robustness as m; "
        f"m.audit({str(adult_bundle)!r}, {{'attack_models': 'threshold', 'repeats': '1', 'proportions': '1'}}, "
        "sandbox=False); "
        "print(sorted(n for n in sys.modules if n.split('.')[0] in ('dask', 'distributed')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_errors_cross_from_workers_and_to_servers_with_their_code_and_status():
    # A worker's error reaches the audit pickled (Dask ships exceptions so): class, code and text kept.
    refit = pickle.loads(pickle.dumps(ModelError("retraining failed (ValueError)", code="refit_failed")))
    assert type(refit) is ModelError and refit.code == "refit_failed" and refit.http_status == 400
    # serve's audit child sends an error by class name: an unreachable cluster stays a 503 there.
    assert error_class("ClusterError") is ClusterError and ClusterError.http_status == 503


def test_a_cluster_that_loses_every_worker_mid_map_is_a_cluster_error_not_a_hang():
    """Dask keeps the tasks of a cluster with no workers waiting for one; the audit says the cluster went
    away within its workers' wait (WORKERS_SECONDS) instead."""
    from mia_robustness.executor import WORKERS_SECONDS

    with loopback_cluster(workers=1) as running:
        executor = open_executor(running.address, 1)
        try:
            killer = threading.Timer(
                1.5, lambda: [os.kill(pid, signal.SIGKILL) for pid in running.worker_pids]
            )
            killer.start()
            started = time.monotonic()
            with pytest.raises(ClusterError, match="lost all its workers"):
                executor.map(time.sleep, [4.0, 4.0])
            assert time.monotonic() - started < WORKERS_SECONDS + 10
            killer.join()
        finally:
            executor.close()


# ---- robustness: a killed audit, a time limit, a task's own error ---------------------------------------

# Reference fits that take seconds each: an MLP fitted briefly, saved with a long max_iter that its recipe's
# refits run in full (tol 0, no early stop), so an audit is surely mid-fit when it is killed or times out.
# A refit that takes far longer than the tests' limits: the model's own iteration knobs are capped at the
# fitted model's (the refit gate), so the slow part is a named reference_recipe, whose sizes are not capped.
SLOW_OPTIONS = {
    "attack_models": "threshold,lira",
    "repeats": "1",
    "proportions": "1",
    "reference_models": "8",
    "what_if": "false",
    "reference_recipe": {
        "estimator": "MLPClassifier",
        "params": {"hidden_layer_sizes": [256], "max_iter": 100_000, "tol": 0, "n_iter_no_change": 10**6},
    },
}


@pytest.fixture(scope="module")
def slow_refit_bundle(tmp_path_factory):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    # Number columns only, so the reference recipe (a bare MLP) takes the bundle's columns as they are.
    frame = adult_frame(600, seed=3)[[*ADULT_NUMBER_COLUMNS, "income"]]
    model = make_pipeline(
        StandardScaler(), MLPClassifier(hidden_layer_sizes=(32,), max_iter=20, random_state=0)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model, members, non_members = split_fit(frame, model, label="income")
    return write_bundle(tmp_path_factory.mktemp("slow"), model, members, non_members)


def _sandbox_children(worker_pids, *, spares: bool = False) -> list[int]:
    """The sandboxed model children (``python -I -m mia_robustness.sandbox.child``) under the workers: those
    confined with a model, or with ``spares`` those waiting for an audit."""
    found = []
    for pid in worker_pids:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(psutil.Error, OSError):
                    if "mia_robustness.sandbox.child" in child.cmdline() and _confined(child) != spares:
                        found.append(child.pid)
    return found


def _wait_until(condition, limit: float, step: float = 0.1) -> float | None:
    """Seconds until ``condition()`` held, polled every ``step``; ``None`` if not within ``limit``."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    return None


def test_a_killed_audit_leaves_no_sandboxed_children_on_the_workers(slow_refit_bundle, cluster):
    """kill -9 of the auditing process mid reference stage: the scheduler forgets the audit's payload as
    its connection closes, and each worker's watcher kills the audit's children within WATCH_SECONDS and
    one answer from the scheduler (allowed here: 10 s, on a loaded 2-core machine)."""
    from mia_robustness.sandbox.cluster import WATCH_SECONDS

    script = (
        "import mia_robustness as m\n"
        "def progress(stage, done, total):\n"
        "    print(stage, done, total, flush=True)\n"
        f"m.audit({str(slow_refit_bundle)!r}, {SLOW_OPTIONS!r}, cluster={cluster.address!r}, "
        "progress=progress)\n"
    )
    stages: list[str] = []
    auditing = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    reader = threading.Thread(
        target=lambda: [stages.append(line.split()[0]) for line in auditing.stdout], daemon=True
    )
    reader.start()
    try:
        # Mid-stage: the cells are done, the reference fits are running in a child on every worker.
        started = _wait_until(
            lambda: "reference_models" in stages and len(_sandbox_children(cluster.worker_pids)) == 2, 120
        )
        assert started is not None, (stages[-5:], auditing.poll())
        assert auditing.poll() is None
        os.kill(auditing.pid, signal.SIGKILL)
        auditing.wait()
        gone = _wait_until(lambda: not _sandbox_children(cluster.worker_pids), 10.0 * WATCH_SECONDS)
        assert gone is not None, _sandbox_children(cluster.worker_pids)
    finally:
        with contextlib.suppress(ProcessLookupError):
            auditing.kill()
        auditing.wait()


def test_a_cluster_audit_stops_at_its_time_limit_and_stops_the_workers_children(slow_refit_bundle, cluster):
    """The wait for the workers checks the limit as it polls (a refit here takes far longer than the
    limit): the audit's own time-limit error within the limit and a margin of 8 s (cancelling, stopping
    the children and closing the client, on a loaded 2-core machine), and no child left behind."""
    limit, margin = 15.0, 8.0
    started = time.monotonic()
    with pytest.raises(TimeLimitError) as raised:
        audit(slow_refit_bundle, SLOW_OPTIONS, cluster=cluster.address, timeout=limit)
    took = time.monotonic() - started
    assert raised.value.code == "audit_timeout" and "time limit of 15 s" in raised.value.message
    assert limit <= took < limit + margin, took
    assert _wait_until(lambda: not _sandbox_children(cluster.worker_pids), 5.0) is not None


def test_a_tasks_own_oserror_is_raised_as_in_process_not_as_a_lost_cluster(cluster):
    """An OSError that a task raised (a missing file here) is that task's error, as the thread pool raises
    it: same class and text, no worker traceback; only a lost connection is a ClusterError."""
    missing = "/nonexistent/mia-robustness-test"
    with pytest.raises(FileNotFoundError) as in_process:
        open_executor(None, 1).map(os.stat, [missing])
    executor = open_executor(cluster.address, 1)
    try:
        with pytest.raises(FileNotFoundError) as on_cluster:
            executor.map(os.stat, [missing, missing])
    finally:
        executor.close()
    assert str(on_cluster.value) == str(in_process.value)
    assert not isinstance(on_cluster.value, ClusterError)
    frames = [frame.filename for frame in traceback.extract_tb(on_cluster.value.__traceback__)]
    assert not any("distributed" in name or "worker" in name for name in frames), frames


def test_the_wait_for_the_workers_stops_at_the_deadline_not_when_a_task_ends(cluster):
    """A task that outlives the deadline (a sleep on the worker here, which no child limit stops): the
    executor's poll loop raises the audit's time-limit error within a poll of the limit (allowed: 1.5 s)."""
    from mia_robustness.deadline import Deadline

    executor = open_executor(cluster.address, 1, deadline=Deadline(1.5))
    try:
        started = time.monotonic()
        with pytest.raises(TimeLimitError):
            executor.map(time.sleep, [6.0])
        assert time.monotonic() - started < 1.5 + 1.5
    finally:
        executor.close()
