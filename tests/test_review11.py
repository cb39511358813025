"""Issue #11's outside review: hostile bundles and demanding users against the new output kinds,
predictions bundles, boosting libraries and ONNX paths. Each test failed before the fix it guards.

Models are fitted on Adult's six numeric columns (200 rows), as in test_boosters.py."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from builders import ADULT_CSV, ADULT_NUMBER_COLUMNS, CHEAPEST, needs_adult, raised
from mia_robustness import audit
from mia_robustness.errors import DataError, LimitError, MiaError
from mia_robustness.loading import load_model
from mia_robustness.recipe import contained_clone

xgboost, lightgbm, catboost = (pytest.importorskip(name) for name in ("xgboost", "lightgbm", "catboost"))
pytestmark = needs_adult
COLUMNS = list(ADULT_NUMBER_COLUMNS)
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
    assert "reference_recipe's params" in str(caught.value) and "Re-save the model" not in str(caught.value)


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


def _bundle(
    folder: Path, members: pd.DataFrame, model_file: str, data: bytes, config: dict | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / model_file).write_bytes(data)
    members.iloc[:100].to_csv(folder / "train.csv", index=False)
    members.iloc[100:].to_csv(folder / "subject.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"label_column": "income", **(config or {})}))
    return folder


@pytest.mark.parametrize("in_pipeline", [False, True])
def test_a_lightgbm_pickle_saved_with_many_threads_is_audited_not_crashed(tmp_path, members, in_pipeline):
    """A wrapper fitted on a 64-core machine (n_jobs=64), or a file claiming thousands of threads under an
    alias: LightGBM would start that many threads to predict, past the sandbox's address space."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = _lightgbm(members)  # fitted with one thread here, then given the saved thread counts
    if in_pipeline:
        model = make_pipeline(StandardScaler(), model).fit(members[COLUMNS], members["income"])
    (model[-1] if in_pipeline else model).set_params(n_jobs=64, num_threads=5000)
    bundle = _bundle(tmp_path / "bundle", members, "model.pkl", pickle.dumps(model))
    report = audit(bundle, CHEAPEST)
    assert 0.0 <= report.results[0].mean["auc"] <= 1.0


# ---- ONNX --------------------------------------------------------------------------------------------------


def _onnx_bundle(folder: Path, members: pd.DataFrame, *, shape_bomb: bool = False) -> Path:
    """A bundle whose model.onnx is a linear softmax over the six numeric columns (one [N, 6] input);
    ``shape_bomb`` adds a ConstantOfShape of 200,000 x 200,000 floats (160 GB) that the scores depend on."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((6, 2), 1e-3, np.float32), "W")
    nodes = [helper.make_node("MatMul", ["X", "W"], ["logits"])]
    initializers = [weights]
    if shape_bomb:
        one = numpy_helper.from_array(np.array([1.0], np.float32))
        initializers.append(numpy_helper.from_array(np.array([200_000, 200_000], np.int64), "shape"))
        nodes += [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=one),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Mul", ["logits", "total"], ["scaled"]),
        ]
    nodes.append(
        helper.make_node("Softmax", ["scaled" if shape_bomb else "logits"], ["probabilities"], axis=1)
    )
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(model.SerializeToString())
    members.iloc[:100].to_csv(folder / "train.csv", index=False)
    members.iloc[100:].to_csv(folder / "subject.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"label_column": "income", "classes": [0, 1]}))
    return folder


def test_an_onnx_graph_that_allocates_billions_of_elements_is_a_memory_limit_in_the_sandbox(
    tmp_path, members
):
    bundle = _onnx_bundle(tmp_path / "bundle", members, shape_bomb=True)
    error = raised(LimitError, "model_memory_limit", audit, bundle, CHEAPEST)
    assert "memory" in error.message


def test_the_onnx_adapters_own_errors_reach_the_user_as_they_are(tmp_path, members):
    """A text column where the graph takes numbers: the adapter's error says how to fix it, and is not
    turned into a vague predict_failed on the way out."""
    frame = pd.read_csv(ADULT_CSV, usecols=["workclass"]).sample(n=len(members), random_state=11)
    with_text = members.drop(columns=COLUMNS[-1]).assign(workclass=frame["workclass"].to_numpy())
    bundle = _onnx_bundle(tmp_path / "bundle", with_text)
    error = raised(DataError, "model_rejected_data", audit, bundle, CHEAPEST)
    assert "hold text" in error.message


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost", "onnx"])
def test_a_damaged_native_or_onnx_file_is_told_how_to_save_its_own_kind(tmp_path, members, library):
    """Not "save it with joblib.dump": the user saved a booster or a graph, and is told how to save that."""
    X, y = members[COLUMNS], members["income"]
    if library == "xgboost":
        path = tmp_path / "model.json"
        xgboost.XGBClassifier(n_estimators=ROUNDS, n_jobs=1).fit(X, y).save_model(path)
    elif library == "lightgbm":
        path = tmp_path / "model.txt"
        _lightgbm(members).booster_.save_model(path)
    elif library == "catboost":
        path = tmp_path / "model.cbm"
        catboost.CatBoostClassifier(
            iterations=ROUNDS, thread_count=1, verbose=0, allow_writing_files=False
        ).fit(X, y).save_model(str(path))
    else:
        path = _onnx_bundle(tmp_path / "bundle", members) / "model.onnx"
    data = path.read_bytes()
    if library == "lightgbm":  # a count LightGBM's parser refuses (other forgeries abort it: the sandbox's)
        data = re.sub(rb"max_feature_idx=\d+", b"max_feature_idx=2000000000", data, count=1)
    else:
        data = data[: len(data) // 5]
    path.write_bytes(data)
    error = raised(MiaError, "corrupt_model", load_model, path)
    assert "joblib" not in error.message
    assert ("skl2onnx" if library == "onnx" else "save_model") in error.message


# ---- reference_recipe: resolved in the unsandboxed audit process -------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "xgboost.core.Booster",
        "Booster",
        "xgboost.testing.IteratorForTest",
        "catboost.core.Pool",
        "lightgbm.DaskLGBMClassifier",
        "xgboost.dask.DaskXGBClassifier",
        "xgboost.XGBRFClassifier",
        "sklearn.ensemble._forest.ForestClassifier",
    ],
)
def test_a_reference_recipe_naming_another_class_of_a_library_is_refused_unbuilt(monkeypatch, name):
    """config.json comes with the bundle: its recipe class is never one of the libraries' boosters, datasets,
    Dask estimators or test helpers, which the audit would import and build outside the sandbox."""
    import sys

    from mia_robustness.recipe_spec import build_recipe

    built = []
    for kind in (xgboost.core.Booster, catboost.core.Pool):
        original = kind.__init__
        monkeypatch.setattr(
            kind, "__init__", lambda self, *a, _o=original, **k: built.append(self) or _o(self, *a, **k)
        )
    testing_loaded = "xgboost.testing" in sys.modules
    with pytest.raises(MiaError) as caught:
        build_recipe({"estimator": name})
    assert caught.value.code == "bad_reference_recipe" and not built
    assert testing_loaded or "xgboost.testing" not in sys.modules


@pytest.mark.parametrize(
    "name", ["XGBClassifier", "lightgbm.sklearn.LGBMClassifier", "CatBoostClassifier", "sklearn.svm.SVC"]
)
def test_a_reference_recipe_still_names_the_classifiers(name):
    from mia_robustness.recipe_spec import build_recipe

    assert build_recipe({"estimator": name}).__class__.__name__ == name.rsplit(".", 1)[-1]


def test_a_reference_recipe_whose_values_its_class_refuses_is_named_as_the_culprit(members):
    """Not "retraining the model's recipe failed": the model is fine, config.json's recipe is not."""
    from mia_robustness import audit_estimator

    model = _lightgbm(members)
    error = raised(
        MiaError,
        "refit_failed",
        audit_estimator,
        model,
        members.iloc[:100],
        members.iloc[100:],
        attack_models="threshold,rmia",
        repeats=1,
        proportions="1",
        reference_models=2,
        what_if=False,
        reference_recipe={"estimator": "XGBClassifier", "params": {"max_depth": "deep"}},
    )
    assert "reference_recipe" in error.message and "check its params" in error.message


# ---- margins -------------------------------------------------------------------------------------------------


def test_huge_finite_margins_are_audited_not_an_internal_error(tmp_path, members):
    """Supplied (or a model's) margins of 1e39 are finite and pass the checks; the learned attacks' float32
    features once turned them into inf, then NaN ("internal error: Input contains NaN")."""
    rows = members.copy()
    is_member = np.arange(len(rows)) < 100  # _bundle's train.csv rows: their true class leads by more
    lead = 1e39 * (1.0 + is_member) + 1e38 * np.random.default_rng(0).normal(size=len(rows))
    rows["m_no"], rows["m_yes"] = 0.0, np.where(rows["income"] == 1, lead, -lead)
    predictions = {"kind": "margins", "columns": {"0": "m_no", "1": "m_yes"}}
    bundle = _bundle(tmp_path / "bundle", rows, "unused.md", b"", {"predictions": predictions})
    report = audit(bundle, {"attack_models": "threshold,nn", "repeats": "1", "proportions": "1"})
    aucs = {row.attack_model: row.mean["auc"] for row in report.results}
    assert aucs["threshold"] > 0.9 and 0.0 <= aucs["nn"] <= 1.0
