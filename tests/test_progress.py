"""Progress as a user sees it: the reference stage says what it will do, what it will cost, and the time left.

The estimate rules are checked on FitPace directly (a clock given by hand); the flow is checked on real
audits of an overfit tree, in this process and through the sandbox, and through the CLI's printer.
"""

from __future__ import annotations

import io
import re

import pytest

from builders import write_bundle
from mia_robustness import audit, audit_estimator
from mia_robustness.cli import Progress
from mia_robustness.reference import FitPace, ReferenceRequest
from mia_robustness.serving.child import Progress as ChildProgress
from mia_robustness.serving.child import ProgressSender
from mia_robustness.serving.progress import ProgressLog

REFERENCE = {"attack_models": "threshold,lira", "repeats": "3", "proportions": "1", "reference_models": "4"}


def _request(n_models: int = 4, repeats: int = 3, workers: int = 2) -> ReferenceRequest:
    return ReferenceRequest(
        attacks=("lira",),
        proportion=1.0,
        repeats=repeats,
        eval_fraction=0.3,
        n_models=n_models,
        seed=0,
        workers=workers,
    )


def test_fit_pace_estimates_from_the_first_fit_and_the_rounds_of_side_by_side_fits():
    pace = FitPace(_request(), started=100.0)
    assert (pace.fits, pace.at_once, pace.rounds) == (12, 2, 6)
    assert pace.plan().startswith(
        "12 fits of the target's recipe (4 reference models x 3 repeats, 2 at a time)"
    )
    # two fits run side by side: the first one to finish took 10 s, so 6 rounds take about 60 s
    assert pace.estimate(1, 110.0) == (60.0, 50.0)
    assert pace.note(1, 110.0) == "about 60 s in all (12 fits of the target's recipe), 50 s left"
    # the second fit of the round arrives with the first: still one round done
    assert pace.estimate(2, 110.1) == pytest.approx((60.6, 50.5))
    # the third ends the second round; a slower round raises the estimate
    assert pace.estimate(3, 124.0) == (72.0, 48.0)
    assert pace.note(3, 124.0) == "about 50 s left"
    # a repeat's rounds are counted per repeat: 5 fits = one repeat (2 rounds) + one fit (1 round)
    assert pace.rounds_done(4) == 2 and pace.rounds_done(5) == 3 and pace.rounds_done(12) == 6
    assert pace.note(12, 160.0) == ""  # nothing left to estimate
    one_worker = FitPace(_request(n_models=4, repeats=1, workers=1), started=0.0)
    assert one_worker.rounds == 4 and one_worker.estimate(1, 3.0) == (12.0, 9.0)
    assert FitPace(_request(workers=16), started=0.0).at_once == 4  # never more than a repeat's models


def test_fit_pace_of_one_set_shared_by_every_repeat():
    pace = FitPace(_request(), started=0.0, fit_sets=1)
    assert (pace.fits, pace.rounds) == (4, 2)
    assert pace.plan().startswith(
        "4 fits of the target's recipe (4 reference models shared by 3 repeats, 2 at a time)"
    )
    assert pace.estimate(1, 5.0) == (10.0, 5.0) and pace.note(4, 12.0) == ""


class Recorder:
    """A progress callback that takes the engine's notes and keeps every call."""

    accepts_notes = True

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, str]] = []

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        self.calls.append((stage, done, total, note))


def _check_reference_flow(calls: list[tuple[str, int, int, str]], fits: int) -> None:
    steps = [(done, total, note) for stage, done, total, note in calls if stage == "reference_models"]
    # every count from 0 to the last once, in order: no silence before the first fit, no skipped value
    assert [done for done, _, _ in steps] == list(range(fits + 1))
    assert {total for _, total, _ in steps} == {fits}
    assert steps[0][2].startswith(f"{fits} fits of the target's recipe")
    assert re.fullmatch(
        rf"about \d+ (s|min) in all \({fits} fits of the target's recipe\), \d+ (s|min) left", steps[1][2]
    ), steps[1][2]
    assert all(re.fullmatch(r"about \d+ (s|min) left", note) for _, _, note in steps[2:-1]), steps
    assert steps[-1][2] == ""
    stages = list(dict.fromkeys(stage for stage, *_ in calls))
    assert stages.index("reference_models") < stages.index("reference_attacks")


def test_in_process_audit_reports_every_fit_with_the_plan_the_cost_and_the_time_left(overfit_tree_data):
    model, members, non_members = overfit_tree_data
    recorder = Recorder()
    audit_estimator(model, members, non_members, progress=recorder, **REFERENCE)
    _check_reference_flow(recorder.calls, fits=4)  # one set of 4 models serves the 3 repeats


class Pipe:
    """The sending end of the serve child's pipe, keeping what is sent."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def send(self, message: object) -> None:
        self.sent.append(message)


def test_serve_child_sends_the_same_flow_as_typed_messages(overfit_tree_data):
    """The serve child's callback takes the notes and sends each call as one Progress message."""
    model, members, non_members = overfit_tree_data
    pipe = Pipe()
    audit_estimator(model, members, non_members, progress=ProgressSender(pipe), **REFERENCE)
    assert pipe.sent and all(type(message) is ChildProgress for message in pipe.sent)
    _check_reference_flow([(m.stage, m.done, m.total, m.note) for m in pipe.sent], fits=4)


def test_sandboxed_audit_reports_the_same_flow_and_a_plain_callback_still_works(tmp_path, overfit_tree_data):
    model, members, non_members = overfit_tree_data
    bundle = write_bundle(tmp_path, model, members, non_members)
    recorder = Recorder()
    audit(bundle, REFERENCE | {"repeats": "1"}, progress=recorder)
    _check_reference_flow(recorder.calls, fits=4)
    plain: list[tuple[str, int, int]] = []
    audit(
        bundle,
        REFERENCE | {"repeats": "1"},
        progress=lambda stage, done, total: plain.append((stage, done, total)),
    )
    assert [done for stage, done, _ in plain if stage == "reference_models"] == [0, 1, 2, 3, 4]


def test_cli_printer_writes_every_fit_with_its_note_and_a_tenth_of_a_long_stage():
    stream = io.StringIO()
    printer = Progress(stream)
    assert not printer.tty
    printer("reference_models", 0, 12, note="12 fits of the target's recipe (...)")
    for done in range(1, 13):
        printer("reference_models", done, 12, note="about 5 s left" if done < 12 else "")
    for done in range(1, 151):
        printer("attacks", done, 150)
    lines = stream.getvalue().splitlines()
    fits = [line for line in lines if "reference models" in line]
    assert [re.search(r"(\d+)/12", line).group(1) for line in fits] == [str(i) for i in range(13)]
    assert fits[0].endswith("reference models 0/12: 12 fits of the target's recipe (...)")
    assert fits[5].endswith("reference models 5/12: about 5 s left") and fits[-1].endswith("12/12")
    counted = [line.split()[-1] for line in lines if " attacks " in line]
    assert counted == ["1/150"] + [f"{15 * i}/150" for i in range(1, 11)]  # the first, then each tenth


def test_log_lines_keep_the_plan_and_the_cost_and_thin_the_rest():
    lines: list[str] = []
    log = ProgressLog(lines.append, prefix="req ", interval=60.0)
    log("reference_models", 0, 12, note="12 fits of the target's recipe")
    log("reference_models", 1, 12, note="about 60 s in all (12 fits of the target's recipe), 55 s left")
    log("reference_models", 2, 12, note="about 50 s left")
    log("reference_models", 12, 12)
    log("signals", 1, 1)
    assert lines == [
        "req progress reference_models 0/12 (12 fits of the target's recipe)",
        "req progress reference_models 1/12 (about 60 s in all (12 fits of the target's recipe), 55 s left)",
        "req progress reference_models 12/12",
        "req progress signals 1/1",
    ]
