"""Safe model loading: honest models load and predict identically; hostile files are refused unrun."""

from __future__ import annotations

import copyreg
import gzip
import importlib
import os
import pickle
import re
import subprocess
import warnings
import zipfile

import joblib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import sklearn
import skops.io as sio
from scipy.stats import uniform
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import (
    AdaBoostClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, SplineTransformer, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from builders import REPO_ROOT, adult_frame, needs_adult
from mia_robustness.errors import LimitError, ModelError, UnsafeModelError
from mia_robustness.loading import MODEL_SUFFIXES, _saved_version, load_model
from mia_robustness.loading.unpickle import _load_pickle

# ---------------------------------------------------------------------------------------------------
# Honest models


def _numeric_data():
    rng = np.random.default_rng(0)
    features = np.abs(rng.normal(size=(120, 4)))
    labels = (features[:, 0] + rng.normal(scale=0.5, size=120) > 0.8).astype(int)
    return features, labels


def _frame_data():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "colour": rng.choice(["red", "green", "blue"], 120).astype(object),
            "size": rng.choice(["S", "M", "L"], 120).astype(object),
            "weight": rng.normal(size=120),
        }
    )
    labels = ((frame["colour"] == "red") ^ (frame["weight"] > 0.5)).astype(int).to_numpy()
    return frame, labels


def _frame_pipeline():
    columns = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), ["colour", "size"]),
            ("numbers", StandardScaler(), ["weight"]),
        ]
    )
    return Pipeline(
        [("columns", columns), ("forest", RandomForestClassifier(n_estimators=8, random_state=0))]
    )


HONEST = {
    "tree": lambda: DecisionTreeClassifier(random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=8, random_state=0),
    "extra_trees": lambda: ExtraTreesClassifier(n_estimators=8, random_state=np.random.RandomState(0)),
    "adaboost": lambda: AdaBoostClassifier(n_estimators=5, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=5, random_state=0),
    "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(max_iter=5, random_state=0),
    "logistic": lambda: LogisticRegression(),
    "svc": lambda: SVC(probability=True, random_state=0),
    "knn": lambda: KNeighborsClassifier(),
    "gaussian_nb": lambda: GaussianNB(),
    "mlp": lambda: MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0),
    "calibrated": lambda: CalibratedClassifierCV(cv=3),
    "dummy": lambda: DummyClassifier(strategy="prior"),
    "log1p_pipeline": lambda: make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()),
    "frame_pipeline": _frame_pipeline,
}


@pytest.fixture(scope="module")
def fitted():
    """name -> (fitted model, the X it predicts on)."""
    features, labels = _numeric_data()
    frame, frame_labels = _frame_data()
    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP convergence on 30 iterations
        for name, make in HONEST.items():
            data, target = (frame, frame_labels) if name == "frame_pipeline" else (features, labels)
            models[name] = (make().fit(data, target), data)
    return models


def _save(model, path, how):
    if how == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(model, handle)
    elif how == "joblib":
        joblib.dump(model, path)
    elif how == "joblib_zlib3":
        joblib.dump(model, path, compress=3)
    elif how == "joblib_lzma3":
        joblib.dump(model, path, compress=("lzma", 3))
    elif how == "joblib_gzip":
        joblib.dump(model, path, compress=("gzip", 3))
    elif how == "joblib_bz2":
        joblib.dump(model, path, compress=("bz2", 3))
    elif how == "skops":
        sio.dump(model, path)
    else:
        raise ValueError(how)
    return path


def _assert_same_predictions(original, loaded, data):
    """``loaded`` (what load_model returned) holds an estimator that predicts as ``original`` does."""
    estimator = loaded.estimator
    assert type(estimator) is type(original)
    np.testing.assert_array_equal(estimator.predict_proba(data), original.predict_proba(data))
    np.testing.assert_array_equal(estimator.predict(data), original.predict(data))


@pytest.mark.parametrize("how", ["pickle", "joblib", "skops"])
@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_model_round_trips(tmp_path, fitted, name, how):
    model, data = fitted[name]
    suffix = ".skops" if how == "skops" else (".pkl" if how == "pickle" else ".joblib")
    loaded = load_model(_save(model, tmp_path / f"model{suffix}", how))
    _assert_same_predictions(model, loaded, data)
    assert loaded.saved_version == sklearn.__version__


@pytest.mark.parametrize("how", ["joblib_zlib3", "joblib_lzma3", "joblib_gzip", "joblib_bz2"])
@pytest.mark.parametrize("name", ["frame_pipeline", "hist_gradient_boosting", "extra_trees"])
def test_compressed_joblib_round_trips(tmp_path, fitted, name, how):
    model, data = fitted[name]
    _assert_same_predictions(model, load_model(_save(model, tmp_path / "model.joblib", how)), data)


@pytest.mark.parametrize(
    ("how", "suffix"),
    [("joblib", ".pkl"), ("joblib_zlib3", ".pickle"), ("pickle", ".joblib"), ("skops", ".pkl")],
)
def test_format_found_by_content_not_name(tmp_path, fitted, how, suffix):
    model, data = fitted["frame_pipeline"]
    _assert_same_predictions(model, load_model(_save(model, tmp_path / f"model{suffix}", how)), data)


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_old_pickle_protocols_load(tmp_path, fitted, protocol):
    # protocol 0 rebuilds objects with copyreg._reconstructor, protocol 2 stores bytes via _codecs.encode
    model, data = fitted["frame_pipeline"]
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=protocol))
    _assert_same_predictions(model, load_model(path), data)


def test_numpy1_module_names_load(tmp_path, fitted):
    # numpy 1.x pickles name numpy.core.multiarray; protocol 0 is text, so the names can be rewritten
    model, data = fitted["logistic"]
    raw = pickle.dumps(model, protocol=0)
    assert b"numpy._core.multiarray" in raw
    path = tmp_path / "model.pkl"
    path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # numpy 2's numpy.core shim warns
        _assert_same_predictions(model, load_model(path), data)


def test_gzip_wrapped_plain_pickle_loads(tmp_path, fitted):
    model, data = fitted["tree"]
    path = tmp_path / "model.pkl"
    with gzip.open(path, "wb") as handle:
        pickle.dump(model, handle)
    _assert_same_predictions(model, load_model(path), data)


@needs_adult
def test_adult_pipeline_with_string_categories(tmp_path):
    frame = adult_frame(600, seed=3)
    labels = frame.pop("income").astype(str)
    numeric = list(frame.select_dtypes("number").columns)
    categorical = [c for c in frame.columns if c not in numeric]  # pandas' str dtype, not object
    model = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("cat", OneHotEncoder(handle_unknown="ignore"), categorical),
                        ("num", StandardScaler(), numeric),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=10, random_state=0)),
        ]
    ).fit(frame, labels)
    for how in ("joblib", "pickle", "joblib_zlib3"):
        _assert_same_predictions(model, load_model(_save(model, tmp_path / f"{how}.joblib", how)), frame)


def test_sparse_search_and_spline_models_load(tmp_path):
    features, labels = _numeric_data()
    models = [
        KNeighborsClassifier().fit(sp.csr_matrix(features), labels),  # scipy sparse training data
        GridSearchCV(LogisticRegression(), {"C": [0.5, 2.0]}, cv=3, scoring="roc_auc").fit(features, labels),
        make_pipeline(SplineTransformer(n_knots=4), LogisticRegression()).fit(features, labels),  # BSpline
    ]
    for index, model in enumerate(models):
        for how in ("joblib", "skops"):
            data = sp.csr_matrix(features) if index == 0 else features
            _assert_same_predictions(model, load_model(_save(model, tmp_path / f"m{index}.{how}", how)), data)


def test_search_holding_scipy_distributions_is_refused_with_hint(tmp_path):
    features, labels = _numeric_data()
    search = RandomizedSearchCV(LogisticRegression(), {"C": uniform(0.5, 2)}, n_iter=2, cv=3, random_state=0)
    path = _save(search.fit(features, labels), tmp_path / "model.joblib", "joblib")
    with pytest.raises(UnsafeModelError, match="best_estimator_") as info:
        load_model(path)
    assert "scipy.stats._distn_infrastructure.rv_continuous_frozen" in info.value.message


@pytest.mark.parametrize("how", ["joblib", "skops"])
def test_vectorizer_reading_files_is_refused(tmp_path, how):
    reads_files = make_pipeline(TfidfVectorizer(input="filename"), LogisticRegression())
    with pytest.raises(UnsafeModelError, match="input='filename'"):
        load_model(_save(reads_files, tmp_path / f"model.{how}", how))
    texts = ["red apple", "green pear", "red cherry", "yellow pear"] * 5
    honest = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0] * 5)
    _assert_same_predictions(honest, load_model(_save(honest, tmp_path / f"ok.{how}", how)), texts)


def test_model_suffixes_are_the_ones_the_readme_lists():
    readme = (REPO_ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| exactly one `*."))
    assert tuple(re.findall(r"`\*(\.\w+)`", row)) == MODEL_SUFFIXES  # bundle.py finds the model by them


# ---------------------------------------------------------------------------------------------------
# The saved scikit-learn version


def test_saved_version_is_read_from_the_file(tmp_path, fitted):
    model, _ = fitted["tree"]
    raw = pickle.dumps(model)
    current = sklearn.__version__.encode()
    old = b"0.24.2"[: len(current)].ljust(len(current), b"0")  # same length keeps the pickle valid
    assert raw.count(current) == 1
    path = tmp_path / "model.pkl"
    path.write_bytes(raw.replace(current, old))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # InconsistentVersionWarning, on purpose
        loaded = load_model(path)
    assert loaded.saved_version == old.decode()
    assert "_sklearn_version" not in vars(loaded.estimator)  # sklearn pops it: the loader notes it


def test_saved_version_unknown_and_pipeline_steps(tmp_path, fitted):
    model, _ = fitted["tree"]
    assert _saved_version(model, []) is None  # never saved
    assert _saved_version(object(), []) is None
    loaded_tree, noted = _load_pickle(_save(model, tmp_path / "tree.joblib", "joblib"), None)
    assert _saved_version(model, noted) is None  # noted for the loaded tree, not for another object
    assembled = Pipeline([("scale", StandardScaler()), ("tree", loaded_tree)])
    assert _saved_version(assembled, noted) == sklearn.__version__  # found in a step


# ---------------------------------------------------------------------------------------------------
# Bad files


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ModelError) as info:
        load_model(tmp_path / "absent.pkl")
    assert info.value.code == "missing_model"
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(ModelError) as info:
        load_model(tmp_path / "empty.pkl")
    assert info.value.code == "corrupt_model"


@pytest.mark.parametrize("how", ["pickle", "joblib", "joblib_zlib3", "joblib_lzma3"])
def test_truncated_files_are_corrupt(tmp_path, fitted, how):
    model, _ = fitted["frame_pipeline"]
    path = _save(model, tmp_path / "model.joblib", how)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.code == "corrupt_model"
    assert "model.joblib" in info.value.message


@pytest.mark.parametrize(
    "content",
    [b"not a pickle at all\n", b"\x80\x05\xff\xff\xff", b"\x00" * 64, b"a,b\n1,2\n", b"\x80\x05K\x01"],
)
def test_garbage_is_corrupt(tmp_path, content):
    path = tmp_path / "model.pkl"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.code == "corrupt_model"


def test_zip_that_is_not_skops_is_corrupt(tmp_path):
    path = tmp_path / "model.skops"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.code == "corrupt_model"


def test_objects_that_are_no_classifier_are_refused(tmp_path, fitted):
    features, labels = _numeric_data()
    for obj, expected in [
        ({"a": 1}, "dict, which has none of predict_proba, decision_function, predict"),
        (StandardScaler().fit(features), "StandardScaler, a transformer"),
    ]:
        path = tmp_path / "model.pkl"
        joblib.dump(obj, path)
        with pytest.raises(ModelError) as info:
            load_model(path)
        assert info.value.code == "not_a_classifier"
        assert expected in info.value.message
    # A classifier without predict_proba is audited on its margins (target.py): the loader admits it.
    joblib.dump(SVC().fit(features, labels), tmp_path / "svc.pkl")
    assert not hasattr(load_model(tmp_path / "svc.pkl").estimator, "predict_proba")


def test_module_missing_from_this_sklearn_is_incompatible(tmp_path, fitted):
    model, _ = fitted["tree"]
    raw = pickle.dumps(model, protocol=0)  # text names: a 0.22-era module path can be written in
    path = tmp_path / "model.pkl"
    path.write_bytes(raw.replace(b"sklearn.tree._classes", b"sklearn.tree.tree_old"))
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert info.value.code == "incompatible_model"
    assert "sklearn.tree.tree_old" in info.value.message


def test_expansion_limit(tmp_path, fitted):
    model, _ = fitted["forest"]
    path = _save(model, tmp_path / "model.joblib", "joblib_zlib3")
    with pytest.raises(LimitError) as info:
        load_model(path, max_bytes=path.stat().st_size)  # expands well beyond its compressed size
    assert info.value.code == "model_too_large"


# ---------------------------------------------------------------------------------------------------
# Hostile files: each payload would create ``marker``; none may.


class Payload:
    """Pickles as ``func(*args)``: what a hostile model file runs on ``pickle.load``."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch_code(marker):
    return f"open({str(marker)!r}, 'w').close()"


def _os_system_protocol0(marker):
    # ``os.system`` pickles as posix.system; a hand-written stream can name os.system directly
    return f"cos\nsystem\n(V touch {marker}\ntR.".encode()


def _getattr_gadget(marker):
    # getattr(__import__('os'), 'system')('touch ...') in protocol 0
    return (f"cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vtouch {marker}\ntR.").encode()


HOSTILE = {
    "os_system_raw": (lambda m, t: _os_system_protocol0(m), ["os.system"]),
    "posix_system": (lambda m, t: pickle.dumps(Payload(os.system, f"touch {m}")), ["posix.system"]),
    "subprocess_popen": (
        lambda m, t: pickle.dumps(Payload(subprocess.Popen, ["touch", str(m)])),
        ["subprocess.Popen"],
    ),
    "exec": (lambda m, t: pickle.dumps(Payload(exec, _touch_code(m))), ["builtins.exec"]),
    "eval": (lambda m, t: pickle.dumps(Payload(eval, _touch_code(m))), ["builtins.eval"]),
    "eval_via_copyreg": (
        lambda m, t: pickle.dumps(
            Payload(copyreg._reconstructor, DecisionTreeClassifier, Payload(eval, _touch_code(m)), None)
        ),
        ["builtins.eval"],
    ),
    "compile_and_exec_nested_in_estimator": (
        lambda m, t: pickle.dumps(
            _estimator_with(Payload(exec, Payload(compile, _touch_code(m), "x", "exec")))
        ),
        ["builtins.exec", "builtins.compile"],
    ),
    "getattr_gadget": (lambda m, t: _getattr_gadget(m), ["builtins.getattr", "builtins.__import__"]),
    "import_module": (
        lambda m, t: pickle.dumps(Payload(importlib.import_module, "pwn_module_for_test")),
        ["importlib.import_module"],
    ),
    "payload_in_classes_list": (
        lambda m, t: pickle.dumps(_estimator_with([Payload(os.system, f"touch {m}")])),
        ["posix.system"],
    ),
    "payload_as_pipeline_step": (
        lambda m, t: pickle.dumps(
            Pipeline([("evil", Payload(os.system, f"touch {m}")), ("tree", DecisionTreeClassifier())])
        ),
        ["posix.system"],
    ),
    "numpy_load_unpickles": (
        lambda m, t: pickle.dumps(Payload(np.load, str(t / "x.npy"), None, True)),
        ["numpy.load"],
    ),
    "sklearn_dataset_writer": (
        lambda m, t: pickle.dumps(
            Payload(sklearn.datasets.dump_svmlight_file, np.ones((2, 2)), np.ones(2), str(m))
        ),
        ["sklearn.datasets._svmlight_format_io.dump_svmlight_file"],
    ),
    "sklearn_export_writer": (
        lambda m, t: pickle.dumps(
            Payload(sklearn.tree.export_graphviz, DecisionTreeClassifier().fit([[0], [1]], [0, 1]), str(m))
        ),
        ["sklearn.tree._export.export_graphviz"],
    ),
    "reexported_partial": (
        lambda m, t: b"csklearn.model_selection._search\npartial\n.",
        ["sklearn.model_selection._search.partial"],
    ),
    "reexported_parallel": (
        lambda m, t: b"csklearn.ensemble._forest\nParallel\n.",
        ["sklearn.ensemble._forest.Parallel"],
    ),
    "module_object": (lambda m, t: b"csklearn.base\nnp\n.", ["sklearn.base.np"]),
    "dotted_name": (
        lambda m, t: b"csklearn.base\nBaseEstimator.__setattr__\n.",
        ["sklearn.base.BaseEstimator.__setattr__"],
    ),
    "old_joblib_companion_files": (
        lambda m, t: pickle.dumps(Payload(joblib.numpy_pickle_compat.NDArrayWrapper, "x.npy", np.ndarray)),
        ["joblib.numpy_pickle_compat.NDArrayWrapper"],
    ),
    "build_on_class": (
        # BUILD on the DecisionTreeClassifier class with slot state would replace its predict_proba
        lambda m, t: b"csklearn.tree._classes\nDecisionTreeClassifier\n(N(Vpredict_proba\nNdtb.",
        ["setting attributes of sklearn.tree._classes.DecisionTreeClassifier"],
    ),
}


def _estimator_with(value):
    tree = DecisionTreeClassifier().fit([[0], [1]], [0, 1])
    tree.classes_ = value
    return tree


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_pickle_is_refused_unrun(tmp_path, name, monkeypatch):
    marker = tmp_path / "pwned"
    # the module import_module would run touches the marker when imported
    (tmp_path / "pwn_module_for_test.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    build, names = HOSTILE[name]
    path = tmp_path / "model.pkl"
    path.write_bytes(build(marker, tmp_path))
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    assert info.value.code == "unsafe_model"
    for global_name in names:
        assert global_name in info.value.message
    assert "model.pkl" in info.value.message and "skops" in info.value.message
    assert not marker.exists()
    assert "predict_proba" in vars(sklearn.tree._classes.DecisionTreeClassifier)  # nothing was rebound


def test_extension_registry_goes_through_the_gate(tmp_path):
    marker = tmp_path / "pwned"
    copyreg.add_extension("builtins", "exec", 0xF1)
    try:
        raw = pickle.dumps(Payload(exec, _touch_code(marker)), protocol=2)
        assert b"\x82\xf1" in raw  # EXT1 opcode, not a GLOBAL
        path = tmp_path / "model.pkl"
        path.write_bytes(raw)
        with pytest.raises(UnsafeModelError, match="builtins.exec"):
            load_model(path)
    finally:
        copyreg.remove_extension("builtins", "exec", 0xF1)
    assert not marker.exists()


@pytest.mark.parametrize("compress", [0, 3, ("lzma", 3)])
@pytest.mark.parametrize("where", ["top", "classes_list", "object_array"])
def test_hostile_joblib_is_refused_unrun(tmp_path, compress, where):
    marker = tmp_path / "pwned"
    payload = Payload(os.system, f"touch {marker}")
    if where == "top":
        obj = payload
    elif where == "classes_list":
        obj = _estimator_with([payload])
    else:
        # joblib writes object arrays as a nested pickle stream after the main one
        obj = _estimator_with(np.array([payload, "b"], dtype=object))
    path = tmp_path / "model.joblib"
    joblib.dump(obj, path, compress=compress)
    with pytest.raises(UnsafeModelError, match=r"posix\.system"):
        load_model(path)
    assert not marker.exists()


class SetstateTouches:
    """A custom class whose state-setting creates ``marker``; skops would call it when loading."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()


@pytest.mark.parametrize("evil", ["custom_class", "os_function"])
def test_hostile_skops_is_refused_unrun(tmp_path, evil):
    marker = tmp_path / "pwned"
    if evil == "custom_class":
        model = _estimator_with(None)
        model.extra_ = SetstateTouches(marker)
        expected = "SetstateTouches"
    else:
        model = make_pipeline(FunctionTransformer(os.system), LogisticRegression())
        expected = "posix.system"
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    with pytest.raises(UnsafeModelError) as info:
        load_model(path)
    assert expected in info.value.message
    assert not marker.exists()


@pytest.mark.parametrize("field", ["left_child", "right_child", "feature"])
def test_a_tree_whose_nodes_point_out_of_range_is_refused(tmp_path, field):
    """Native prediction code trusts node indices; a damaged pickle must not reach it (fuzzing crashed it)."""
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    from mia_robustness.errors import ModelError
    from mia_robustness.loading import load_model

    X = np.random.default_rng(0).random((200, 4))
    model = DecisionTreeClassifier(random_state=0).fit(X, (X[:, 0] > 0.5).astype(int))
    state = model.tree_.__getstate__()
    state["nodes"][field][0] = 10**6
    model.tree_.__setstate__(state)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(ModelError) as caught:
        load_model(path)
    assert caught.value.code == "corrupt_model" and "tree structure is damaged" in caught.value.message
