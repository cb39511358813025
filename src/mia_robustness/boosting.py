"""XGBoost, LightGBM and CatBoost classifiers as recipes: what a refit of one may do, and class names.

The boosting libraries' scikit-learn wrappers clone like scikit-learn estimators (CatBoost's is not a
``BaseEstimator`` but has ``get_params`` / ``set_params``), so the refit gate (:mod:`.recipe`) retrains
them as it does any recipe. What differs is what a refit must not do, and how large it may be:

* **Neutral changes**: one thread per fit (the reference stage runs fits side by side), no printing, and
  for CatBoost no files (``allow_writing_files=False``; by default it writes ``catboost_info/`` to the
  working folder) and no snapshots.
* **Refused parameters**: those that make the library read a file the recipe names (LightGBM's
  ``forcedsplits_filename``, CatBoost's ``input_borders``, ...): the recipe is the model file's choice.
* **Size**: the number of rounds is capped at the rounds the fitted booster holds (with headroom when the
  fit stopped early), as the gate caps scikit-learn's ``n_estimators``.

:class:`NamedClasses` gives a booster loaded from a native file (whose classes are ``0..K-1``) the class
names a bundle's ``config.json`` lists, and refits its recipe on those names.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

#: The boosting libraries' classifier wrappers, as (module, class name) pairs.
BOOSTING_WRAPPERS = frozenset(
    {
        ("xgboost.sklearn", "XGBClassifier"),
        ("lightgbm.sklearn", "LGBMClassifier"),
        ("catboost.core", "CatBoostClassifier"),
    }
)
# Parameters that make the library read a file or reach the network (refused), with every alias the library
# reads them under (LightGBM takes a parameter by any of its aliases: ``forced_splits`` is
# ``forcedsplits_filename``, ``mlist`` is ``machine_list_filename``).
_READS_FILES = frozenset(
    {
        # LightGBM
        "forcedsplits_filename",
        "fs",
        "forced_splits",
        "forced_splits_file",
        "forced_splits_filename",
        "forcedbins_filename",
        "input_model",
        "model_in",
        "model_input",
        "machine_list_filename",
        "mlist",
        "machine_list",
        "machine_list_file",
        "machines",
        "nodes",
        "workers",
        "data",
        "train",
        "train_data",
        "data_filename",
        "train_data_file",
        "valid",
        "test",
        "test_data",
        "valid_data",
        "test_data_file",
        "valid_data_file",
        "valid_filenames",
        "parser_config_file",
        "config",
        "config_file",
        # XGBoost, LightGBM: a model to continue from
        "init_model",
        # CatBoost
        "input_borders",
        "output_borders",
    }
)
# LightGBM's aliases of the number of machines: more than one makes it open network connections.
_MACHINE_COUNTS = ("num_machines", "num_machine")
# Every spelling each library reads for the thread count, its printing and the boosting rounds: a recipe
# may use any of them, and LightGBM takes the first alias it finds, XGBoost the last one set, so each one
# present is made neutral or capped, not only the wrapper's own name.
_THREADS = {
    "XGBClassifier": ("n_jobs", "nthread"),
    "LGBMClassifier": ("n_jobs", "num_threads", "nthread", "nthreads", "num_thread"),
}
_LIGHTGBM_QUIET = ("verbose", "verbosity")
_ROUNDS = {
    "XGBClassifier": ("n_estimators",),
    "LGBMClassifier": (
        "n_estimators",
        "num_iterations",
        "num_iteration",
        "n_iter",
        "nrounds",
        "max_iter",
        "num_tree",
        "num_trees",
        "num_round",
        "num_rounds",
        "num_boost_round",
    ),
    "CatBoostClassifier": ("iterations", "n_estimators", "num_boost_round", "num_trees"),
}
_CATBOOST_QUIET = {"allow_writing_files": False, "thread_count": 1, "save_snapshot": False}
# CatBoost takes no None for these: where a recipe sets them, its defaults (nothing is written anyway).
_CATBOOST_WRITES = {"train_dir": "catboost_info", "snapshot_file": "experiment.cbsnapshot"}
# CatBoost refuses more than one of these; the one the recipe sets is the one made silent.
_CATBOOST_CHATTY = (
    ("logging_level", "Silent"),
    ("silent", True),
    ("verbose_eval", False),
    ("verbose", False),
)
# Rounds an early-stopped fit may run in a refit: this many times the fitted rounds, plus a few.
_EARLY_STOPPING_HEADROOM = 4
_EARLY_STOPPING_SLACK = 10


def wrapper_name(kind: type) -> str | None:
    """The class name of a boosting wrapper (``XGBClassifier``...), or ``None`` for any other class."""
    pair = (getattr(kind, "__module__", None), getattr(kind, "__name__", None))
    return pair[1] if pair in BOOSTING_WRAPPERS else None


def reads_files(params: dict[str, Any]) -> str | None:
    """The first parameter (set to something) that would make a refit read a file, else ``None``."""
    for name, value in params.items():
        if name in _READS_FILES and value not in (None, "", False):
            return name
        if name in _MACHINE_COUNTS and value not in (None, 0, 1):
            return name
    return None


def neutral_changes(kind: type, params: dict[str, Any]) -> dict[str, Any]:
    """One thread, no printing, no files: none of them changes what a refit of the wrapper learns."""
    name = wrapper_name(kind)
    threads = {key: 1 for key in _THREADS.get(name or "", ()) if key == "n_jobs" or key in params}
    if name == "XGBClassifier":
        return threads | {"verbosity": 0}
    if name == "LGBMClassifier":
        return threads | {key: -1 for key in _LIGHTGBM_QUIET if key == "verbose" or key in params}
    if name == "CatBoostClassifier":
        changes: dict[str, Any] = dict(_CATBOOST_QUIET)
        changes.update({key: value for key, value in _CATBOOST_WRITES.items() if key in params})
        quiet = [(key, value) for key, value in _CATBOOST_CHATTY if params.get(key) is not None]
        changes.update(quiet[:1] or [("verbose", False)])
        return changes
    return {}


def fitted_rounds(fitted: Any) -> int | None:
    """Boosting rounds a fitted wrapper holds, from its booster; ``None`` when unknown or not fitted."""
    name = wrapper_name(type(fitted))
    try:
        if name == "XGBClassifier":
            return int(fitted.get_booster().num_boosted_rounds())
        if name == "LGBMClassifier":
            return int(fitted.booster_.current_iteration())
        if name == "CatBoostClassifier":
            return int(fitted.tree_count_)
    except Exception:  # noqa: BLE001 - an unfitted or damaged wrapper: no evidence of its size
        return None
    return None


def _rounds_parameter(name: str | None) -> str:
    return "iterations" if name == "CatBoostClassifier" else "n_estimators"


def size_changes(kind: type, params: dict[str, Any], fitted: list[Any]) -> dict[str, Any]:
    """The declared rounds capped at what the fitted boosters of ``kind`` hold (headroom if they stopped
    early), so a file declaring 10**9 rounds but holding 50 refits 50."""
    name = wrapper_name(kind)
    key = _rounds_parameter(name)
    shown = []
    for instance in fitted:
        rounds = fitted_rounds(instance)
        if rounds is None:
            continue
        if instance.get_params().get("early_stopping_rounds") not in (None, 0):
            rounds = _EARLY_STOPPING_HEADROOM * rounds + _EARLY_STOPPING_SLACK
        shown.append(max(rounds, 1))
    if not shown:
        return {}
    limit = max(shown)
    # every spelling of the rounds the recipe sets (CatBoost refuses two; LightGBM prefers an alias to
    # n_estimators), else the wrapper's own name
    keys = [alias for alias in _ROUNDS.get(name or "", ()) if alias in params] or [key]
    # None (the library's default of 100 or 1000) or more than was fitted
    return {alias: limit for alias in keys if type(params.get(alias)) is not int or params[alias] > limit}


class NamedClasses(ClassifierMixin, BaseEstimator):
    """A boosting classifier whose classes are the names ``classes`` instead of ``0..K-1``.

    A native model file (XGBoost JSON, LightGBM text, CatBoost ``.cbm``) keeps class indices only; the
    bundle's ``config.json`` names them in order. Fitting encodes ``y`` as indices into ``classes``
    (every label must be one of them) and fits a clone of ``estimator``.

    Parameters
    ----------
    estimator:
        A boosting classifier (fitted, when wrapping a loaded model).
    classes:
        ``(n_classes,)`` the class names, in the order of the model's class indices.
    """

    def __init__(self, estimator: Any = None, classes: tuple = ()) -> None:
        self.estimator = estimator
        self.classes = classes

    def fit(self, X: Any, y: Any) -> NamedClasses:
        names = np.asarray(self.classes, dtype=object)
        order = {name: index for index, name in enumerate(names.tolist())}
        try:
            encoded = np.asarray([order[label] for label in np.asarray(y, dtype=object).tolist()])
        except KeyError:
            raise ValueError("a label is not one of the classes") from None
        self.estimator_ = clone(self.estimator).fit(X, encoded)
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.asarray(self.classes)

    @property
    def n_features_in_(self) -> int:
        return self._fitted().n_features_in_

    @property
    def feature_names_in_(self) -> np.ndarray:
        """The booster's feature names, where it was fitted on named columns (else ``AttributeError``)."""
        return self._fitted().feature_names_in_

    def _fitted(self) -> Any:
        return vars(self).get("estimator_", self.estimator)

    def __sklearn_is_fitted__(self) -> bool:
        """Fitted when the booster it answers with is (a loaded file's booster is, without ``estimator_``)."""
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self._fitted())
        except (NotFittedError, TypeError):
            return False
        return True

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n_rows, n_classes)`` probabilities, columns in the order of ``classes``."""
        return self._fitted().predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        """``(n_rows,)`` the most probable class's name."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
