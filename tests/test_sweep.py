"""sweep.py on plain arrays: the evaluation splits and attacker rows (deterministic, disjoint, nested) and the
run itself on synthetic signals (plan order, progress, the same figures whatever the thread count)."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings

import numpy as np
import pytest

import mia_robustness.sweep as sweep
from builders import attack_data
from mia_robustness.attacks import REGISTRY
from mia_robustness.errors import DataError
from mia_robustness.executor import side_by_side
from mia_robustness.metrics import attack_metrics
from mia_robustness.sweep import (
    MIN_ATTACK_ROWS_PER_SIDE,
    attacker_rows,
    make_split,
    plan_cells,
    run_sweep,
    split_for_repeat,
)

IS_MEMBER = np.repeat([1, 0], 400)


# ---------------------------------------------------------------- splits


def test_a_split_holds_out_the_same_share_of_each_side():
    is_member = np.r_[np.ones(100), np.zeros(60)].astype(int)
    split = make_split(is_member, 0.3, np.random.default_rng(0))
    n_eval = round(0.3 * 60)
    assert is_member[split.evaluation].sum() == n_eval and len(split.evaluation) == 2 * n_eval
    assert (np.diff(split.evaluation) > 0).all()  # sorted
    assert (is_member[split.member_pool] == 1).all() and len(split.member_pool) == 100 - n_eval
    assert (is_member[split.non_member_pool] == 0).all() and len(split.non_member_pool) == 60 - n_eval
    everything = np.concatenate([split.evaluation, split.member_pool, split.non_member_pool])
    assert sorted(everything) == list(range(160))  # each row exactly once


def test_splits_depend_on_seed_and_repeat_only():
    first = split_for_repeat(IS_MEMBER, 0.3, seed=4, repeat=0)
    again = split_for_repeat(IS_MEMBER, 0.3, seed=4, repeat=0)
    for name in ("evaluation", "member_pool", "non_member_pool"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.evaluation, split_for_repeat(IS_MEMBER, 0.3, seed=4, repeat=1).evaluation)
    assert not np.array_equal(first.evaluation, split_for_repeat(IS_MEMBER, 0.3, seed=5, repeat=0).evaluation)


def test_attacker_rows_are_balanced_nested_prefixes_of_the_pools():
    split = split_for_repeat(IS_MEMBER, 0.3, seed=0, repeat=0)
    known = {p: attacker_rows(split, p) for p in (0.1, 0.5, 1.0)}
    for proportion, rows in known.items():
        n = round(proportion * 280)  # 400 - 120 evaluated per side
        assert IS_MEMBER[rows].sum() == n and len(rows) == 2 * n
        assert not set(rows) & set(split.evaluation)
    assert set(known[0.1]) < set(known[0.5]) < set(known[1.0])


def test_too_small_a_proportion_says_how_many_rows_it_leaves():
    split = split_for_repeat(IS_MEMBER, 0.3, seed=0, repeat=0)
    attacker_rows(split, MIN_ATTACK_ROWS_PER_SIDE / 280)  # exactly the minimum
    with pytest.raises(DataError) as caught:
        attacker_rows(split, 0.01)  # 3 rows
    assert caught.value.code == "too_few_rows"
    assert "only 3 member rows" in caught.value.message and "Use larger proportions" in caught.value.message


# ---------------------------------------------------------------- the plan


def test_evaluation_rows_never_enter_attack_training():
    splits, cells = plan_cells(IS_MEMBER, [0.1, 0.5, 1.0], ["rf", "nn"], repeats=3, eval_fraction=0.3, seed=5)
    for cell in cells:
        split = splits[cell.repeat]
        assert not set(cell.train_rows) & set(split.evaluation)
        assert IS_MEMBER[cell.train_rows].sum() * 2 == len(cell.train_rows)  # balanced
    for split in splits:
        assert IS_MEMBER[split.evaluation].sum() * 2 == len(split.evaluation) == 2 * 120
    # the same evaluation rows for every proportion and attack model of a repeat, different across repeats
    assert not np.array_equal(splits[0].evaluation, splits[1].evaluation)
    # nested knowledge: a larger proportion knows every row a smaller one knows
    first = [c for c in cells if c.repeat == 0 and c.attack == "rf"]
    assert set(first[0].train_rows) <= set(first[1].train_rows) <= set(first[2].train_rows)


def test_the_plan_is_ordered_and_reproducible_with_a_seed_per_cell():
    arguments = dict(proportions=[0.5, 1.0], attacks=["threshold", "rf"], repeats=2, eval_fraction=0.3)
    _, cells = plan_cells(IS_MEMBER, seed=1, **arguments)
    assert [(c.repeat, c.proportion, c.attack) for c in cells] == [
        (r, p, a) for r in (0, 1) for p in (0.5, 1.0) for a in ("threshold", "rf")
    ]
    assert len({c.seed for c in cells}) == len(cells)
    _, again = plan_cells(IS_MEMBER, seed=1, **arguments)
    assert [c.seed for c in again] == [c.seed for c in cells]
    assert all(np.array_equal(a.train_rows, b.train_rows) for a, b in zip(again, cells, strict=True))
    _, other = plan_cells(IS_MEMBER, seed=2, **arguments)
    assert [c.seed for c in other] != [c.seed for c in cells]


# ---------------------------------------------------------------- running it


PLAN = dict(
    proportions=[0.5, 1.0], attacks=["threshold", "class_threshold"], repeats=2, eval_fraction=0.3, seed=0
)


def sweep_over(inputs, is_member, **changes):
    """run_sweep with :data:`PLAN` and ``changes``, on the CPU, one worker unless changed."""
    return run_sweep(inputs, is_member, **(PLAN | dict(device="cpu", workers=1) | changes))


def test_run_sweep_measures_every_cell_on_its_evaluation_rows_in_plan_order():
    inputs, is_member = attack_data(200, shift=1.5)
    progress = []
    results = sweep_over(inputs, is_member, progress=lambda *step: progress.append(step))
    splits, cells = plan_cells(is_member, **PLAN)
    assert [(r.attack, r.proportion, r.repeat) for r in results] == [
        (c.attack, c.proportion, c.repeat) for c in cells
    ]
    assert progress == [("attacks", done, 8) for done in range(1, 9)]
    for result, cell in zip(results, cells, strict=True):
        evaluation = splits[cell.repeat].evaluation
        assert (result.train_rows, result.eval_rows, result.device) == (len(cell.train_rows), 120, "cpu")
        assert len(result.scores) == len(evaluation)
        # the metrics are those of the scores on the evaluation rows
        truth = is_member[evaluation]
        assert result.metrics.auc == attack_metrics(truth, result.scores, result.scores > 0).auc
        assert result.metrics.auc > 0.7  # the signal is there, and the threshold attack picks it
    threshold = [r for r in results if r.attack == "threshold"]
    assert all(r.detail.startswith("confidence >= ") for r in threshold)


def test_a_progress_callback_that_raises_stops_the_sweep(monkeypatch):
    """The audit's time limit raises from the progress callback: the cells not yet started never run."""
    ran = []
    stop_raised = threading.Event()
    spec = REGISTRY["threshold"]

    def counting(*args, **kwargs):
        ran.append(1)
        if len(ran) > 1:
            # The one worker starts the next cell while the main thread reports the first: hold it until
            # the callback has raised and a moment longer, so that the cancellation (not the scheduler's
            # whim on a loaded machine) decides whether a third cell starts.
            stop_raised.wait(timeout=10)
            time.sleep(0.3)
        return spec.function(*args, **kwargs)

    monkeypatch.setitem(REGISTRY, "threshold", dataclasses.replace(spec, function=counting))

    class Stop(Exception):
        pass

    def stop(stage, done, total):
        stop_raised.set()
        raise Stop

    with pytest.raises(Stop):
        sweep_over(*attack_data(200), attacks=["threshold"], repeats=3, progress=stop)
    assert 1 <= len(ran) <= 2  # of 6 cells: the first, and the one the worker may have begun meanwhile


def test_thread_count_does_not_change_the_figures(monkeypatch):
    monkeypatch.setattr(sweep, "PARALLEL_MIN_DISTINCT_ROWS", 0)  # let 2 workers really run in parallel
    inputs, is_member = attack_data(100, shift=1.5)
    one = sweep_over(inputs, is_member, attacks=["threshold", "rf"], repeats=1, seed=3)
    two = sweep_over(inputs, is_member, attacks=["threshold", "rf"], repeats=1, seed=3, workers=2)
    for a, b in zip(one, two, strict=True):
        assert (a.attack, a.proportion, a.metrics) == (b.attack, b.proportion, b.metrics)
        np.testing.assert_array_equal(a.scores, b.scores)


# ---------------------------------------------------------------- bounded cost on distinct signal rows


def test_a_capped_attack_trains_every_proportion_past_its_cap_on_one_prefix_with_one_seed():
    caps = {"gb": 200}
    plan = dict(
        proportions=[0.1, 0.5, 1.0], attacks=["gb", "threshold"], repeats=2, eval_fraction=0.3, seed=3
    )
    _, plain = plan_cells(IS_MEMBER, **plan)
    _, capped = plan_cells(IS_MEMBER, max_train_rows=caps, **plan)
    for before, after in zip(plain, capped, strict=True):
        if after.attack == "threshold" or len(before.train_rows) < 200:  # 0.1: 56 rows, as before
            assert np.array_equal(before.train_rows, after.train_rows) and before.seed == after.seed
    for repeat in (0, 1):
        split = split_for_repeat(IS_MEMBER, 0.3, 3, repeat)
        past = [c for c in capped if c.attack == "gb" and c.repeat == repeat and c.proportion >= 0.5]
        assert len(past) == 2 and len({c.seed for c in past}) == 1
        for cell in past:  # the pool's nested prefix, 100 rows a side
            assert np.array_equal(
                cell.train_rows, np.r_[split.member_pool[:100], split.non_member_pool[:100]]
            )


def test_past_the_cap_the_sweep_fits_once_and_reports_the_fit_at_each_proportion(monkeypatch):
    inputs, is_member = attack_data(400, shift=1.0)  # 800 distinct rows
    monkeypatch.setattr(sweep, "HIGH_CARDINALITY_ROWS", 500)
    monkeypatch.setattr(sweep, "MAX_ATTACK_TRAIN_ROWS", {"gb": 200})
    progress = []
    plan = dict(proportions=[0.1, 0.5, 0.8, 1.0], attacks=["gb"], repeats=1)
    results = sweep_over(inputs, is_member, progress=lambda *step: progress.append(step), **plan)
    assert progress[-1] == ("attacks", 2, 2)  # 0.1 (56 rows) and one fit for 0.5, 0.8 and 1.0
    assert [r.proportion for r in results] == [0.1, 0.5, 0.8, 1.0]
    assert [r.train_rows for r in results] == [56, 200, 200, 200]
    assert results[1].metrics == results[2].metrics == results[3].metrics
    assert results[1].seconds > 0 and results[2].seconds == results[3].seconds == 0.0
    # below the distinct-row threshold nothing is capped: every proportion trains on all it knows
    monkeypatch.setattr(sweep, "HIGH_CARDINALITY_ROWS", 10_000)
    assert [r.train_rows for r in sweep_over(inputs, is_member, **plan)] == [56, 280, 448, 560]


def test_rf_is_capped_only_when_its_forest_runs_unmerged(monkeypatch):
    inputs, is_member = attack_data(400, shift=1.0)  # 800 distinct rows: rf's unmerged forest
    monkeypatch.setattr(sweep, "HIGH_CARDINALITY_ROWS", 100)
    monkeypatch.setattr(sweep, "UNMERGED_RF_MAX_TRAIN_ROWS", 200)
    plan = dict(proportions=[0.1, 0.5, 1.0], attacks=["rf"], repeats=1)
    assert [r.train_rows for r in sweep_over(inputs, is_member, **plan)] == [56, 200, 200]
    # The same signals on a coarse grid: a few hundred distinct rows of 800, so rf merges them; uncapped.
    coarse = np.round(inputs.features * 2) / 2
    assert 100 <= len(np.unique(coarse, axis=0)) < 400
    merged = dataclasses.replace(inputs, features=coarse)
    assert [r.train_rows for r in sweep_over(merged, is_member, **plan)] == [56, 280, 560]


def test_units_side_by_side_leave_the_warning_filters_as_they_were():
    """The reference and what-if fits each silence the recipe's warnings (warnings.catch_warnings, which
    swaps one process-wide list); two fits that leave in the order they came in put back the second's copy,
    which holds the first's "ignore": every later warning of the process was silenced (found in review)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    labels = (features[:, 0] + rng.normal(size=200) > 0).astype(int)
    first_in, second_in = threading.Lock(), threading.Event()

    def fit_one(job: int) -> np.ndarray:  # as reference.fit_reference_confidences' fit_one silences the fit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression().fit(features, labels)
            if first_in.acquire(blocking=False):  # leaves first, once the other fit is in
                assert second_in.wait(10)
            else:
                second_in.set()
                time.sleep(0.3)
            return model.predict_proba(features)[:, 1]

    before = list(warnings.filters)
    answers = side_by_side(fit_one, [0, 1], workers=2)
    assert second_in.is_set()  # the two fits did overlap
    assert warnings.filters == before
    np.testing.assert_array_equal(answers[0], answers[1])
