"""The audit's overlap (overlap.py): the sweep beside the model stage's fits gives today's report, and an
error or the time limit on either side stops the audit as the sequence did, leaving no thread or child.

Real audits of the overfit tree (few distinct signal rows: a one-thread sweep, where the overlap pays),
in this process and through the sandbox; ``overlap.FORCE_OVERLAP`` turns the overlap on or off.
"""

from __future__ import annotations

import io
import json
import re
import sys
import threading
import time

import psutil
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_info

from builders import noisy_numeric_frame, split_fit, write_bundle
from mia_robustness import audit, audit_estimator, executor, overlap
from mia_robustness.cli import Progress
from mia_robustness.deadline import Cancelled, Deadline
from mia_robustness.errors import DataError, MiaError, ModelError, TimeLimitError
from mia_robustness.serving.progress import ProgressLog

# Every stage that follows the sweep: lira / rmia's reference fits, then the what-if's (asked for).
FULL = {
    "attack_models": "threshold,rf,gb,lira,rmia",
    "repeats": 2,
    "proportions": "0.5,1",
    "reference_models": 4,
    "what_if": True,
}
# A recipe the refit gate admits and scikit-learn refuses only when it fits (max_depth must be >= 1).
# Passes the class's parameter checks (made before the audit starts) and fails in fit: the rows are no
# square kernel matrix.
FAILING_RECIPE = {"estimator": "SVC", "params": {"kernel": "precomputed", "probability": True}}


def _report_text(report) -> str:
    data = report.to_dict()
    timings = data.pop("timings")
    # the stages in the sequence's order whichever ended first
    assert list(timings)[:3] == ["loading", "target_scoring", "signals"]
    return json.dumps(data)  # key order kept: warnings, notes and decisions in the same order


def _leftovers() -> tuple[list[str], list[int]]:
    """The overlap's threads still alive and this process's children still running."""
    threads = [t.name for t in threading.enumerate() if t.name == "mia-model-stage"]
    children = [
        c.pid for c in psutil.Process().children(recursive=True) if c.status() != psutil.STATUS_ZOMBIE
    ]
    return threads, children


@pytest.fixture
def overlap_on(monkeypatch):
    monkeypatch.setattr(overlap, "FORCE_OVERLAP", True)


def _both_ways(monkeypatch, run):
    monkeypatch.setattr(overlap, "FORCE_OVERLAP", False)
    sequence = run()
    monkeypatch.setattr(overlap, "FORCE_OVERLAP", True)
    return sequence, run()


def test_in_process_report_is_the_sequence_report(overfit_tree_data, monkeypatch):
    model, members, non_members = overfit_tree_data
    sequence, overlapped = _both_ways(
        monkeypatch, lambda: audit_estimator(model, members, non_members, **FULL)
    )
    assert overlapped.remediation.status == "ran" and "reference_attacks" in overlapped.timings
    assert _report_text(overlapped) == _report_text(sequence)
    assert list(overlapped.timings) == list(sequence.timings)


def test_sandboxed_report_is_the_sequence_report(tmp_path, overfit_tree_data, monkeypatch):
    model, members, non_members = overfit_tree_data
    bundle = write_bundle(tmp_path, model, members, non_members)
    sequence, overlapped = _both_ways(monkeypatch, lambda: audit(bundle, FULL | {"repeats": 1}, workers=2))
    assert _report_text(overlapped) == _report_text(sequence)
    assert _leftovers() == ([], [])


def _stage_threads(run) -> dict[str, set[str]]:
    """The threads each stage reported its progress from, in ``run(progress)``."""
    seen: dict[str, set[str]] = {}

    def progress(stage, done, total):
        seen.setdefault(stage, set()).add(threading.current_thread().name)

    run(progress)
    return seen


def test_the_rule_overlaps_a_one_thread_sweep_in_process_and_in_the_sandbox(
    overfit_tree_data, tmp_path, monkeypatch
):
    """No switch: with few distinct signal rows the sweep runs on one thread, and the fits run beside it
    (their progress comes from the background thread that owns the model stage), in-process or sandboxed,
    whatever the workers; the same report."""
    monkeypatch.setattr(overlap, "default_workers", lambda: 2)
    model, members, non_members = overfit_tree_data
    options = FULL | {"repeats": 1}
    bundle = write_bundle(tmp_path, model, members, non_members)
    reports = []
    for run in (
        lambda progress: reports.append(audit(bundle, options, progress=progress, workers=1)),
        lambda progress: reports.append(audit(bundle, options, progress=progress, workers=2)),
        lambda progress: reports.append(
            audit_estimator(model, members, non_members, progress=progress, workers=2, **options)
        ),
    ):
        threads = _stage_threads(run)
        assert threads["reference_models"] == {"mia-model-stage"} and threads["attacks"] == {"MainThread"}
    assert reports[0].results == reports[1].results == reports[2].results
    assert reports[0].remediation == reports[2].remediation


def test_the_rule_keeps_a_sweep_on_several_threads_in_sequence_unless_the_sandbox_has_a_core(
    tmp_path, monkeypatch
):
    """A logistic regression's signals are all distinct (4,200 rows): the sweep takes the workers' threads.
    In-process its threads and the fits' would share one GIL, and in the sandbox 2 + 2 threads do not fit
    in 2 CPUs: both run in sequence. A sandboxed audit on one worker overlaps (1 + 1 threads)."""
    monkeypatch.setattr(overlap, "default_workers", lambda: 2)
    model, members, non_members = split_fit(noisy_numeric_frame(4200, seed=2), LogisticRegression())
    options = FULL | {"repeats": 1}
    bundle = write_bundle(tmp_path, model, members, non_members)
    in_process = _stage_threads(
        lambda progress: audit_estimator(model, members, non_members, progress=progress, workers=2, **options)
    )
    assert set().union(*in_process.values()) == {"MainThread"}
    sandboxed = _stage_threads(lambda progress: audit(bundle, options, progress=progress, workers=2))
    assert set().union(*sandboxed.values()) == {"MainThread"}
    one_worker = _stage_threads(lambda progress: audit(bundle, options, progress=progress, workers=1))
    assert one_worker["reference_models"] == {"mia-model-stage"}


@pytest.mark.parametrize("sandboxed", [False, True])
def test_reference_error_during_the_sweep_surfaces_with_its_code(
    tmp_path, overfit_tree_data, monkeypatch, sandboxed
):
    model, members, non_members = overfit_tree_data
    options = FULL | {"attack_models": "threshold,rf,gb,nn,lira", "reference_recipe": FAILING_RECIPE}
    if sandboxed:
        bundle = write_bundle(tmp_path, model, members, non_members)
        run = lambda progress: audit(bundle, options, workers=2, progress=progress)  # noqa: E731
    else:
        run = lambda progress: audit_estimator(  # noqa: E731
            model, members, non_members, workers=2, progress=progress, **options
        )
    errors, swept = [], []
    for force in (False, True):
        monkeypatch.setattr(overlap, "FORCE_OVERLAP", force)
        calls = []
        with pytest.raises(MiaError) as caught:
            run(lambda stage, done, total, calls=calls: calls.append((stage, done, total)))
        errors.append((type(caught.value), caught.value.code, str(caught.value)))
        swept.append([done == total for stage, done, total in calls if stage == "attacks"])
        assert _leftovers() == ([], [])
    assert errors[0] == errors[1], errors  # the same class, code and message as in sequence
    assert errors[1][:2] == (ModelError, "refit_failed") and "reference_recipe" in errors[1][2]
    assert swept[0][-1]  # in sequence the sweep ended before the reference stage began
    assert not any(swept[1])  # overlapped, the failure stopped the sweep before its end


def test_time_limit_stops_an_overlapped_audit(tmp_path, overlap_on):
    """A forest whose 16 reference fits and nn cells take well past the limit: the audit stops at it, during
    a stage of the overlap, with no thread or child left."""
    model, members, non_members = split_fit(
        noisy_numeric_frame(6000, seed=2), RandomForestClassifier(n_estimators=60, random_state=0)
    )
    bundle = write_bundle(tmp_path, model, members, non_members)
    options = FULL | {"attack_models": "threshold,rf,gb,nn,lira", "repeats": 3, "reference_models": 16}
    started = time.monotonic()
    with pytest.raises(TimeLimitError) as caught:
        audit(bundle, options, workers=2, timeout=8)
    assert time.monotonic() - started < 8 + 6  # stopped at the limit, the child killed, not run to the end
    assert caught.value.code == "audit_timeout" and "time limit of 8 s" in str(caught.value)
    assert re.search(r"during (attacks|reference models|reference attacks|what if);", str(caught.value))
    assert _leftovers() == ([], [])


def test_both_sides_failing_raise_the_sweep_error_as_the_sequence_would():
    """run_beside on its own: the sweep's error wins; a model-side error cancels the sweep's next check."""
    deadline = Deadline(None)

    def sweep_fails():
        time.sleep(0.2)  # the model side fails first
        raise DataError("the sweep's own error", code="too_few_rows")

    def model_fails():
        raise ModelError("the model side's error", code="model_failed")

    with pytest.raises(DataError):
        overlap.run_beside(sweep_fails, model_fails, deadline)

    deadline = Deadline(None)
    checks = []

    def sweep_checks():
        while True:
            checks.append(1)
            deadline.check("attacks")
            time.sleep(0.01)

    with pytest.raises(ModelError, match="model side"):
        overlap.run_beside(sweep_checks, model_fails, deadline)
    with pytest.raises(Cancelled):
        deadline.check()
    assert _leftovers()[0] == []


def test_each_thread_names_its_own_stage_in_a_time_limit_error():
    deadline = Deadline(0)
    deadline.stage = "attacks"
    other = threading.Thread(target=lambda: setattr(deadline, "stage", "reference_models"))
    other.start()
    other.join()
    assert "during attacks" in str(deadline.error())


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_cli_bars_of_two_stages_at_once_share_one_line_and_each_ends_on_its_own():
    stream = Terminal()
    printer = Progress(stream)
    printer("reference_models", 0, 4, note="4 fits of the target's recipe")
    for done in range(1, 7):
        printer("attacks", done, 6)
        if done <= 4:
            printer("reference_models", done, 4)
    printer("reference_attacks", 1, 1)
    # what the terminal shows: each \r starts the line over, \x1b[K clears the rest
    shown = [segment.split("\r")[-1].replace("\x1b[K", "") for segment in stream.getvalue().split("\n")]
    assert shown[0] == "reference models: 4 fits of the target's recipe"
    # while both run, both bars are on the line
    assert re.search(r"\rreference models \[#+\.+\] 3/4 \| attacks \[#+\.+\] 3/6 +[\d.]+s", stream.getvalue())
    assert re.fullmatch(r"reference models \[#{30}\] 4/4 +[\d.]+s", shown[1]), shown
    assert re.fullmatch(r"attacks \[#{30}\] 6/6 +[\d.]+s", shown[2]), shown
    assert re.fullmatch(r"\[ +[\d.]+s\] reference attacks done", shown[3]), shown
    assert shown[4] == ""  # nothing left running: no bar after the last line


def test_log_lines_of_interleaved_stages_are_thinned_per_stage():
    lines: list[str] = []
    log = ProgressLog(lines.append, interval=60.0)
    for done in range(1, 41):
        log("attacks", done, 40)
        if done % 10 == 0:
            log("reference_models", done // 10, 4)
    assert lines == [
        "progress attacks 1/40",
        "progress reference_models 1/4",
        "progress attacks 40/40",
        "progress reference_models 4/4",
    ]


def test_an_overlapped_audit_in_process_leaves_the_thread_limits_as_they_were(overfit_tree_data, overlap_on):
    """The sweep and the fits each limit BLAS / OpenMP to one thread (threadpool_limits, process-wide for
    BLAS) and put back what they found: side by side, the side that entered second found the other's limit
    and, leaving last, put it back for good (found in review: OpenBLAS 2 -> 1 thread after an in-process
    audit on 2 cores, and the limit of the side still running lifted while it ran)."""
    model, members, non_members = overfit_tree_data

    def limits() -> dict[str, int]:
        return {info["filepath"]: info["num_threads"] for info in threadpool_info()}

    before = limits()
    audit_estimator(
        model,
        members,
        non_members,
        attack_models="threshold,lira",
        reference_models=2,
        what_if=True,
        workers=2,
    )
    after = limits()
    assert {path: after[path] for path in before} == before


def test_a_thread_starting_while_torch_is_being_imported_waits_for_it(tmp_path, monkeypatch):
    """Side by side in-process, the sweep imports torch (its one-thread limits) while the fits' threads start:
    single_threaded_worker found the half-imported module in sys.modules and called its set_num_threads,
    and the audit failed with BrokenThreadPool ("partially initialized module 'torch'", found in review:
    test_an_overlapped_audit_in_process_leaves_the_thread_limits_as_they_were, run alone). Here a stand-in
    torch whose import takes 0.5 s, imported by another thread."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(
        "import time\ntime.sleep(0.5)\nthreads = []\ndef set_num_threads(n):\n    threads.append(n)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    importing = threading.Thread(target=lambda: __import__("torch"))
    importing.start()
    while "torch" not in sys.modules:
        time.sleep(0.001)
    failures = []

    def worker_start() -> None:  # in a thread of its own: OpenMP's limit is per thread
        try:
            executor.single_threaded_worker()
        except Exception as exc:  # noqa: BLE001 - what the pool's initializer would have raised
            failures.append(exc)

    starting = threading.Thread(target=worker_start)
    starting.start()
    starting.join()
    importing.join()
    assert failures == []
    assert sys.modules["torch"].threads == [1]
