"""Refits reopen nothing loading closed: the recipe LiRA / RMIA retrain passes the model file's gate.

Each hostile model here is a real, small scikit-learn model fitted on real rows, then (where a file could
say so) edited the way a crafted file would be; the tests drive the real reference stage with it.
"""

from __future__ import annotations

import functools
import os
import shutil
import time
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    BaggingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    StackingClassifier,
)
from sklearn.experimental import enable_halving_search_cv  # noqa: F401 - makes HalvingGridSearchCV importable
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import accuracy_score, make_scorer
from sklearn.model_selection import GridSearchCV, HalvingGridSearchCV, RandomizedSearchCV
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, PolynomialFeatures, StandardScaler
from sklearn.svm import SVC

from builders import adult_frame, needs_adult, noisy_numeric_frame
from mia_robustness.attacks.reference import balanced_in_mask
from mia_robustness.errors import ModelError
from mia_robustness.loading import load_model
from mia_robustness.recipe import contained_clone
from mia_robustness.reference import fit_reference_confidences, run_reference_attacks

# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _rows(frame, label="label"):
    """(features, labels, is_member): the first half of ``frame`` are the members the model is fitted on."""
    features, labels = frame.drop(columns=label), frame[label].to_numpy()
    is_member = (np.arange(len(frame)) < len(frame) // 2).astype(int)
    return features, labels, is_member


def _fit(model, features, labels, is_member):
    return model.fit(features[is_member == 1], labels[is_member == 1])


def _confidence(model, features, labels):
    classes = np.unique(labels)
    return model.predict_proba(features)[np.arange(len(labels)), np.searchsorted(classes, labels)]


def _reference(model, features, labels, is_member, confidence=None, n_models=4):
    """The reference stage as the audit runs it (LiRA, one repeat, all known rows)."""
    classes = np.unique(labels)
    if confidence is None:
        confidence = _confidence(model, features, labels)
    return run_reference_attacks(
        model,
        features,
        labels,
        np.searchsorted(classes, labels),
        classes,
        confidence,
        is_member,
        attacks=("lira",),
        proportion=1.0,
        repeats=1,
        eval_fraction=0.3,
        n_models=n_models,
        seed=0,
        workers=2,
    )


def _children() -> set[int]:
    """Process ids whose parent is this process (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc", entry, "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == os.getpid():
                found.add(int(entry))
    return found


@pytest.fixture()
def worker_pools(monkeypatch):
    """The worker counts of every joblib Parallel run (scikit-learn's go through it) that used more than one."""
    started: list[int] = []
    original = joblib.Parallel.__call__

    def spy(self, iterable):
        workers = joblib.effective_n_jobs(self.n_jobs)
        if workers != 1:
            started.append(workers)
        return original(self, iterable)

    monkeypatch.setattr(joblib.Parallel, "__call__", spy)
    return started


def _every_param(model):
    """(path, value) of every parameter at any depth, lists of named estimators followed."""
    todo, found = [("", model)], []
    while todo:
        path, estimator = todo.pop()
        for key, value in estimator.get_params(deep=False).items():
            found.append((f"{path}{key}", value))
            if hasattr(value, "get_params"):
                todo.append((f"{path}{key}__", value))
            elif isinstance(value, list):
                todo += [
                    (f"{path}{entry[0]}__", entry[1]) for entry in value if hasattr(entry[1], "get_params")
                ]
    return found


# --------------------------------------------------------------------------------------------------
# a search's grid is never re-run
# --------------------------------------------------------------------------------------------------


def test_search_grid_naming_a_cache_folder_never_writes_there(tmp_path, worker_pools):
    """GridSearchCV over a Pipeline with param_grid {'memory': [folder]}: the refits must not cache there
    (joblib would later unpickle whatever sits in it with an unrestricted unpickler)."""
    features, labels, is_member = _rows(noisy_numeric_frame(400, seed=31))
    cache = tmp_path / "folder-the-file-names"
    pipeline = Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())])
    search = GridSearchCV(pipeline, {"memory": [str(cache)], "lr__C": [0.1, 1.0]}, cv=3)
    _fit(search, features, labels, is_member)
    assert search.best_estimator_.memory == str(cache)
    joblib.dump(search, tmp_path / "model.joblib")
    search = load_model(tmp_path / "model.joblib").estimator  # admitted: a grid of strings is data
    shutil.rmtree(cache)  # the target's own fit cached there: start empty
    cache.mkdir()
    before = _children()

    results = _reference(search, features, labels, is_member)

    assert list(cache.iterdir()) == []
    assert _children() <= before and worker_pools == []
    assert {r.attack for r in results} == {"lira", "lira_offline"}


@needs_adult
def test_search_grid_setting_n_jobs_starts_no_worker_pool(worker_pools):
    """A grid entry n_jobs=2 on a ColumnTransformer (a loky process pool) is not what the refits use."""
    frame = adult_frame(600, seed=5)
    features, labels, is_member = _rows(frame, label="income")
    numeric = ["age", "education_num", "hours_per_week"]
    prep = ColumnTransformer(
        [
            ("num", StandardScaler(), numeric),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["workclass", "marital_status", "occupation"]),
        ]
    )
    search = GridSearchCV(
        Pipeline([("prep", prep), ("lr", LogisticRegression(max_iter=500))]), {"prep__n_jobs": [2]}, cv=3
    )
    with joblib.parallel_config(backend="threading"):  # the target's own fit: threads, so no processes linger
        _fit(search, features, labels, is_member)
        confidence = _confidence(search, features, labels)  # the target itself still uses its pool
    worker_pools.clear()
    before = _children()

    results = _reference(search, features, labels, is_member, confidence)

    assert worker_pools == [], "a refit ran a joblib pool with more than one worker"
    assert _children() <= before, "a refit started child processes"
    assert len(results) == 2


@pytest.mark.parametrize(
    "search_class, space",
    [
        (GridSearchCV, "param_grid"),
        (RandomizedSearchCV, "param_distributions"),
        (HalvingGridSearchCV, "param_grid"),
    ],
)
def test_search_is_refit_from_its_best_estimator(search_class, space):
    """The refits of a search are those of its best_estimator_: same seed, same scores."""
    features, labels, is_member = _rows(noisy_numeric_frame(400, seed=32))
    search = search_class(
        RandomForestClassifier(random_state=0),
        **{space: {"n_estimators": [5, 15], "max_depth": [3, None]}},
        cv=3,
        **({"n_iter": 3, "random_state": 0} if search_class is RandomizedSearchCV else {}),
    )
    _fit(search, features, labels, is_member)
    confidence = _confidence(search, features, labels)
    template = contained_clone(search)
    assert type(template) is RandomForestClassifier
    assert template.get_params() == {**search.best_estimator_.get_params(), "n_jobs": 1}
    from_search = _reference(search, features, labels, is_member, confidence)
    from_best = _reference(search.best_estimator_, features, labels, is_member, confidence)
    assert [r.scores.tolist() for r in from_search] == [r.scores.tolist() for r in from_best]


def test_search_fitted_with_refit_false_is_refused_clearly():
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=33))
    search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3, refit=False)
    _fit(search, features, labels, is_member)
    with pytest.raises(ModelError) as caught:
        _reference(search, features, labels, is_member, confidence=np.full(len(labels), 0.5))
    assert caught.value.code == "search_not_refit"
    assert "best_estimator_" in caught.value.message and "lira" in caught.value.message


def test_nested_searches_are_their_best_estimators_or_refused(tmp_path):
    """In place (a Pipeline step) a fitted search is swapped for its best_estimator_; where its owner fitted
    copies (a StackingClassifier's estimators) there is none to take, and it is refused."""
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=34))
    cache = tmp_path / "cache"
    inner = GridSearchCV(
        Pipeline([("scale", StandardScaler()), ("lr", LogisticRegression())]),
        {"memory": [str(cache)], "lr__C": [0.1, 1.0]},
        cv=3,
    )
    outer = _fit(Pipeline([("poly", PolynomialFeatures(2)), ("search", inner)]), features, labels, is_member)
    template = contained_clone(outer)
    step = template.named_steps["search"]
    assert type(step) is Pipeline and step.memory is None
    assert outer.named_steps["search"].best_params_["lr__C"] == step.named_steps["lr"].C

    stack = StackingClassifier(
        [("search", GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3))], cv=3
    )
    _fit(stack, features, labels, is_member)
    with pytest.raises(ModelError) as caught:
        contained_clone(stack)
    assert caught.value.code == "search_not_refit" and "search" in caught.value.message


# --------------------------------------------------------------------------------------------------
# no cache, no pools, no printing, at any depth
# --------------------------------------------------------------------------------------------------


def test_memory_n_jobs_and_verbose_are_neutral_at_every_depth(tmp_path, worker_pools):
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=35))
    cache = tmp_path / "deep-cache"
    deep = Pipeline(
        [("scale", StandardScaler()), ("rf", RandomForestClassifier(5, n_jobs=2, verbose=2, random_state=0))],
        memory=str(cache),
        verbose=True,
    )
    model = StackingClassifier(
        [
            ("bag", BaggingClassifier(deep, n_estimators=2, n_jobs=2, random_state=0)),
            ("lr", LogisticRegression(verbose=1)),
        ],
        n_jobs=2,
        cv=3,
        verbose=1,
    )
    with joblib.parallel_config(backend="threading"):
        _fit(model, features, labels, is_member)
        confidence = _confidence(model, features, labels)  # the target itself still uses its pools
    template = contained_clone(model)
    params = _every_param(template)
    assert {path for path, _ in params if path.endswith("memory")} == {"bag__estimator__memory"}
    for path, value in params:
        name = path.rpartition("__")[2]
        if name == "memory":
            assert value is None, path
        elif name == "n_jobs":
            assert value == 1, path
        elif name == "verbose":
            assert not value, path
    shutil.rmtree(cache, ignore_errors=True)
    worker_pools.clear()

    _reference(model, features, labels, is_member, confidence, n_models=2)

    assert not cache.exists()
    assert worker_pools == []


# --------------------------------------------------------------------------------------------------
# callables: only what the loader admits
# --------------------------------------------------------------------------------------------------

_CALLED: list[object] = []


def _recording(values):
    _CALLED.append(values)
    return values


def _named_log1p(values):
    _CALLED.append(values)
    return values


_named_log1p.__module__, _named_log1p.__qualname__ = "numpy", "log1p"  # claims a name the gate admits


@pytest.mark.parametrize(
    "hostile",
    [
        _recording,
        lambda values: _recording(values),
        os.system,
        eval,
        functools.partial(np.tanh),
        [].copy,
        np.mean,
        _named_log1p,
    ],
    ids=["function", "lambda", "os.system", "eval", "partial", "bound-method", "numpy.mean", "spoofed-name"],
)
def test_a_callable_set_after_fitting_is_refused_uncalled(hostile):
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=36))
    model = Pipeline([("shape", FunctionTransformer(np.tanh)), ("lr", LogisticRegression())])
    _fit(model, features, labels, is_member)
    confidence = _confidence(model, features, labels)
    model.named_steps["shape"].func = hostile
    _CALLED.clear()
    with pytest.raises(ModelError) as caught:
        _reference(model, features, labels, is_member, confidence)
    assert caught.value.code == "unsafe_recipe"
    assert "shape__func" in caught.value.message
    assert "<" not in caught.value.message.replace("<lambda>", "").replace("<locals>", "")  # no reprs
    assert " at 0x" not in caught.value.message
    assert _CALLED == []


def test_a_score_function_or_scorer_holding_a_hostile_callable_is_refused():
    features, labels, is_member = _rows(noisy_numeric_frame(200, seed=37))
    model = _fit(SelectKBest(f_classif, k=3), features, labels, is_member)
    model.score_func = functools.partial(f_classif)
    with pytest.raises(ModelError) as caught:
        contained_clone(model)
    assert caught.value.code == "unsafe_recipe" and "score_func" in caught.value.message

    scored = LogisticRegressionCV(Cs=2, cv=3, scoring=make_scorer(accuracy_score))
    scored = _fit(scored, features, labels, is_member)
    assert contained_clone(scored).scoring is not None  # an admitted scorer passes
    scored.scoring._score_func = eval  # inside a scikit-learn object that is not an estimator
    with pytest.raises(ModelError) as caught:
        contained_clone(scored)
    assert caught.value.code == "unsafe_recipe" and "scoring" in caught.value.message


def test_admitted_callables_still_refit():
    """numpy ufuncs in the allowlist and scikit-learn's score functions and kernels pass the gate."""
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=38))
    from sklearn.metrics.pairwise import rbf_kernel

    model = Pipeline(
        [
            ("shape", FunctionTransformer(np.arcsinh, inverse_func=np.sinh)),
            ("select", SelectKBest(f_classif, k=4)),
            ("svc", SVC(kernel=rbf_kernel, probability=True, random_state=0, cache_size=4000)),
        ]
    )
    _fit(model, features, labels, is_member)
    template = contained_clone(model)
    assert template.named_steps["svc"].cache_size == 200  # a memory knob that never changes the result
    assert template.named_steps["shape"].func is np.arcsinh
    assert len(_reference(model, features, labels, is_member)) == 2


def test_error_messages_quote_names_sanitised_never_values():
    features, labels, is_member = _rows(noisy_numeric_frame(200, seed=39))
    step = "step\n\x1b[31mred" + "x" * 500
    model = Pipeline([(step, FunctionTransformer(np.tanh)), ("lr", LogisticRegression())])
    model = _fit(model, features, labels, is_member)
    model.steps[0][1].func = functools.partial(np.tanh, "a value the file chose")
    with pytest.raises(ModelError) as caught:
        _reference(model, features, labels, is_member, confidence=np.full(len(labels), 0.5))
    message = caught.value.message
    assert "a value the file chose" not in message and "\n" not in message and "\x1b" not in message
    assert len(message) < 600

    broken = _fit(LogisticRegression(), features, labels, is_member)
    broken.C = np.array(["secret text of the model"], dtype=object)  # clone works; fitting it fails
    with pytest.raises(ModelError) as caught:
        _reference(broken, features, labels, is_member, confidence=np.full(len(labels), 0.5))
    assert caught.value.code == "refit_failed" and "secret" not in caught.value.message


# --------------------------------------------------------------------------------------------------
# the recipe is no larger than what was fitted
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def forest_fit_sizes(monkeypatch):
    """n_estimators of every RandomForestClassifier fit; a fit of more than 1,000 trees fails at once."""
    sizes: list[int] = []
    original = RandomForestClassifier.fit

    def recording_fit(self, *args, **kwargs):
        sizes.append(self.n_estimators)
        if self.n_estimators > 1000:
            raise AssertionError(f"a refit of {self.n_estimators} trees")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RandomForestClassifier, "fit", recording_fit)
    return sizes


def test_a_forest_declaring_a_million_trees_is_refit_at_its_fitted_size(forest_fit_sizes):
    features, labels, is_member = _rows(noisy_numeric_frame(400, seed=40))
    model = _fit(RandomForestClassifier(n_estimators=2, random_state=0), features, labels, is_member)
    confidence = _confidence(model, features, labels)
    model.n_estimators = 10**6
    forest_fit_sizes.clear()
    started = time.perf_counter()

    results = _reference(model, features, labels, is_member, confidence)

    assert time.perf_counter() - started < 30
    assert forest_fit_sizes == [2] * 4 and len(results) == 2
    # one tree repeated (free in a pickle) is no evidence of a large fitted forest
    model.estimators_ = model.estimators_[:1] * 10**5
    forest_fit_sizes.clear()
    _reference(model, features, labels, is_member, confidence)
    assert forest_fit_sizes == [1] * 4


def test_ordinary_forest_refits_are_unchanged(forest_fit_sizes):
    features, labels, is_member = _rows(noisy_numeric_frame(400, seed=41))
    model = _fit(RandomForestClassifier(n_estimators=20, random_state=3), features, labels, is_member)
    template = contained_clone(model)
    assert template.get_params() == {**model.get_params(), "n_jobs": 1}
    forest_fit_sizes.clear()
    first = _reference(model, features, labels, is_member)
    again = _reference(model, features, labels, is_member)
    assert forest_fit_sizes == [20] * 8
    assert [r.scores.tolist() for r in first] == [r.scores.tolist() for r in again]


def test_iteration_and_width_knobs_are_capped_at_the_fitted_model():
    features, labels, is_member = _rows(noisy_numeric_frame(300, seed=42))
    boosted = _fit(
        HistGradientBoostingClassifier(max_iter=5, early_stopping=False), features, labels, is_member
    )
    boosted.max_iter = 10**6
    assert contained_clone(boosted).max_iter == 5  # no early stopping: the fitted count is the size
    boosted._predictors = boosted._predictors[:1] * 10**4  # one iteration repeated is no evidence
    assert contained_clone(boosted).max_iter == 1

    early = HistGradientBoostingClassifier(
        max_iter=300, early_stopping=True, n_iter_no_change=2, random_state=0
    )
    early = _fit(early, features, labels, is_member)
    assert early.n_iter_ < 300
    early.max_iter = 10**6
    assert contained_clone(early).max_iter == max(4 * early.n_iter_ + 10, 100)

    mlp = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0)
    mlp = _fit(mlp, features, labels, is_member)
    mlp.hidden_layer_sizes, mlp.max_iter = (10**5, 10**5), 10**7
    template = contained_clone(mlp)
    assert template.hidden_layer_sizes == (8,) and template.max_iter == 200

    poly = _fit(
        Pipeline([("poly", PolynomialFeatures(2)), ("lr", LogisticRegression())]), features, labels, is_member
    )
    poly.named_steps["poly"].degree = 40
    assert contained_clone(poly).named_steps["poly"].degree == 2

    classes = np.unique(labels)
    started = time.perf_counter()
    confidences = fit_reference_confidences(
        mlp,
        features,
        labels,
        np.searchsorted(classes, labels),
        classes,
        balanced_in_mask(2, len(labels), np.random.default_rng(0)),
        workers=2,
    )
    assert confidences.shape == (2, len(labels)) and time.perf_counter() - started < 30
