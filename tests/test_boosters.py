"""XGBoost, LightGBM and CatBoost: wrapper pickles through the allowlisted gate, native files found by
content, their recipes retrained in the sandbox, and the hostile variants refused.

Models are fitted on Adult's six numeric columns (300 rows a side). Each audit's threshold attack must
reach the no-training reference: the AUC of the true-class probability (a threshold on the true-class
loss) on the audit's own evaluation rows, less 0.03."""

from __future__ import annotations

import copyreg
import os
import pickle
import subprocess
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from builders import ADULT_CSV, ADULT_NUMBER_COLUMNS, needs_adult
from mia_robustness import audit, audit_estimator
from mia_robustness.errors import MiaError
from mia_robustness.loading import load_model
from mia_robustness.options import options_from_mapping
from mia_robustness.recipe import contained_clone
from mia_robustness.remediation.family import plan_for
from mia_robustness.sweep import split_for_repeat

xgboost = pytest.importorskip("xgboost")
lightgbm = pytest.importorskip("lightgbm")
catboost = pytest.importorskip("catboost")

pytestmark = needs_adult

COLUMNS = list(ADULT_NUMBER_COLUMNS)
ROWS = 300
SAMPLE = Path(__file__).resolve().parents[1] / "sample_input" / "xgboost"
QUICK = {"attack_models": "threshold", "repeats": 1, "proportions": "1"}
WITH_REFITS = QUICK | {"attack_models": "threshold,rmia", "reference_models": 2, "what_if": False}


def _wrapper(library: str):
    if library == "xgboost":
        return xgboost.XGBClassifier(n_estimators=40, max_depth=6, n_jobs=1, random_state=0)
    if library == "lightgbm":
        return lightgbm.LGBMClassifier(n_estimators=40, min_child_samples=5, n_jobs=1, verbose=-1)
    return catboost.CatBoostClassifier(
        iterations=40, depth=6, thread_count=1, verbose=0, allow_writing_files=False
    )


@pytest.fixture(scope="module")
def tables():
    frame = pd.read_csv(ADULT_CSV, usecols=[*COLUMNS, "income"]).sample(n=2 * ROWS, random_state=4)
    frame = frame.reset_index(drop=True)
    frame["income"] = (frame["income"] == ">50K").astype(int)
    return frame.iloc[:ROWS].reset_index(drop=True), frame.iloc[ROWS:].reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(tables):
    members, _ = tables
    return {
        lib: _wrapper(lib).fit(members[COLUMNS], members["income"])
        for lib in ("xgboost", "lightgbm", "catboost")
    }


def _bundle(folder: Path, tables, write_model, config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    members, non_members = tables
    members.to_csv(folder / "train.csv", index=False)
    non_members.to_csv(folder / "subject.csv", index=False)
    write_model(folder)
    (folder / "config.json").write_text(pd.Series({"label_column": "income", **(config or {})}).to_json())
    return folder


def _no_training_auc(model, members: pd.DataFrame, non_members: pd.DataFrame, classes: list) -> float:
    """AUC of the true-class probability as a membership score on the audit's evaluation rows (repeat 0)."""
    rows = pd.concat([members, non_members], ignore_index=True)
    proba = model.predict_proba(rows[COLUMNS])
    true_class = proba[np.arange(len(rows)), [classes.index(label) for label in rows["income"]]]
    is_member = np.repeat([1, 0], [len(members), len(non_members)])
    evaluation = split_for_repeat(is_member, 0.3, 0, 0).evaluation
    return float(roc_auc_score(is_member[evaluation], true_class[evaluation]))


def _auc(report, attack: str) -> float:
    return next(row.mean["auc"] for row in report.results if row.attack_model == attack)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost"])
def test_a_wrapper_pickle_is_audited_in_the_sandbox_and_its_recipe_retrained(
    tmp_path, tables, fitted, library
):
    model = fitted[library]
    folder = _bundle(tmp_path, tables, lambda f: joblib.dump(model, f / "model.joblib"))
    report = audit(folder, WITH_REFITS)
    assert report.containment.get("sandbox", True) is not False
    assert report.target.estimator_class == type(model).__name__
    assert _auc(report, "threshold") >= _no_training_auc(model, *tables, [0, 1]) - 0.03
    assert {"rmia", "rmia_offline"} <= {row.attack_model for row in report.results}  # refits ran, confined


@pytest.mark.parametrize(
    ("library", "name", "save"),
    [
        ("xgboost", "model.json", lambda m, p: m.get_booster().save_model(p)),
        ("lightgbm", "model.txt", lambda m, p: m.booster_.save_model(p)),
        ("catboost", "model.cbm", lambda m, p: m.save_model(p)),
    ],
)
def test_a_native_file_is_audited_with_the_class_names_config_gives(
    tmp_path, tables, fitted, library, name, save
):
    model = fitted[library]
    named = [pd.DataFrame(t).assign(income=t["income"].map({0: "low", 1: "high"})) for t in tables]
    folder = _bundle(tmp_path, named, lambda f: save(model, f / name), {"classes": ["low", "high"]})
    report = audit(folder, QUICK)
    assert report.target.estimator_class == type(model).__name__
    assert sorted(c.label for c in report.per_class) == ["high", "low"]
    assert _auc(report, "threshold") >= _no_training_auc(model, *tables, [0, 1]) - 0.03


def test_the_xgboost_sample_is_audited_and_a_named_recipe_runs_the_reference_attacks():
    members, non_members = (pd.read_csv(SAMPLE / name) for name in ("train.csv", "subject.csv"))
    assert (SAMPLE / "model.json").stat().st_size < 1_000_000
    recipe = {"estimator": "XGBClassifier", "params": {"n_estimators": 30, "max_depth": 6}}
    report = audit(SAMPLE, WITH_REFITS | {"reference_recipe": recipe})
    native = xgboost.XGBClassifier()
    native.load_model(SAMPLE / "model.json")
    assert (
        _auc(report, "threshold") >= _no_training_auc(native, members, non_members, ["<=50K", ">50K"]) - 0.03
    )
    assert {"rmia", "rmia_offline"} <= {row.attack_model for row in report.results}
    assert report.settings["reference_recipe"] == recipe


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost"])
def test_wrappers_inside_a_pipeline_load_as_they_predict(tmp_path, tables, library):
    members, _ = tables
    pipeline = make_pipeline(StandardScaler(), _wrapper(library)).fit(members[COLUMNS], members["income"])
    for protocol in (2, 5):
        path = tmp_path / f"model{protocol}.pkl"
        path.write_bytes(pickle.dumps(pipeline, protocol=protocol))
        loaded = load_model(path).estimator
        assert np.array_equal(
            loaded.predict_proba(members[COLUMNS]), pipeline.predict_proba(members[COLUMNS])
        )


def test_native_recipes_come_from_the_saved_parameters(tmp_path, fitted):
    saved = {"xgb.json": lambda p: fitted["xgboost"].get_booster().save_model(p)}
    saved["lgbm.txt"] = lambda p: fitted["lightgbm"].booster_.save_model(p)
    saved["cat.cbm"] = lambda p: fitted["catboost"].save_model(p)
    recipes = {}
    for name, save in saved.items():
        save(tmp_path / name)
        recipes[name] = contained_clone(load_model(tmp_path / name).estimator).get_params()
    assert recipes["xgb.json"]["n_estimators"] == 40 and recipes["xgb.json"]["max_depth"] == 6
    assert recipes["xgb.json"]["n_jobs"] == 1 and recipes["xgb.json"]["base_score"] is None
    assert recipes["lgbm.txt"]["n_estimators"] == 40 and recipes["lgbm.txt"]["min_child_samples"] == 5
    assert recipes["cat.cbm"]["iterations"] == 40 and recipes["cat.cbm"]["depth"] == 6
    assert recipes["cat.cbm"]["allow_writing_files"] is False and recipes["cat.cbm"]["thread_count"] == 1


def test_a_wrapper_recipe_is_capped_at_its_fitted_rounds_and_kept_off_files(fitted):
    model = pickle.loads(pickle.dumps(fitted["catboost"]))
    model._init_params.update(iterations=10**9, train_dir="/elsewhere")  # as a pickle's state may declare
    recipe = contained_clone(model).get_params()
    assert recipe["iterations"] == 40 and recipe["train_dir"] == "catboost_info"
    lgbm = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1, forcedsplits_filename="/etc/passwd")
    with pytest.raises(MiaError) as caught:
        contained_clone(lgbm)
    assert caught.value.code == "unsafe_recipe" and "forcedsplits_filename" in str(caught.value)


def test_the_what_if_plans_the_boosting_libraries_knobs(fitted):
    for model, knob in ((fitted["xgboost"], "max_depth"), (fitted["lightgbm"], "num_leaves")):
        plan = plan_for(model)
        assert plan.family == "boosting" and knob in {c.parameter for c in plan.configs}
    plan = plan_for(fitted["catboost"])
    assert plan.estimator_class == "CatBoostClassifier" and "depth" in {c.parameter for c in plan.configs}


# ---- hostile variants -------------------------------------------------------------------------------


class _Payload:
    """Pickles as a call of ``function`` with ``arguments``: what a hostile model file carries."""

    def __init__(self, function, arguments) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self):
        return self.function, self.arguments


@pytest.mark.parametrize("library", ["xgboost", "lightgbm", "catboost"])
@pytest.mark.parametrize("payload", ["os.system", "subprocess.Popen", "builtins.eval"])
def test_a_wrapper_pickle_with_a_code_payload_is_refused(tmp_path, fitted, library, payload):
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    calls = {
        "os.system": (os.system, (command,)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
        "builtins.eval": (eval, (f"open({str(marker)!r}, 'w')",)),
    }
    model = pickle.loads(pickle.dumps(fitted[library]))
    # where each class's own pickling puts what it holds: CatBoost pickles its parameters, not __dict__
    holder = model._init_params if library == "catboost" else model.__dict__
    holder["hook"] = _Payload(*calls[payload])
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(MiaError) as caught:
        load_model(path)
    assert caught.value.code == "unsafe_model" and payload.split(".")[1] in str(caught.value)
    assert not marker.exists()


def _pickled_with_booster_state(folder: Path, model, booster: type, forge) -> Path:
    """``model`` pickled to ``folder/model.pkl`` with each ``booster`` object's saved state replaced by
    ``forge(state)`` (a hostile file that rebuilds the booster from state its library never writes)."""

    class Forging(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) is booster:
                return copyreg.__newobj__, (booster,), forge(obj.__getstate__())
            return NotImplemented

    path = folder / "model.pkl"
    with open(path, "wb") as handle:
        Forging(handle, protocol=4).dump(model)
    return path


def test_a_booster_whose_saved_model_is_not_the_libraries_own_type_is_refused(tmp_path, fitted):
    path = _pickled_with_booster_state(
        tmp_path, fitted["xgboost"], xgboost.core.Booster, lambda state: {"handle": b"bytes, not a bytearray"}
    )
    with pytest.raises(MiaError) as caught:
        load_model(path)
    assert caught.value.code == "unsafe_model" and "not bytearray" in str(caught.value)


@pytest.mark.parametrize("name", ["model.json", "model.ubj", "model.txt", "model.cbm"])
def test_a_native_named_file_that_is_a_pickle_is_refused_unread(tmp_path, name):
    marker = tmp_path / "ran"
    (tmp_path / name).write_bytes(pickle.dumps(_Payload(os.system, (f"touch {marker}",))))
    with pytest.raises(MiaError) as caught:
        load_model(tmp_path / name)
    assert caught.value.code == "corrupt_model" and "looks like a pickle" in str(caught.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "save"),
    [
        ("model.json", lambda m, p: m["xgboost"].get_booster().save_model(p)),
        ("model.ubj", lambda m, p: m["xgboost"].get_booster().save_model(p)),
        ("model.txt", lambda m, p: m["lightgbm"].booster_.save_model(p)),
        ("model.cbm", lambda m, p: m["catboost"].save_model(p)),
    ],
)
def test_a_truncated_native_file_is_corrupt_not_a_crash(tmp_path, fitted, name, save):
    path = tmp_path / name
    save(fitted, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) // 5):
        path.write_bytes(data[:cut])
        with pytest.raises(MiaError) as caught:
            load_model(path)
        assert caught.value.code == "corrupt_model", cut


def test_a_truncated_native_file_in_a_bundle_is_corrupt_in_the_sandbox(tmp_path, tables, fitted):
    def write(folder: Path) -> None:
        fitted["lightgbm"].booster_.save_model(folder / "model.txt")
        text = (folder / "model.txt").read_bytes()
        (folder / "model.txt").write_bytes(text[: len(text) // 3])

    with pytest.raises(MiaError) as caught:
        audit(_bundle(tmp_path, tables, write), QUICK)
    assert caught.value.code == "corrupt_model"


def test_class_names_must_match_the_models_class_count(tmp_path, fitted):
    fitted["xgboost"].save_model(tmp_path / "model.json")
    with pytest.raises(MiaError) as caught:
        load_model(tmp_path / "model.json", classes=("a", "b", "c"))
    assert caught.value.code == "bad_classes" and "3 classes" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"estimator": "os.system"}, "names a class in os"),
        ({"estimator": "RandomForestRegressor"}, "not a classifier"),
        ({"estimator": "RandomForestClassifier", "params": {"nope": 1}}, "does not have"),
    ],
)
def test_a_reference_recipe_the_audit_cannot_build_is_refused_before_any_work(tables, fitted, value, words):
    members, non_members = tables
    with pytest.raises(MiaError) as caught:
        audit_estimator(fitted["lightgbm"], members, non_members, **QUICK, reference_recipe=value)
    assert caught.value.code == "bad_reference_recipe" and words in str(caught.value)


@pytest.mark.parametrize(
    "value",
    [
        {"estimator": "X", "params": {"a": {"nested": 1}}},
        {"estimator": "a b"},
        {"params": {}},
        ["XGBClassifier"],
    ],
)
def test_a_reference_recipe_option_takes_a_class_name_and_plain_values(value):
    with pytest.raises(MiaError) as caught:
        options_from_mapping({"reference_recipe": value})
    assert caught.value.code == "bad_option"


class _NoRecipe:
    """A classifier that is no estimator (as an ONNX graph's adapter is): answers, but has no recipe."""

    def __init__(self, model) -> None:
        self.classes_ = model.classes_
        self.n_features_in_ = model.n_features_in_
        self._model = model

    def predict_proba(self, features):
        return self._model.predict_proba(features)

    def predict(self, features):
        return self.classes_[self.predict_proba(features).argmax(axis=1)]


def test_a_model_without_a_recipe_leaves_lira_and_rmia_out_unless_config_names_one(tables, fitted):
    members, non_members = tables
    adapter = _NoRecipe(fitted["lightgbm"])
    report = audit_estimator(adapter, members, non_members, **WITH_REFITS, label_column="income")
    assert {row.attack_model for row in report.results} == {"threshold"}
    assert any(
        "rmia were left out" in warning and "reference_recipe" in warning for warning in report.warnings
    )
    recipe = {"estimator": "LGBMClassifier", "params": {"n_estimators": 20, "verbose": -1}}
    report = audit_estimator(
        adapter, members, non_members, **WITH_REFITS, label_column="income", reference_recipe=recipe
    )
    assert {"rmia", "rmia_offline"} <= {row.attack_model for row in report.results}


def test_the_bundle_finds_a_native_model_file_and_leaves_a_nested_bundle_alone(tmp_path, fitted):
    from mia_robustness.bundle import open_bundle

    folder = tmp_path / "native"
    folder.mkdir()
    fitted["xgboost"].save_model(folder / "booster.json")
    for name in ("train.csv", "subject.csv", "README.txt", "config.json"):
        (folder / name).write_text("{}" if name == "config.json" else "a,b\n1,2\n")
    with open_bundle(folder) as bundle:
        assert bundle.model_path.name == "booster.json"  # not config.json, not README.txt
    with open_bundle(SAMPLE.parent) as outer, open_bundle(SAMPLE) as inner:
        assert outer.model_path.name == "model.joblib" and outer.members_path.parent == SAMPLE.parent
        assert inner.model_path.name == "model.json" and inner.config["classes"] == ["<=50K", ">50K"]


def test_a_lightgbm_pickle_whose_model_text_is_cut_short_is_refused_before_lightgbm_parses_it(
    tmp_path, fitted
):
    path = _pickled_with_booster_state(
        tmp_path,
        fitted["lightgbm"],
        lightgbm.basic.Booster,
        lambda state: state | {"_handle": state["_handle"][:500]},
    )
    with pytest.raises(MiaError) as caught:
        load_model(path)
    assert caught.value.code == "unsafe_model" and "cut short" in str(caught.value)


def test_a_native_file_with_text_labels_is_checked_and_packed_with_its_class_names(tmp_path, tables, fitted):
    """`mia-robustness bundle --classes`: the check reads the file with the names, and config.json keeps them."""
    import json
    import zipfile

    from mia_robustness.bundle_check import check_bundle, make_bundle

    named = [pd.DataFrame(t).assign(income=t["income"].map({0: "low", 1: "high"})) for t in tables]
    folder = _bundle(
        tmp_path / "parts", named, lambda f: fitted["xgboost"].get_booster().save_model(f / "model.json")
    )
    parts = (folder / "model.json", folder / "train.csv", folder / "subject.csv")
    with pytest.raises(MiaError) as caught:  # without the names, the text labels are unknown to the model
        make_bundle(*parts, tmp_path / "unnamed.zip", label_column="income", rows=50)
    assert caught.value.code == "unknown_label"
    checked = make_bundle(*parts, tmp_path / "b.zip", label_column="income", classes="low,high", rows=50)
    assert checked is not None and checked.n_classes == 2
    with zipfile.ZipFile(tmp_path / "b.zip") as packed:
        assert json.loads(packed.read("config.json"))["classes"] == ["low", "high"]
    assert check_bundle(tmp_path / "b.zip", rows=50).n_classes == 2  # the packed bundle checks with its names
