"""Reference-model attacks (LiRA, RMIA), class-dependent thresholds, intervals and where the risk is.

The bundles are the tests' own: they are audited in this process (``sandbox=False``), as these tests read
the engine's figures; test_sandbox checks that reference attacks give the same figures in the sandbox."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from builders import TINY, noisy_numeric_frame, split_fit, write_bundle
from mia_robustness import audit
from mia_robustness.metrics import clopper_pearson, rate_intervals

LEARNED = ("nn", "rf", "gb", "threshold", "class_threshold")


@pytest.fixture(scope="module")
def overfit_forest_report(tmp_path_factory):
    model, members, non_members = split_fit(
        noisy_numeric_frame(2000, seed=1), RandomForestClassifier(n_estimators=50, random_state=0)
    )
    bundle = write_bundle(tmp_path_factory.mktemp("forest"), model, members, non_members)
    return audit(bundle, {"repeats": 1, "proportions": "0.5,1"}, sandbox=False), members


def test_reference_attacks_beat_learned_attacks_at_low_fpr(overfit_forest_report):
    report, _ = overfit_forest_report
    best = {}
    for row in report.results:
        best[row.attack_model] = max(best.get(row.attack_model, 0.0), row.mean["tpr_at_0_1pct_fpr"])
    learned = max(best[a] for a in LEARNED)
    reference = max(best[a] for a in ("lira", "lira_offline", "rmia", "rmia_offline"))
    assert reference > learned + 0.05, best
    assert report.summary.strongest_attack in ("lira", "lira_offline", "rmia", "rmia_offline")
    assert {r.knowledge for r in report.results if r.attack_model.startswith(("lira", "rmia"))} == {
        "black-box outputs + known rows as reference data + the target's training recipe"
    }


def test_intervals_epsilon_and_where_the_risk_is(overfit_forest_report):
    report, members = overfit_forest_report
    summary = report.summary
    low, high = summary.ci95["auc"]
    assert low <= summary.auc <= high and high - low < 0.2
    low, high = summary.ci95["tpr_at_1pct_fpr"]
    assert low <= summary.tpr_at_1pct_fpr <= high
    assert (
        summary.epsilon_lower_bound is not None
        and 0 < summary.epsilon_lower_bound <= summary.epsilon_estimate
    )
    assert {c.label for c in report.per_class} == {"0", "1"}
    assert sum(c.members for c in report.per_class) == report.data.eval_rows_per_side
    exposed = report.exposed_records
    assert exposed.members_evaluated == report.data.eval_rows_per_side
    assert len(exposed.top) == 10
    assert all(0 <= r.row < len(members) for r in exposed.top)
    scores = [r.score for r in exposed.top]
    assert scores == sorted(scores, reverse=True)
    groups = {g.group: g for g in report.by_correctness}
    assert set(groups) == {"correctly classified", "misclassified"}
    assert sum(g.members + g.non_members for g in groups.values()) == 2 * report.data.eval_rows_per_side
    assert groups["misclassified"].members == 0  # an unpruned forest gets every member right
    for row in report.results:  # one repeat: the interval is around the very figure reported
        for name in ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr", "tpr_at_0_fpr"):
            low, high = row.ci95[name]
            assert low <= row.mean[name] <= high, (row.attack_model, name)
    attacks = {c.attack_model for c in report.curves}
    assert attacks == {r.attack_model for r in report.results}
    for curve in report.curves:
        assert len(curve.fpr) == len(curve.tpr) <= 200
        assert curve.fpr == sorted(curve.fpr) and curve.tpr[-1] == 1.0


def test_dummy_target_stays_at_chance_with_intervals_covering_it(tmp_path):
    model, members, non_members = split_fit(
        noisy_numeric_frame(1000, seed=12), DummyClassifier(strategy="prior")
    )
    report = audit(
        write_bundle(tmp_path, model, members, non_members),
        TINY | {"attack_models": "threshold,class_threshold,lira,rmia"},
        sandbox=False,
    )
    for row in report.results:
        assert abs(row.mean["auc"] - 0.5) <= 0.05, (row.attack_model, row.mean["auc"])
        low, high = row.ci95["auc"]
        assert low <= 0.5 <= high, (row.attack_model, row.ci95)
    low, high = report.summary.ci95["auc"]
    assert low <= 0.5 <= high
    assert report.summary.epsilon_lower_bound in (None, 0.0) or report.summary.epsilon_lower_bound < 0.5


def test_refitting_the_recipe_never_writes_where_the_model_file_says(tmp_path):
    """A Pipeline's `memory` names a cache folder; reference models must not use it."""
    cache = tmp_path / "cache-from-model-file"
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("rf", RandomForestClassifier(n_estimators=10, n_jobs=-1, random_state=0)),
        ],
        memory=str(cache),
    )
    model, members, non_members = split_fit(noisy_numeric_frame(600, seed=13), pipeline)
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    report = audit(
        write_bundle(tmp_path / "b", model, members, non_members),
        {"repeats": 1, "proportions": "1", "attack_models": "lira"},
        sandbox=False,  # in this process: in the sandbox child, Landlock would refuse the write anyway
    )
    assert not cache.exists()
    assert {r.attack_model for r in report.results} == {"lira", "lira_offline"}


def test_reference_attacks_are_skipped_by_default_on_large_tables(tmp_path, monkeypatch, overfit_tree_data):
    engine = importlib.import_module("mia_robustness.engine")
    monkeypatch.setattr(engine, "REFERENCE_DEFAULT_MAX_ROWS", 100)
    model, members, non_members = overfit_tree_data
    bundle = write_bundle(tmp_path, model, members, non_members)
    report = audit(bundle, {"repeats": 1, "proportions": "1"}, sandbox=False)
    assert not any(r.attack_model.startswith(("lira", "rmia")) for r in report.results)
    assert any("lira and rmia were skipped" in w for w in report.warnings)
    asked = audit(bundle, {"repeats": 1, "proportions": "1", "attack_models": "rmia"}, sandbox=False)
    assert {r.attack_model for r in asked.results} == {"rmia", "rmia_offline"}


def test_clopper_pearson_and_rate_intervals():
    low, high = clopper_pearson(0, 100)
    assert low == 0.0 and high == pytest.approx(0.0362, abs=1e-3)
    low, high = clopper_pearson(50, 100)
    assert low == pytest.approx(0.398, abs=1e-3) and high == pytest.approx(0.602, abs=1e-3)
    truth = np.repeat([1, 0], 500)
    intervals = rate_intervals(
        truth, truth + np.random.default_rng(1).normal(0, 0.1, 1000), np.random.default_rng(2)
    )
    assert intervals.auc[0] > 0.99
    assert (
        intervals.epsilon_lower_bound > 4
    )  # perfect separation of 500 vs 500 rules out epsilon < log(~500/3.7)
