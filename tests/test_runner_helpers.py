"""serving.runner.AuditRunner's sweep helpers, in this process with a real forkserver (no HTTP): the CPUs
an audit holds for its threads and helpers are given back on every path, however far its start got."""

from __future__ import annotations

import errno
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import resource
import time

import pytest

from mia_robustness.errors import MiaError, ShuttingDownError
from mia_robustness.serving.runner import AuditRunner
from mia_robustness.serving.settings import ServerSettings

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs Linux (/proc)")


@pytest.fixture()
def runner():
    # 4 CPUs, 2 audits at a time: an audit alone has 2 threads and 2 helpers.
    runner = AuditRunner(ServerSettings(workers=2, threads=6, cpus=4, max_helpers=3, timeout=120))
    yield runner
    runner.shutdown()
    # The forkserver and its resource tracker would otherwise outlive the module as this process's
    # children (test_overlap checks that an audit leaves none).
    multiprocessing.forkserver._forkserver._stop()
    multiprocessing.resource_tracker._resource_tracker._stop()


def test_an_audit_refused_at_shutdown_gives_back_no_cpu_it_did_not_take(runner, tmp_path):
    """The server began shutting down between the audit's admission and its start: it never took CPUs,
    so it gives none back (the count went negative)."""
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"not an archive")
    runner.shutdown()
    with pytest.raises(ShuttingDownError):
        runner._run_child("r-1", archive, {}, "json", tmp_path, time.monotonic() + 60)
    assert runner._cpus_in_use == 0


def test_a_start_that_fails_at_any_step_gives_back_every_cpu_and_leaves_no_process(runner, tmp_path):
    """Starting an audit takes file descriptors at each step (its pipes, then each helper's pipe and its
    start through the forkserver): with the limit raised one descriptor at a time, the start fails at each
    step in turn. After each failure no CPU stays counted and no helper is left. (The scan ends at the
    first helper start that the forkserver itself cannot finish: CPython's forkserver exits when a client
    hangs up before sending its descriptors, so later starts fail another way.)"""
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"not an archive")
    multiprocessing.forkserver.ensure_running()  # its descriptors are its own: only this process runs short
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    failures = 0
    for spare in range(100):
        open_now = len(os.listdir("/proc/self/fd"))
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + spare, hard))
        try:
            runner.run(f"r-{spare}", archive, {}, "json", tmp_path)
        except OSError as error:
            failures += 1
            forkserver_gone = error.errno != errno.EMFILE  # ECONNREFUSED: it is gone already
        except (EOFError, MiaError):  # the forkserver hung up mid-start, or the audit ran and refused
            forkserver_gone = True
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert (runner._cpus_in_use, runner._children) == (0, set()), f"{spare} spare descriptors"
        if forkserver_gone:
            break
    assert failures >= 4  # the audit's own pipes, then the first helper's: the start failed past them
