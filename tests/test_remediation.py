"""The remediation what-if (#12): variants of the target's recipe, attacked and scored the same way.

Real Adult targets (a default random forest and a fully grown tree, in a pipeline that ordinal-encodes
the categoricals), one module-scoped audit each; a dummy and an already-regularised target; determinism;
a sandboxed bundle against the same audit in process; and the parent's checks of the child's answer.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder
from sklearn.tree import DecisionTreeClassifier

from builders import adult_frame, needs_adult, write_bundle
from mia_robustness import audit
from mia_robustness.cli import main
from mia_robustness.engine import audit_estimator
from mia_robustness.errors import OptionsError
from mia_robustness.options import options_from_mapping
from mia_robustness.remediation import WhatIfRequest
from mia_robustness.remediation.family import CLASS_KNOBS, plan_for
from mia_robustness.sandbox.protocol import ProtocolError
from mia_robustness.sandbox.stage import what_if_from_message

pytestmark = needs_adult

ROWS = 1500  # per side: the done-when's figures hold here, and one forest audit stays near 10 s
# The reference attacks at full knowledge once: the what-if then runs by default.
REFERENCE = {
    "label_column": "income",
    "repeats": 1,
    "proportions": "1",
    "attack_models": "threshold,lira,rmia",
}
# The cheapest audit that still runs the what-if (asked for).
ASKED = {
    "label_column": "income",
    "repeats": 1,
    "proportions": "1",
    "attack_models": "threshold",
    "what_if": True,
}


def _adult_target(estimator, rows: int, seed: int = 5):
    frame = adult_frame(2 * rows, seed=seed)
    categorical = [c for c in frame.columns if c != "income" and not pd.api.types.is_numeric_dtype(frame[c])]
    encode = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
    model = Pipeline(
        [
            ("prep", ColumnTransformer([("cat", encode, categorical)], remainder="passthrough")),
            ("model", estimator),
        ]
    )
    members, non_members = frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)
    model.fit(members.drop(columns="income"), members["income"])
    return model, members, non_members


@pytest.fixture(scope="module")
def forest_report():
    return audit_estimator(*_adult_target(RandomForestClassifier(random_state=0), ROWS), **REFERENCE)


@pytest.fixture(scope="module")
def tree_report():
    return audit_estimator(*_adult_target(DecisionTreeClassifier(random_state=0), ROWS), **REFERENCE)


def _rows(section: dict) -> dict[str, dict]:
    return {row["name"]: row for row in [section["baseline"], *section["variants"]] if row}


@pytest.mark.parametrize("which", ["forest_report", "tree_report"])
def test_an_overfit_adult_target_gets_a_recommendation_that_cuts_the_attack(which, request):
    report = request.getfixturevalue(which)
    section = report.to_dict()["remediation"]
    assert section["status"] == "ran" and section["skipped"] is None
    assert section["protocol"] == {
        "models_per_config": 4,
        "rows": 2 * ROWS,
        "evaluation_rows": ROWS,
        "utility_budget": 1.0,
    }
    baseline = section["baseline"]
    # The baseline is the target's recipe retrained under the what-if's protocol: it reproduces its risk.
    assert abs(baseline["attack"]["auc"] - report.summary.auc) <= 0.06
    chosen = section["recommended"]["variant"]
    assert chosen is not None
    row = _rows(section)[chosen]
    assert row["kind"] == "retrained" and row["auc_change"] <= -0.10
    assert row["accuracy_change"] >= -0.01  # within the 1-point budget
    assert row["pareto"] or any(
        r["pareto"] and r["attack"]["auc"] <= row["attack"]["auc"] for r in _rows(section).values()
    )
    # The summary names the change and its measured effect.
    assert chosen in report.summary.sentences[-1] and "AUC" in report.summary.sentences[-1]
    # Rules: a default forest / tree has leaves of one row and no depth limit.
    assert {(r["parameter"], r["value"]) for r in section["rules"]} == {
        ("min_samples_leaf", 1),
        ("max_depth", None),
    }
    assert section["family"] == ("forest" if which == "forest_report" else "tree")


def test_variants_come_from_the_table_and_serving_rows_follow(forest_report):
    section = forest_report.to_dict()["remediation"]
    kinds = [row["kind"] for row in section["variants"]]
    assert kinds == sorted(kinds, key=lambda kind: kind == "serving")  # retrained first
    names = [row["name"] for row in section["variants"]]
    assert names[-3:] == [
        "labels only",
        "probabilities rounded to 1 decimal",
        "probabilities rounded to 2 decimals",
    ]
    assert names[:-3] == ["min_samples_leaf=20", "max_samples=0.2"]
    labels_only = section["variants"][-3]
    assert labels_only["attack"]["attack_model"] == "gap" and labels_only["utility"]["log_loss"] is None
    for row in section["variants"]:
        low, high = row["utility"]["ci95"]["accuracy"]
        assert low <= row["utility"]["accuracy"] <= high
        low, high = row["attack"]["ci95"]["auc"]
        assert low <= row["attack"]["auc"] <= high


def test_a_dummy_target_gets_no_recommendation_that_claims_a_gain():
    report = audit_estimator(*_adult_target(DummyClassifier(strategy="prior"), 500), **ASKED)
    section = report.to_dict()["remediation"]
    assert section["status"] == "skipped" and "no variants for this model's class" in section["skipped"]
    assert section["estimator_class"] is None and section["baseline"] is None
    assert section["recommended"]["variant"] is None
    assert "no serving-side option helps" in section["recommended"]["sentence"]
    assert [row["kind"] for row in section["variants"]] == ["serving"] * 3


def test_an_already_regularised_target_gets_no_recommendation():
    forest = RandomForestClassifier(n_estimators=30, min_samples_leaf=50, max_depth=6, random_state=0)
    report = audit_estimator(*_adult_target(forest, 800), **ASKED)
    section = report.to_dict()["remediation"]
    assert section["status"] == "ran" and section["rules"] == []
    # Asked for, so the full table: min_samples_leaf 5 and 20 and max_depth 6 and 12 are no stronger than the
    # recipe's own 50 and 6: dropped.
    assert [row["name"] for row in section["variants"] if row["kind"] == "retrained"] == [
        "ccp_alpha=0.001",
        "ccp_alpha=0.01",
        "max_samples=0.5",
        "max_samples=0.2",
    ]
    assert section["recommended"]["variant"] is None
    assert "already about as private as its family allows" in section["recommended"]["sentence"]


def test_same_seed_same_section_and_the_sandbox_gives_the_same(tmp_path):
    # A small forest (its bootstrap is the randomness to pin down), with the full table that what_if=true asks for.
    model, members, non_members = _adult_target(RandomForestClassifier(n_estimators=8, random_state=0), 300)
    first = audit_estimator(model, members, non_members, **ASKED).to_dict()["remediation"]
    again = audit_estimator(model, members, non_members, **ASKED).to_dict()["remediation"]
    assert first == again
    other = audit_estimator(model, members, non_members, **ASKED, seed=1).to_dict()["remediation"]
    assert other != first
    bundle = write_bundle(tmp_path, model, members, non_members)
    sandboxed = audit(bundle, ASKED)
    assert sandboxed.containment["sandbox"] is True
    assert sandboxed.to_dict()["remediation"] == first
    assert "what_if" in sandboxed.timings


def test_the_default_skips_it_where_the_reference_attacks_do_not_run_but_keeps_the_rules():
    model, members, non_members = _adult_target(DecisionTreeClassifier(random_state=0), 300)
    report = audit_estimator(model, members, non_members, **(ASKED | {"what_if": None}))
    section = report.to_dict()["remediation"]
    assert section["status"] == "skipped" and "what_if=true" in section["skipped"]
    assert section["baseline"] is None and section["rules"] and "what_if" not in report.timings
    assert section["estimator_class"] == "DecisionTreeClassifier"
    off = audit_estimator(model, members, non_members, **(ASKED | {"what_if": False}))
    assert "what_if=false" in off.to_dict()["remediation"]["skipped"]


def test_a_recipe_the_refit_gate_refuses_skips_the_what_if_not_the_audit():
    frame = adult_frame(600, seed=2).select_dtypes("number")
    frame["income"] = adult_frame(600, seed=2)["income"]
    # A lambda is no function the loader's allowlist admits: the recipe is not retrained.
    model = Pipeline(
        [("odd", FunctionTransformer(lambda x: x)), ("tree", DecisionTreeClassifier(random_state=0))]
    )
    members, non_members = frame.iloc[:300].reset_index(drop=True), frame.iloc[300:].reset_index(drop=True)
    model.fit(members.drop(columns="income"), members["income"])
    section = audit_estimator(model, members, non_members, **ASKED).to_dict()["remediation"]
    assert section["status"] == "skipped" and "could not retrain the model's recipe" in section["skipped"]
    assert section["estimator_class"] == "DecisionTreeClassifier" and section["rules"]
    assert [row["kind"] for row in section["variants"]] == ["serving"] * 3


def test_the_cli_flags_reach_the_audit(tmp_path, capsys):
    model, members, non_members = _adult_target(DecisionTreeClassifier(random_state=0), 300)
    bundle = write_bundle(tmp_path, model, members, non_members)
    flags = [
        "--label-column",
        "income",
        "--attack-models",
        "threshold",
        "--repeats",
        "1",
        "--proportions",
        "1",
    ]
    for switch, status in (("--what-if", "ran"), ("--no-what-if", "skipped")):
        assert (
            main(["audit", str(bundle), "-q", "--no-sandbox", *flags, switch, "--utility-budget", "2"]) == 0
        )
        report = json.loads(capsys.readouterr().out)
        assert report["remediation"]["status"] == status
        assert report["settings"]["utility_budget"] == 2.0
        assert report["remediation"]["protocol"]["utility_budget"] == 2.0


def test_options_what_if_and_utility_budget():
    assert options_from_mapping({}).what_if is None
    assert options_from_mapping({"what_if": "true"}).what_if is True
    assert options_from_mapping({"what-if": "off"}).what_if is False
    assert options_from_mapping({"what_if": "auto"}).what_if is None
    assert options_from_mapping({"utility_budget": "2.5"}).utility_budget == 2.5
    # JSON's 1 / 0 as allow_swapped takes them (a config.json written by a script); 2 is no answer.
    assert options_from_mapping({"what_if": 1}).what_if is True
    assert options_from_mapping({"what_if": 0}).what_if is False
    for bad in ("maybe", 2, 0.5, [True]):
        with pytest.raises(OptionsError, match="must be true, false or auto, got"):
            options_from_mapping({"what_if": bad})
    with pytest.raises(OptionsError, match="between 0.0 and 50.0"):
        options_from_mapping({"utility_budget": 60})


# ---- the child's answer, as the parent checks it ---------------------------------------------------------


def _answer(configs, confidence, correct, **header):
    message = {
        "kind": "what_if",
        "estimator_class": "DecisionTreeClassifier",
        "family": "tree",
        "configs": configs,
        "rules": [["leaf_of_one", 1]],
        "skipped": None,
    } | header
    flat = (confidence.shape[0] * confidence.shape[1], confidence.shape[2])  # as the wire carries them
    return message, {"confidence": confidence.reshape(flat), "correct": correct.reshape(flat)}


REQUEST = WhatIfRequest(fit=True, models_per_config=2, seed=0, workers=1)
GOOD_CONFIGS = [["baseline", None, None], ["retrained", "min_samples_leaf", 20]]


def test_a_well_formed_answer_is_taken():
    fits = what_if_from_message(
        *_answer(GOOD_CONFIGS, np.full((2, 2, 6), 0.5), np.ones((2, 2, 6))), REQUEST, 6
    )
    assert [c.name for c in fits.plan.configs] == ["baseline", "min_samples_leaf=20"]
    assert fits.plan.rules == (("leaf_of_one", 1),)


@pytest.mark.parametrize(
    "forged",
    [
        {"configs": [["baseline", None, None], ["retrained", "__class__", 20]]},  # outside the table
        {"configs": [["baseline", None, None], ["retrained", "min_samples_leaf", "20; rm -rf"]]},
        {"configs": [["baseline", None, None], ["retrained", "min_samples_leaf", float("nan")]]},
        {"configs": [["retrained", "min_samples_leaf", 20], ["baseline", None, None]]},  # baseline not first
        {"estimator_class": "EvilClassifier"},
        {"rules": [["made_up", 1]]},
        {"skipped": "the model says hello"},
        {"skipped": "not_asked"},  # the fits were asked for
        {"nan": True},
        {"shape": (2, 2, 5)},
        {"above_one": True},
    ],
)
def test_a_forged_answer_is_a_protocol_error(forged):
    confidence, correct = np.full((2, 2, 6), 0.5), np.ones((2, 2, 6))
    if forged.pop("nan", False):
        confidence[1, 0, 3] = np.nan
    if forged.pop("above_one", False):
        confidence[0, 1, 0] = 3.0
    shape = forged.pop("shape", None)
    if shape:
        confidence, correct = np.full(shape, 0.5), np.ones(shape)
    configs = forged.pop("configs", GOOD_CONFIGS)
    with pytest.raises(ProtocolError):
        what_if_from_message(*_answer(configs, confidence, correct, **forged), REQUEST, 6)


def test_the_plan_reads_a_pipeline_at_its_final_step_and_drops_weaker_settings():
    tree = Pipeline(
        [("scale", "passthrough"), ("clf", DecisionTreeClassifier(min_samples_leaf=10, max_depth=8))]
    )
    plan = plan_for(tree)
    assert plan.estimator_class == "DecisionTreeClassifier" and plan.rules == ()
    assert [c.name for c in plan.configs] == [
        "baseline",
        "min_samples_leaf=20",
        "max_depth=6",
        "ccp_alpha=0.001",
        "ccp_alpha=0.01",
    ]
    assert plan_for(DummyClassifier()).configs == ()


def test_asking_for_the_what_if_gets_every_knob_the_default_table_leaves_out():
    """The default table is sized to cost no more than the reference stage; what_if=true (the user accepts the
    cost) varies a forest's leaf size, depth, pruning and bootstrap sample at two strengths each."""
    forest = RandomForestClassifier()
    assert [c.name for c in plan_for(forest).configs] == [
        "baseline",
        "min_samples_leaf=20",
        "max_samples=0.2",
    ]
    thorough = [c.name for c in plan_for(forest, thorough=True).configs]
    assert thorough == [
        "baseline",
        "min_samples_leaf=5",
        "min_samples_leaf=20",
        "max_depth=6",
        "max_depth=12",
        "ccp_alpha=0.001",
        "ccp_alpha=0.01",
        "max_samples=0.5",
        "max_samples=0.2",
    ]
    # Every parameter a thorough plan can send passes the parent's check of the child's answer.
    for model in (forest, GradientBoostingClassifier(), HistGradientBoostingClassifier()):
        assert {c.parameter for c in plan_for(model, thorough=True).configs[1:]} <= CLASS_KNOBS[
            plan_for(model).estimator_class
        ][1]


# ---- review (#12): hostile and odd recipes ---------------------------------------------------------------


def _numeric_target(estimator, rows: int = 150):
    """A small numeric Adult target (``rows`` per side): the cheapest real audit the what-if can run on."""
    frame = adult_frame(2 * rows, seed=3).select_dtypes("number")
    frame["income"] = adult_frame(2 * rows, seed=3)["income"]
    members, non_members = frame.iloc[:rows].reset_index(drop=True), frame.iloc[rows:].reset_index(drop=True)
    estimator.fit(members.drop(columns="income"), members["income"])
    return estimator, members, non_members


def test_a_declared_round_count_the_fit_never_reached_does_not_scale_the_variants(tmp_path):
    # Fitted with 5 rounds, then declaring 10**9: the refit gate caps the baseline at 5, and the
    # "half the rounds" variants must halve 5, not 10**9 (5 * 10**8 rounds would burn the sandbox's CPU).
    model, members, non_members = _numeric_target(GradientBoostingClassifier(n_estimators=5, random_state=0))
    model.set_params(n_estimators=10**9)
    bundle = write_bundle(tmp_path, model, members, non_members)
    section = audit(bundle, ASKED, timeout=120).to_dict()["remediation"]
    assert section["status"] == "ran"
    retrained = [row["name"] for row in section["variants"] if row["kind"] == "retrained"]
    assert retrained[:2] == ["n_estimators=2", "n_estimators=1"]


def test_a_recipe_whose_parameters_cannot_be_read_skips_the_what_if_not_the_audit():
    # A tree pickled by a scikit-learn without `monotonic_cst` scores fine, but get_params() raises.
    model, members, non_members = _numeric_target(DecisionTreeClassifier(random_state=0))
    del model.__dict__["monotonic_cst"]
    for what_if in (None, True):
        section = audit_estimator(model, members, non_members, **(ASKED | {"what_if": what_if})).to_dict()
        remediation = section["remediation"]
        assert (
            remediation["status"] == "skipped" and remediation["estimator_class"] == "DecisionTreeClassifier"
        )
        assert remediation["rules"] == [] and remediation["baseline"] is None
    assert "could not retrain the model's recipe" in remediation["skipped"]


def test_a_regularisation_strength_near_the_float_limit_plans_no_variant_of_it():
    model = LogisticRegression(C=1e307)
    assert [c.name for c in plan_for(model).configs] == ["baseline", "C=1e+306", "C=1e+305"]
    model.set_params(C=float("inf"))
    plan = plan_for(model)
    assert [c.name for c in plan.configs] == ["baseline"] and plan.rules == (("huge_c", None),)
    assert [c.name for c in plan_for(SGDClassifier(alpha=1e307)).configs] == ["baseline", "alpha=1e+308"]
    huge = GradientBoostingClassifier(n_estimators=10**20)
    assert [c.parameter for c in plan_for(huge).configs] == [None, "min_samples_leaf", "subsample"]


@pytest.mark.parametrize(
    "forged",
    [
        {"configs": [], "shape": (0, 2, 6)},  # fits "ran" with no baseline
        {"configs": [], "shape": (0, 2, 6), "estimator_class": None, "family": None},
        {"family": "knn"},  # a class with another class's family
        {"skipped": "not_in_table", "shape": (0, 2, 6)},  # "no variants for this class", naming a class
        {"configs": [["baseline", None, None], ["retrained", "n_neighbors", 30]]},  # not a tree's knob
    ],
)
def test_a_forged_answer_that_does_not_add_up_is_a_protocol_error(forged):
    shape = forged.pop("shape", (2, 2, 6))
    confidence, correct = np.full(shape, 0.5), np.ones(shape)
    configs = forged.pop("configs", GOOD_CONFIGS)
    with pytest.raises(ProtocolError):
        what_if_from_message(*_answer(configs, confidence, correct, **forged), REQUEST, 6)


def test_an_honest_skip_naming_its_class_is_taken():
    # A recipe the gate refused still names its class and rules (no configs needed).
    header = {"skipped": "recipe_refused"}
    fits = what_if_from_message(*_answer([], np.zeros((0, 2, 6)), np.zeros((0, 2, 6)), **header), REQUEST, 6)
    assert fits.skipped == "recipe_refused" and fits.plan.estimator_class == "DecisionTreeClassifier"


def test_a_fitted_search_is_varied_at_its_chosen_estimator():
    # The refit gate retrains a search's best_estimator_; the what-if varies that, at the top or as a
    # pipeline's final step, instead of calling a tuned tree "outside its table".
    grid = GridSearchCV(DecisionTreeClassifier(random_state=0), {"max_depth": [None, 30]}, cv=2)
    model, members, non_members = _numeric_target(Pipeline([("scale", "passthrough"), ("tree", grid)]))
    section = audit_estimator(model, members, non_members, **ASKED).to_dict()["remediation"]
    assert section["status"] == "ran" and section["estimator_class"] == "DecisionTreeClassifier"
    assert section["rules"] and section["baseline"] is not None
    assert "min_samples_leaf=5" in [row["name"] for row in section["variants"]]
    unfitted = GridSearchCV(DecisionTreeClassifier(), {"max_depth": [None, 30]})
    assert plan_for(unfitted).estimator_class is None  # no chosen estimator yet: nothing to vary


def test_a_what_if_fit_out_of_memory_skips_the_what_if_not_the_audit(monkeypatch):
    model, members, non_members = _numeric_target(DecisionTreeClassifier(random_state=0))

    def no_memory(*args, **kwargs):  # only the what-if fits: the target is fitted already
        raise MemoryError

    monkeypatch.setattr(DecisionTreeClassifier, "fit", no_memory)
    report = audit_estimator(model, members, non_members, **ASKED)
    section = report.to_dict()["remediation"]
    assert section["status"] == "skipped" and "needed more memory" in section["skipped"]
    assert report.summary.auc > 0.5 and [row["kind"] for row in section["variants"]] == ["serving"] * 3


def test_string_labels_three_classes_and_a_class_most_halves_miss():
    # One row of a third class: most fits never see it (its probability is then 0, its row misclassified).
    frame = adult_frame(300, seed=4).select_dtypes("number")
    labels = np.where(adult_frame(300, seed=4)["income"].to_numpy() == ">50K", "rich", "poor").astype(object)
    labels[7] = "rare"
    frame["income"] = labels
    members, non_members = frame.iloc[:150].reset_index(drop=True), frame.iloc[150:].reset_index(drop=True)
    model = DecisionTreeClassifier(random_state=0).fit(members.drop(columns="income"), members["income"])
    section = audit_estimator(model, members, non_members, **ASKED).to_dict()["remediation"]
    assert section["status"] == "ran"
    for row in [section["baseline"], *section["variants"]]:
        utility = row["utility"]
        assert 0 <= utility["balanced_accuracy"] <= 1 and 0 <= utility["accuracy"] <= 1
        assert utility["log_loss"] is None or np.isfinite(utility["log_loss"])
        assert 0 <= row["attack"]["auc"] <= 1


def test_by_default_the_what_if_gives_way_to_a_time_limit_the_reference_stage_nearly_used_up():
    # The reference stage is made to take 6 s (the progress callback sleeps in it); the 12 s limit then
    # leaves less than that after it, and the default what-if (about as costly) is skipped with its
    # reason instead of running the audit past its limit into a time-limit error. (6 of 12 s: the stages
    # before it may take up to 6 s on a loaded machine before the limit itself is reached.)
    model, members, non_members = _numeric_target(DecisionTreeClassifier(random_state=0))

    def slow_reference(stage: str, done: int, total: int, **_) -> None:
        if stage == "reference_models" and done > 0:
            time.sleep(6.0 / total)

    options = ASKED | {"attack_models": "threshold,rmia", "what_if": None, "reference_models": 4}
    report = audit_estimator(model, members, non_members, progress=slow_reference, timeout=12, **options)
    section = report.to_dict()["remediation"]
    assert report.timings["reference_attacks"] >= 6.0
    assert section["status"] == "skipped" and "time limit leaves less" in section["skipped"]
    assert section["rules"] and [row["kind"] for row in section["variants"]] == ["serving"] * 3
    # Without a limit (or with what_if=true) the same audit runs it.
    assert audit_estimator(model, members, non_members, **options).remediation.status == "ran"


def test_the_baseline_reuses_the_reference_stage_fits_and_gives_the_same_figures(tmp_path):
    # No random_state: the reference stage and the what-if seed their k-th refit alike, or reuse would differ.
    model, members, non_members = _adult_target(RandomForestClassifier(n_estimators=8), 300)
    what_if_fits: dict[str, int] = {}

    def counting(key: str):
        def progress(stage: str, done: int, total: int) -> None:
            if stage == "what_if":  # the fits' progress, then the stage's end (1 of 1)
                what_if_fits[key] = max(total, what_if_fits.get(key, 0))

        return progress

    reused = audit_estimator(model, members, non_members, progress=counting("reused"), **REFERENCE)
    section = reused.to_dict()["remediation"]
    retrained = [row for row in section["variants"] if row["kind"] == "retrained"]
    # Only the variants were fitted: the baseline's 4 models are the reference stage's 4.
    assert what_if_fits["reused"] == 4 * len(retrained) > 0
    # Without the reference stage (what_if asked for: the full table) the baseline is fitted, to the same figures.
    fitted = audit_estimator(model, members, non_members, progress=counting("fitted"), **ASKED)
    alone = fitted.to_dict()["remediation"]
    alone_retrained = [row for row in alone["variants"] if row["kind"] == "retrained"]
    assert what_if_fits["fitted"] == 4 * (len(alone_retrained) + 1)
    for field in ("utility", "attack"):
        assert section["baseline"][field] == alone["baseline"][field]
    # The sandbox child keeps its reference fits for its what-if the same way: the same section, fewer fits.
    bundle = write_bundle(tmp_path, model, members, non_members)
    sandboxed = audit(bundle, REFERENCE, progress=counting("sandboxed"))
    assert sandboxed.to_dict()["remediation"] == section
    assert what_if_fits["sandboxed"] == what_if_fits["reused"]
    # The reference stage's own figures are seeded too: the same report on every run.
    again = audit_estimator(model, members, non_members, **REFERENCE)
    assert again.to_dict()["results"] == reused.to_dict()["results"]


def test_a_variants_attack_figures_come_from_one_roc_curve(monkeypatch):
    """Each what-if row's AUC, TPR at 1% FPR and their intervals are the sweep's own figures
    (attack_metrics, metric_intervals), from one ROC curve per row, not one per figure."""
    from mia_robustness import metrics
    from mia_robustness.remediation import measure

    rng = np.random.default_rng(0)
    truth = np.r_[np.ones(400, dtype=bool), np.zeros(400, dtype=bool)]
    scores = rng.normal(size=800) + 0.8 * truth
    full = metrics.attack_metrics(truth, scores, scores > 0.4)
    intervals = metrics.metric_intervals(truth, scores)
    curves = []
    roc_curve = metrics.roc_curve
    monkeypatch.setattr(metrics, "roc_curve", lambda *a, **k: curves.append(1) or roc_curve(*a, **k))
    row = measure._attack("loss_threshold", truth, scores)
    assert len(curves) == 1
    assert (row.auc, row.tpr_at_1pct_fpr) == (full.auc, full.tpr_at_1pct_fpr) and 0.7 < row.auc < 0.8
    assert row.ci95 == {"auc": intervals["auc"], "tpr_at_1pct_fpr": intervals["tpr_at_1pct_fpr"]}
