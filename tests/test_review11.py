"""Issue #11's outside review: hostile bundles and demanding users against the new output kinds,
predictions bundles, boosting libraries and ONNX paths. Each test failed before the fix it guards.

Models are fitted on Adult's six numeric columns (200 rows), as in test_boosters.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pandas as pd
import pytest

from builders import ADULT_CSV, needs_adult
from mia_robustness.errors import MiaError
from mia_robustness.loading import load_model
from mia_robustness.recipe import contained_clone

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
catboost = pytest.importorskip("catboost")

pytestmark = needs_adult

COLUMNS = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
ROUNDS = 8


@pytest.fixture(scope="module")
def members():
    frame = pd.read_csv(ADULT_CSV, usecols=[*COLUMNS, "income"]).sample(n=200, random_state=11)
    frame["income"] = (frame["income"] == ">50K").astype(int)
    return frame.reset_index(drop=True)


def _loaded(tmp_path: Path, model) -> object:
    """``model`` as a bundle author ships it: pickled, then loaded through the allowlisted gate."""
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    return load_model(path).estimator


def _lightgbm(members, **state):
    model = lightgbm.LGBMClassifier(n_estimators=ROUNDS, n_jobs=1, verbose=-1)
    model.fit(members[COLUMNS], members["income"])
    return model.set_params(**state)  # what the pickle's state may declare besides


@pytest.mark.parametrize(
    "state",
    [
        {"forced_splits": "/etc/passwd"},  # forcedsplits_filename's aliases
        {"fs": "/etc/passwd"},
        {"mlist": "/etc/hosts"},  # machine_list_filename's
        {"workers": "10.0.0.1:12400"},  # machines'
        {"num_machines": 2},  # network training
        {"config": "/etc/passwd"},
    ],
)
def test_a_lightgbm_recipe_that_reads_a_file_under_an_alias_is_refused(tmp_path, members, state):
    model = _loaded(tmp_path, _lightgbm(members, **state))
    with pytest.raises(MiaError) as caught:
        contained_clone(model)
    assert caught.value.code == "unsafe_recipe" and next(iter(state)) in str(caught.value)
    recipe = {"estimator": "LGBMClassifier", "params": state}  # config.json's reference_recipe alike
    with pytest.raises(MiaError) as caught:
        contained_clone(model, recipe)
    assert caught.value.code == "unsafe_recipe"


def test_a_lightgbm_recipe_cannot_take_threads_printing_or_rounds_under_an_alias(tmp_path, members):
    state = {"nthread": 64, "num_threads": 64, "verbosity": 3, "num_iterations": 10**7, "nrounds": 10**7}
    recipe = contained_clone(_loaded(tmp_path, _lightgbm(members, **state))).get_params()
    assert recipe["n_jobs"] == recipe["nthread"] == recipe["num_threads"] == 1
    assert recipe["verbose"] == recipe["verbosity"] == -1
    assert recipe["n_estimators"] == recipe["num_iterations"] == recipe["nrounds"] == ROUNDS
    refit = contained_clone(_loaded(tmp_path, _lightgbm(members, **state)))
    refit.fit(members[COLUMNS], members["income"])
    assert refit.booster_.current_iteration() == ROUNDS  # LightGBM's own choice among the aliases


def test_an_xgboost_recipe_cannot_take_more_threads_as_nthread(tmp_path, members):
    model = xgboost.XGBClassifier(n_estimators=ROUNDS, n_jobs=1, nthread=64)
    model.fit(members[COLUMNS], members["income"])
    refit = contained_clone(_loaded(tmp_path, model)).fit(members[COLUMNS], members["income"])
    config = json.loads(refit.get_booster().save_config())
    assert int(config["learner"]["generic_param"]["nthread"]) == 1


def test_a_catboost_recipe_that_names_its_rounds_n_estimators_is_capped(tmp_path, members):
    model = catboost.CatBoostClassifier(
        iterations=ROUNDS, thread_count=1, verbose=0, allow_writing_files=False
    )
    model.fit(members[COLUMNS], members["income"])
    model._init_params.pop("iterations")
    model._init_params["n_estimators"] = 10**7  # as a pickle's state may declare
    recipe = contained_clone(_loaded(tmp_path, model))
    assert recipe.get_params()["n_estimators"] == ROUNDS and "iterations" not in recipe.get_params()
    assert recipe.fit(members[COLUMNS], members["income"]).tree_count_ == ROUNDS
