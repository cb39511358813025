"""executor.PipeExecutor with real helper processes (``serve_units`` in children of a forkserver, as the
server starts them): the sweep gives the same figures as on one thread, every helper and this process run
units, a helper that dies costs no unit, and a unit's error reaches the caller as its own class."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import time
import traceback

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

import mia_robustness.engine as engine
from builders import CHEAPEST, adult_frame, attack_data, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.errors import DataError, LimitError
from mia_robustness.executor import PipeExecutor, ThreadExecutor, serve_units
from mia_robustness.sweep import run_sweep


@pytest.fixture(scope="module")
def context():
    found = multiprocessing.get_context("forkserver")
    found.set_forkserver_preload(["mia_robustness.sweep", "torch"])
    yield found
    # The forkserver and its resource tracker would otherwise outlive the module as this process's
    # children (test_overlap checks that an audit leaves none). multiprocessing's own tests stop them so.
    multiprocessing.forkserver._forkserver._stop()
    multiprocessing.resource_tracker._resource_tracker._stop()


class Helpers:
    """``count`` helper processes and the audit's ends of their pipes; stopped at the end."""

    def __init__(self, context, count: int) -> None:
        self.ends, self.processes = [], []
        for _ in range(count):
            mine, theirs = context.Pipe(duplex=True)
            process = context.Process(target=serve_units, args=(theirs,))
            process.start()
            theirs.close()
            self.ends.append(mine)
            self.processes.append(process)

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, *exc_info) -> None:
        for end in self.ends:
            end.close()
        for process in self.processes:
            process.join(10)
            if process.exitcode is None:
                process.kill()
                process.join()


def where_it_ran(job: int, offset: int) -> tuple[int, int]:
    time.sleep(0.02)  # long enough that no runner takes every unit before the others have started
    return job + offset, os.getpid()


def fails_in_a_helper(job: int, parent: int) -> int:
    time.sleep(0.02)
    if os.getpid() != parent:
        raise DataError(f"unit {job} refused in a helper", code="test_refusal")
    return job


def _deep_inside_a_cell(job: int) -> None:
    raise ValueError(f"unit {job} broke")


def breaks_in_a_helper(job: int, parent: int) -> int:
    time.sleep(0.02)
    if os.getpid() != parent:
        _deep_inside_a_cell(job)
    return job


class TwoPartError(Exception):
    """An error whose constructor does not take its ``args`` back: pickled, it does not unpickle."""

    def __init__(self, part: int, whole: int) -> None:
        super().__init__(f"part {part} of {whole}")


def raises_what_does_not_unpickle(job: int, parent: int) -> int:
    time.sleep(0.02)
    if os.getpid() != parent:
        raise TwoPartError(job, 20)
    return job


def test_the_sweep_on_helpers_gives_the_figures_of_one_thread(context):
    inputs, is_member = attack_data(150, shift=1.5)
    plan = {
        "proportions": [0.5, 1.0],
        "attacks": ["threshold", "rf", "nn", "gb"],
        "repeats": 1,
        "eval_fraction": 0.3,
        "seed": 4,
    }
    alone = run_sweep(inputs, is_member, device="cpu", executor=ThreadExecutor(1), **plan)
    with Helpers(context, 2) as helpers:
        executor = PipeExecutor(helpers.ends)
        spread = run_sweep(inputs, is_member, device="cpu", executor=executor, **plan)
    assert len(spread) == len(alone) == 8
    for a, b in zip(alone, spread, strict=True):
        assert (a.attack, a.proportion, a.repeat, a.metrics) == (b.attack, b.proportion, b.repeat, b.metrics)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_every_helper_and_this_process_run_units_and_results_keep_the_jobs_order(context):
    with Helpers(context, 2) as helpers:
        executor = PipeExecutor(helpers.ends)
        offset = executor.share(100)
        done = []
        results = executor.map(
            where_it_ran,
            list(range(60)),
            shared=[offset],
            order=list(reversed(range(60))),
            on_done=done.append,
        )
        pids = {process.pid for process in helpers.processes}
    assert [value for value, _ in results] == [job + 100 for job in range(60)]
    assert done == list(range(1, 61))
    assert {pid for _, pid in results} == pids | {os.getpid()}


def test_a_helper_that_died_costs_no_unit(context):
    with Helpers(context, 1) as helpers:
        os.kill(helpers.processes[0].pid, signal.SIGKILL)
        helpers.processes[0].join(10)
        executor = PipeExecutor(helpers.ends)
        results = executor.map(where_it_ran, list(range(8)), shared=[executor.share(1)])
    assert results == [(job + 1, os.getpid()) for job in range(8)]


def test_a_units_error_in_a_helper_is_raised_as_its_own_class(context):
    with Helpers(context, 1) as helpers:
        executor = PipeExecutor(helpers.ends)
        with pytest.raises(DataError, match=r"unit \d+ refused in a helper") as raised:
            executor.map(fails_in_a_helper, list(range(20)), shared=[os.getpid()])
    assert raised.value.code == "test_refusal"


def test_a_units_unexpected_error_in_a_helper_keeps_the_helpers_traceback(context):
    """What the server logs for an audit that failed unexpectedly is its traceback: for a unit that ran
    in a helper, that names the code that raised there, not only the executor's re-raise."""
    with Helpers(context, 1) as helpers:
        executor = PipeExecutor(helpers.ends)
        with pytest.raises(ValueError, match=r"unit \d+ broke") as raised:
            executor.map(breaks_in_a_helper, list(range(20)), shared=[os.getpid()])
    assert "_deep_inside_a_cell" in "".join(traceback.format_exception(raised.value))


def test_a_units_error_that_does_not_unpickle_is_named_not_replaced_by_a_type_error(context):
    with Helpers(context, 1) as helpers:
        executor = PipeExecutor(helpers.ends)
        with pytest.raises(RuntimeError, match=r"TwoPartError in a sweep helper: part \d+ of 20") as raised:
            executor.map(raises_what_does_not_unpickle, list(range(20)), shared=[os.getpid()])
    assert "raises_what_does_not_unpickle" in "".join(traceback.format_exception(raised.value))


def test_the_memory_estimate_counts_the_audits_helpers(context, tmp_path, monkeypatch):
    """An audit given helpers has them in its memory estimate (each holds its own copy of the signals), and
    a limit the same audit would pass without them refuses it."""
    adult = adult_frame(600, seed=2)
    frame = adult.select_dtypes("number").assign(income=adult["income"])
    forest = RandomForestClassifier(n_estimators=5, random_state=0)
    model, members, non_members = split_fit(frame, forest, label="income")
    bundle = write_bundle(tmp_path, model, members, non_members, config={"label_column": "income"})
    calls = []
    real_estimate = engine.estimate_peak_memory_mb

    def estimate(*args, **kwargs):
        calls.append((args, kwargs))
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(engine, "estimate_peak_memory_mb", estimate)
    with Helpers(context, 2) as helpers:
        audit(bundle, CHEAPEST, workers=1, max_memory_mb=10**6, helpers=helpers.ends, sandbox=False)
        args, kwargs = calls[0]
        assert kwargs["helpers"] == 2
        with_helpers, without = (
            real_estimate(*args, **kwargs),
            real_estimate(*args, **{**kwargs, "helpers": 0}),
        )
        assert with_helpers > without + 2 * engine.HELPER_MB
        with pytest.raises(LimitError, match="memory"):
            limit = (with_helpers + without) / 2
            audit(bundle, CHEAPEST, workers=1, max_memory_mb=limit, helpers=helpers.ends, sandbox=False)
