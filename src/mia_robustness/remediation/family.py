"""The what-if's table: which estimator classes it varies, which knob at which strengths, and the rules.

Everything here reads a recipe's hyperparameters, so for a bundle it runs in the sandbox child (where the
model is). What leaves the child is checked against this same table (``sandbox/stage.py``): parameter names
and rule ids only from it, values only ``int`` / ``float`` / ``bool`` / ``None``. A pipeline is varied at
its final step; its step's name (the user's text) is never reported, only our parameter name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.model_selection._search import BaseSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

from ..boosting import NamedClasses

Value = int | float | bool | None
# Searches nested in searches followed to the chosen estimator (the refit gate follows as many).
_MAX_SEARCHES = 50


@dataclass(frozen=True)
class Knob:
    """One regularising hyperparameter and the strengths tried.

    ``direction`` says which way regularises: ``up`` (a larger value), ``down`` (a smaller one; ``None``
    counts as unlimited) or ``on`` (``True``). With ``relative`` the strengths multiply the recipe's own
    value; otherwise they are the values themselves. ``needs`` names a boolean parameter that must be true
    (``bootstrap`` for ``max_samples``), or with a leading ``!`` false.
    """

    parameter: str
    strengths: tuple[float, ...]
    direction: str
    relative: bool = False
    integer: bool = False
    needs: str | None = None


_TREE = (
    Knob("min_samples_leaf", (5, 20), "up", integer=True),
    Knob("max_depth", (6, 12), "down", integer=True),
    Knob("ccp_alpha", (0.001, 0.01), "up"),
)
# The table is sized so the what-if (4 fits per config) costs at most what the reference stage does (12
# fits at the defaults; bench/RESULTS.md): knobs that cost a full fit per setting get one strength, cheap
# ones two. Forests: a forest per fit, so two settings, the strongest per unit of cost on Adult 1,500 +
# 1,500 (AUC change / cost of a fit against the default's): min_samples_leaf 20 (-0.24 / 0.7) and, where
# the trees bootstrap, max_samples 0.2 (-0.16 / 0.45); min_samples_leaf 5 (-0.15 / 0.9), max_depth 6
# (-0.17 / 0.6, 0.2 points of accuracy) and ccp_alpha (a whole forest grown, then pruned) cost more for
# less. Forests that do not bootstrap (extra-trees' default) get max_depth 8 instead of max_samples.
_FOREST = (
    Knob("min_samples_leaf", (20,), "up", integer=True),
    Knob("max_samples", (0.2,), "down", needs="bootstrap"),
    Knob("max_depth", (8,), "down", integer=True, needs="!bootstrap"),
)
_GRADIENT_BOOSTING = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("min_samples_leaf", (50,), "up", integer=True),
    Knob("subsample", (0.5,), "down"),
)
_HIST_BOOSTING = (
    Knob("max_iter", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("l2_regularization", (10.0,), "up"),
    Knob("min_samples_leaf", (100,), "up", integer=True),
)
# Asked for explicitly (what_if=true), the user accepts the cost: every knob the issue names, at two strengths.
_FOREST_THOROUGH = (
    Knob("min_samples_leaf", (5, 20), "up", integer=True),
    Knob("max_depth", (6, 12), "down", integer=True),
    Knob("ccp_alpha", (0.001, 0.01), "up"),
    Knob("max_samples", (0.5, 0.2), "down", needs="bootstrap"),
)
_GRADIENT_BOOSTING_THOROUGH = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("learning_rate", (0.5, 0.25), "down", relative=True),
    Knob("min_samples_leaf", (20, 50), "up", integer=True),
    Knob("subsample", (0.5, 0.25), "down"),
)
_HIST_BOOSTING_THOROUGH = (
    Knob("max_iter", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("learning_rate", (0.5, 0.25), "down", relative=True),
    Knob("l2_regularization", (1.0, 10.0), "up"),
    Knob("min_samples_leaf", (50, 100), "up", integer=True),
)
# The boosting libraries (rounds, depth or leaves, learning rate, subsampling, L2), sized as scikit-learn's
# boosting above: halving the rounds and one setting each of the cheap knobs by default. LightGBM samples
# rows only when subsample_freq > 0 as well, which one knob cannot set: its rows are not subsampled here.
_XGBOOST = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("max_depth", (3,), "down", integer=True),
    Knob("reg_lambda", (10.0,), "up"),
    Knob("subsample", (0.5,), "down"),
)
_XGBOOST_THOROUGH = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("learning_rate", (0.5, 0.25), "down", relative=True),
    Knob("max_depth", (4, 2), "down", integer=True),
    Knob("min_child_weight", (5.0, 20.0), "up"),
    Knob("subsample", (0.5, 0.25), "down"),
    Knob("reg_lambda", (10.0, 100.0), "up"),
)
_LIGHTGBM = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("num_leaves", (15,), "down", integer=True),
    Knob("min_child_samples", (50,), "up", integer=True),
    Knob("reg_lambda", (10.0,), "up"),
)
_LIGHTGBM_THOROUGH = (
    Knob("n_estimators", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("learning_rate", (0.5, 0.25), "down", relative=True),
    Knob("num_leaves", (15, 7), "down", integer=True),
    Knob("min_child_samples", (50, 100), "up", integer=True),
    Knob("reg_lambda", (10.0, 100.0), "up"),
)
_CATBOOST = (
    Knob("iterations", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("depth", (4,), "down", integer=True),
    Knob("l2_leaf_reg", (10.0,), "up"),
)
_CATBOOST_THOROUGH = (
    Knob("iterations", (0.5, 0.25), "down", relative=True, integer=True),
    Knob("learning_rate", (0.5, 0.25), "down", relative=True),
    Knob("depth", (4, 2), "down", integer=True),
    Knob("l2_leaf_reg", (10.0, 30.0), "up"),
)
# (module, class) -> (name, family, knobs, thorough knobs): by name, so that the libraries are imported
# only by a model that uses one; the class is still matched exactly (its own module and name).
BOOSTING_FAMILIES: dict[tuple[str, str], tuple[str, str, tuple[Knob, ...], tuple[Knob, ...]]] = {
    ("xgboost.sklearn", "XGBClassifier"): ("XGBClassifier", "boosting", _XGBOOST, _XGBOOST_THOROUGH),
    ("lightgbm.sklearn", "LGBMClassifier"): ("LGBMClassifier", "boosting", _LIGHTGBM, _LIGHTGBM_THOROUGH),
    ("catboost.core", "CatBoostClassifier"): (
        "CatBoostClassifier",
        "boosting",
        _CATBOOST,
        _CATBOOST_THOROUGH,
    ),
}
_INVERSE_C = (Knob("C", (0.1, 0.01), "down", relative=True),)
_ALPHA = (Knob("alpha", (10.0, 100.0), "up", relative=True),)
_MLP = (*_ALPHA, Knob("early_stopping", (1,), "on"))
_KNN = (Knob("n_neighbors", (5, 15, 30), "up", integer=True),)

# class -> (its name in reports, family, knobs). Matched by exact class, never by a name the model gives;
# the name is our own import's.
FAMILIES: dict[type, tuple[str, str, tuple[Knob, ...]]] = {
    cls: (cls.__name__, family, knobs)
    for family, knobs, classes in (
        ("tree", _TREE, (DecisionTreeClassifier, ExtraTreeClassifier)),
        ("forest", _FOREST, (RandomForestClassifier, ExtraTreesClassifier)),
        ("boosting", _GRADIENT_BOOSTING, (GradientBoostingClassifier,)),
        ("boosting", _HIST_BOOSTING, (HistGradientBoostingClassifier,)),
        ("linear", _INVERSE_C, (LogisticRegression, SVC, LinearSVC)),
        ("linear", _ALPHA, (SGDClassifier, RidgeClassifier)),
        ("mlp", _MLP, (MLPClassifier,)),
        ("knn", _KNN, (KNeighborsClassifier,)),
    )
    for cls in classes
}
# The knobs that replace a family's default ones when the what-if is asked for explicitly.
THOROUGH_KNOBS: dict[type, tuple[Knob, ...]] = {
    RandomForestClassifier: _FOREST_THOROUGH,
    ExtraTreesClassifier: _FOREST_THOROUGH,
    GradientBoostingClassifier: _GRADIENT_BOOSTING_THOROUGH,
    HistGradientBoostingClassifier: _HIST_BOOSTING_THOROUGH,
}
# Class name -> (its family, the parameters its knobs vary, in either table): what the parent holds a
# child's answer to.
CLASS_KNOBS: dict[str, tuple[str, frozenset[str]]] = {
    name: (family, frozenset(knob.parameter for knob in (*knobs, *THOROUGH_KNOBS.get(cls, ()))))
    for cls, (name, family, knobs) in FAMILIES.items()
} | {
    name: (family, frozenset(knob.parameter for knob in (*knobs, *thorough)))
    for name, family, knobs, thorough in BOOSTING_FAMILIES.values()
}


@dataclass(frozen=True)
class Rule:
    """A memorising hyperparameter setting: ``parameter`` at a value ``applies`` to, and ``why`` it leaks."""

    parameter: str
    why: str


# Rule id -> rule; the child sends ids and values, the parent takes the words from here.
RULES: dict[str, Rule] = {
    "leaf_of_one": Rule(
        "min_samples_leaf",
        "leaves may hold a single training row and nothing limits the depth, so each row can get a leaf of "
        "its own: the model can memorise its training rows",
    ),
    "no_depth_limit": Rule(
        "max_depth",
        "no depth limit with tiny leaves: trees grow until they separate every training row",
    ),
    "boosting_tiny_leaves": Rule(
        "min_samples_leaf",
        "boosting with leaves of a row or two fits single rows in the late rounds",
    ),
    "boosting_rounds": Rule(
        "learning_rate",
        "many rounds at a high learning rate drive the training loss toward zero, row by row",
    ),
    "nearest_one": Rule(
        "n_neighbors",
        "with one neighbour every training row predicts itself with full confidence",
    ),
    "huge_c": Rule(
        "C",
        "a very large C all but switches the regularisation off, so the fit bends to single rows",
    ),
    "tiny_alpha": Rule(
        "alpha",
        "a near-zero alpha all but switches the regularisation off, so the fit bends to single rows",
    ),
}
RULE_PARAMETERS = frozenset(rule.parameter for rule in RULES.values())
_HUGE_C = 100.0
_TINY_ALPHA = 1e-5
_MANY_ROUNDS = 300
_HIGH_LEARNING_RATE = 0.3


@dataclass(frozen=True)
class Config:
    """One recipe the what-if fits: the baseline (``parameter`` ``None``) or one knob at one strength."""

    name: str
    kind: str
    parameter: str | None
    value: Value


@dataclass(frozen=True)
class Plan:
    """What the what-if does with a recipe: its class and family (``None`` outside the table), the configs
    to fit (baseline first; empty outside the table), the rules that fire, as ``(id, value)``."""

    estimator_class: str | None
    family: str | None
    configs: tuple[Config, ...]
    rules: tuple[tuple[str, Value], ...]


def _chosen(model: Any) -> Any:
    """A fitted search's chosen estimator (what the refit gate retrains), or ``model`` itself."""
    for _ in range(_MAX_SEARCHES):
        if not isinstance(model, BaseSearchCV):
            break
        model = vars(model).get("best_estimator_")  # None after refit=False: outside the table
    return model


def final_step(model: Any) -> tuple[Any, str]:
    """The estimator a pipeline ends with (or ``model``), and the prefix its parameters take.

    A fitted search stands for its ``best_estimator_``, at the top or as the pipeline's final step, as in
    the recipe :func:`~mia_robustness.recipe.contained_clone` retrains (where the search is gone).
    """
    model = _chosen(model)
    if type(model) is Pipeline and model.steps:
        name, step = model.steps[-1]
        return _chosen(step), f"{name}__"
    if type(model) is NamedClasses:  # a native booster with class names: its booster is the recipe
        return model.estimator, "estimator__"
    return model, ""


def variant_name(parameter: str, value: Value) -> str:
    """``min_samples_leaf=20``, ``C=0.01``, ``early_stopping=True``: the name a variant goes by."""
    return f"{parameter}={value!r}" if isinstance(value, bool) else f"{parameter}={value:g}"


# Integers the report's JSON (and the parent's check of the child's answer) carries exactly.
MAX_EXACT_INT = 2**53


def plain(value: Any) -> Value:
    """A parameter value as the what-if reports it: int (exact in JSON), finite float, bool, or None
    (anything else)."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return None if value is None else bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value) if abs(int(value)) < MAX_EXACT_INT else None
    if isinstance(value, (float, np.floating)) and math.isfinite(float(value)):
        return float(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    return float(value)


def _stronger(knob: Knob, own: Any, candidate: float) -> bool:
    """Whether ``candidate`` regularises more than the recipe's own value ``own``."""
    if knob.direction == "on":
        return own is not True
    number = _number(own)
    if knob.direction == "down":
        return own is None or (number is not None and candidate < number)
    # "up": a fraction-of-rows value (a float below 1 for min_samples_leaf) is not compared: skipped.
    if knob.integer and isinstance(own, float):
        return False
    return number is not None and candidate > number


def _knob_values(knob: Knob, params: dict[str, Any]) -> list[Value]:
    if knob.needs is not None and (params.get(knob.needs.lstrip("!")) is True) == knob.needs.startswith("!"):
        return []
    own = params.get(knob.parameter)
    if knob.parameter not in params:
        return []
    values: list[Value] = []
    for strength in knob.strengths:
        if knob.direction == "on":
            candidate: Value = True
        elif knob.relative:
            number = _number(own)
            if number is None or number <= 0:
                return []
            candidate = number * strength
            if not math.isfinite(candidate):  # C or alpha near the float limit: no such setting
                continue
            candidate = max(1, int(round(candidate))) if knob.integer else float(f"{candidate:.6g}")
            if plain(candidate) is None:  # an integer JSON cannot carry exactly: no setting to report
                continue
        else:
            candidate = int(strength) if knob.integer else float(strength)
        if _stronger(knob, own, candidate) and candidate not in values:
            values.append(candidate)
    return values


def _rules(family: str, params: dict[str, Any]) -> list[tuple[str, Value]]:
    fired: list[tuple[str, Value]] = []
    leaf = _number(params.get("min_samples_leaf"))
    if family in ("tree", "forest"):
        if leaf is not None and leaf <= 1 and params.get("max_depth") is None:
            fired += [("leaf_of_one", plain(params["min_samples_leaf"])), ("no_depth_limit", None)]
    elif family == "boosting":
        if leaf is not None and leaf <= 2:
            fired.append(("boosting_tiny_leaves", plain(params["min_samples_leaf"])))
        rounds = _number(params.get("n_estimators", params.get("max_iter")))
        rate = _number(params.get("learning_rate"))
        if rounds is not None and rate is not None and rounds >= _MANY_ROUNDS and rate >= _HIGH_LEARNING_RATE:
            fired.append(("boosting_rounds", plain(params["learning_rate"])))
    elif family == "knn":
        if _number(params.get("n_neighbors")) == 1:
            fired.append(("nearest_one", 1))
    else:
        c, alpha = _number(params.get("C")), _number(params.get("alpha"))
        if c is not None and c >= _HUGE_C:
            fired.append(("huge_c", plain(params["C"])))
        if alpha is not None and alpha <= _TINY_ALPHA:
            fired.append(("tiny_alpha", plain(params["alpha"])))
    return fired


def plan_for(model: Any, thorough: bool = False) -> Plan:
    """The what-if's plan for a fitted (or unfitted) recipe: no fit, no call into the model but
    ``get_params`` of its final step. ``thorough``: every knob at two strengths (:data:`THOROUGH_KNOBS`)
    instead of the default table, which is sized to cost no more than the reference stage.

    A recipe whose parameters cannot be read (a model pickled by a scikit-learn that lacked one of them,
    a pipeline whose steps are not pairs) gets its class and family but no configs and no rules: the
    what-if is then skipped as a recipe it cannot retrain, never the audit.
    """
    try:
        step, _ = final_step(model)
    except Exception:  # noqa: BLE001 - a malformed pipeline: not a recipe the what-if can read
        return Plan(None, None, (), ())
    entry = FAMILIES.get(type(step))
    booster = BOOSTING_FAMILIES.get((type(step).__module__, type(step).__name__))
    if entry is None and booster is None:
        return Plan(None, None, (), ())
    if entry is not None:
        class_name, family, knobs = entry
        if thorough:
            knobs = THOROUGH_KNOBS.get(type(step), knobs)
    else:
        class_name, family, default, thorough_knobs = booster
        knobs = thorough_knobs if thorough else default
    try:
        params = step.get_params(deep=False)
    except Exception:  # noqa: BLE001 - e.g. AttributeError for a parameter newer than the pickle
        return Plan(class_name, family, (), ())
    configs = [Config("baseline", "baseline", None, None)]
    for knob in knobs:
        for value in _knob_values(knob, params):
            configs.append(Config(variant_name(knob.parameter, value), "retrained", knob.parameter, value))
    return Plan(class_name, family, tuple(configs), tuple(_rules(family, params)))
