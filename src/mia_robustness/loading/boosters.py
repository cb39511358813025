"""Native model files of the boosting libraries, which hold trees and numbers and run no code.

Found by content, whatever the file is called: XGBoost's JSON (``{"learner": ...``) and UBJSON, LightGBM's
text model (``tree\\nversion=...``), CatBoost's ``.cbm`` (``CBM1``). Each is parsed by the library's own
C++ loader (``XGBoosterLoadModelFromBuffer``, ``LGBM_BoosterLoadModelFromString``, CatBoost's
``load_model(blob=...)``) into the library's scikit-learn wrapper, which exposes ``classes_`` and
``predict_proba``. A file these loaders reject, or one cut short, is ``corrupt_model``.

The classes are the model's indices ``0..K-1``, or the names a ``classes`` option lists in that order
(:class:`~mia_robustness.boosting.NamedClasses`), when the bundle's labels are text.

The recipe the reference models retrain is rebuilt from the parameters saved in the file, as the matching
wrapper class: XGBoost's model JSON keeps the objective, the rounds and the trees but not the training
parameters, so the recipe has the rounds, the objective and the depth of the deepest tree (XGBoost's
defaults for the rest, such as the learning rate); LightGBM's ``parameters:`` section and CatBoost's saved
parameters give theirs (a fixed set of training parameters, never file names). Name a ``reference_recipe``
in ``config.json`` for a recipe that is exact.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..boosting import NamedClasses, neutral_changes, wrapper_name
from ..errors import LimitError, ModelError
from .messages import _corrupt, _name

#: Suffixes a native model file may have (besides the pickle and skops ones); ``config.json`` is never one.
NATIVE_SUFFIXES = (".json", ".ubj", ".txt", ".cbm")

_XGBOOST_JSON = re.compile(rb'\A\s*\{\s*"learner"\s*:')
_XGBOOST_UBJ = re.compile(rb"\A\{[iUIlL].{0,8}learner", re.S)
_XGBOOST_PROBABILITIES = ("binary:logistic", "multi:softprob")
_LIGHTGBM_PROBABILITIES = ("binary", "multiclass", "multiclassova", "cross_entropy")
_CATBOOST_PROBABILITIES = ("Logloss", "CrossEntropy", "MultiClass", "MultiClassOneVsAll")

# LightGBM's saved parameters -> LGBMClassifier's (the training parameters that change what is learned).
_LIGHTGBM_PARAMETERS = {
    "boosting": ("boosting_type", str),
    "num_leaves": ("num_leaves", int),
    "max_depth": ("max_depth", int),
    "learning_rate": ("learning_rate", float),
    "min_data_in_leaf": ("min_child_samples", int),
    "min_sum_hessian_in_leaf": ("min_child_weight", float),
    "bagging_fraction": ("subsample", float),
    "bagging_freq": ("subsample_freq", int),
    "feature_fraction": ("colsample_bytree", float),
    "lambda_l1": ("reg_alpha", float),
    "lambda_l2": ("reg_lambda", float),
    "min_gain_to_split": ("min_split_gain", float),
    "max_bin": ("max_bin", int),
    "seed": ("random_state", int),
}
# CatBoost's saved parameters a refit keeps.
_CATBOOST_PARAMETERS = frozenset(
    {
        "iterations",
        "learning_rate",
        "depth",
        "l2_leaf_reg",
        "loss_function",
        "random_strength",
        "bagging_temperature",
        "subsample",
        "bootstrap_type",
        "border_count",
        "grow_policy",
        "min_data_in_leaf",
        "max_leaves",
        "random_seed",
        "rsm",
    }
)


# How to save a native file each library reads back (for a file it refused).
_SAVE_NATIVE = {
    "xgboost": "save the booster with XGBoost's save_model (model.json or model.ubj)",
    "lightgbm": "save the booster with LightGBM's booster_.save_model (model.txt)",
    "catboost": "save the model with CatBoost's save_model (model.cbm)",
}


def native_kind(head: bytes) -> str | None:
    """Which native format the first bytes of a file are, or ``None``: ``xgboost`` (JSON or UBJSON),
    ``lightgbm`` or ``catboost``."""
    if _XGBOOST_JSON.match(head) or _XGBOOST_UBJ.match(head):
        return "xgboost"
    if head.startswith((b"tree\n", b"tree\r\n")):
        return "lightgbm"
    if head.startswith(b"CBM1"):
        return "catboost"
    return None


def load_native(path: Path, kind: str, max_bytes: int | None, classes: tuple | None) -> Any:
    """The classifier a native file of ``kind`` (from :func:`native_kind`) holds, with ``classes`` as its
    class names when given (their number must be the model's).

    Raises ``model_too_large`` past ``max_bytes``, ``corrupt_model`` for a file its library cannot read,
    ``not_a_classifier`` for a model that gives no class probabilities (a regressor, a ranker),
    ``bad_classes`` when ``classes`` does not match the model.
    """
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise LimitError(
            f"{_name(path)} is larger than the allowed model size; use a smaller model or raise the limit",
            code="model_too_large",
        )
    data = path.read_bytes()
    loader = {"xgboost": _load_xgboost, "lightgbm": _load_lightgbm, "catboost": _load_catboost}[kind]
    try:
        model, count = loader(path, data)
    except MemoryError:
        raise LimitError(
            f"{_name(path)} needs more memory than is available to load", code="model_too_large"
        ) from None
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the library refused the file: damaged, truncated or forged
        raise _corrupt(path, exc, f"reading it as a {kind} model", _SAVE_NATIVE[kind]) from None
    if classes is None:
        return model
    if len(classes) != count:
        raise ModelError(
            f"config.json's classes lists {len(classes)} classes but {_name(path)} has {count}; list the model's "
            "classes in the order of its class indices 0, 1, ...",
            code="bad_classes",
        )
    return NamedClasses(model, tuple(classes))


def restore_feature_count(model: Any) -> None:
    """Give a loaded CatBoost classifier (alone or a pipeline's step) its feature count.

    CatBoost's saved model (pickled or ``.cbm``) does not keep the count its ``n_features_in_`` reports, so
    a loaded one says 0 and the audit would refuse every table; the count is that of its feature names.
    """
    steps = getattr(model, "steps", None)
    parts = [model] + (
        [step[-1] for step in steps if isinstance(step, tuple)] if isinstance(steps, list) else []
    )
    for part in parts:
        is_catboost = (type(part).__module__, type(part).__name__) == ("catboost.core", "CatBoostClassifier")
        if is_catboost and vars(part).get("_n_features_in") == 0 and part.is_fitted():
            part._n_features_in = len(part.feature_names_)


# Most objects :func:`one_thread_each` visits looking for wrappers (the check after loading bounds the graph).
_MAX_VISITED = 1_000_000


def one_thread_each(model: Any) -> None:
    """Give every XGBoost and LightGBM wrapper the loaded model holds (alone, a pipeline's step, an
    ensemble's member) one thread and no printing when it predicts, as its refits get.

    The thread count a pickle saved is the trainer's machine's, or any number the file chooses: LightGBM
    starts that many OpenMP threads to predict, and 64 of them already exhaust the sandbox's address
    space (the process dies). Threads change no prediction.
    """
    seen: set[int] = set()
    todo = [model]
    while todo and len(seen) < _MAX_VISITED:
        item = todo.pop()
        kind = type(item)
        if id(item) in seen or kind in (str, bytes, int, float, bool, type(None), np.ndarray):
            continue
        seen.add(id(item))
        if wrapper_name(kind) in ("XGBClassifier", "LGBMClassifier"):
            item.set_params(**neutral_changes(kind, item.get_params(deep=False)))
        elif kind in (list, tuple):
            todo.extend(item)
        elif kind is dict:
            todo.extend(item.values())
        elif kind.__module__.startswith(("sklearn.", "mia_robustness.")) and hasattr(item, "__dict__"):
            todo.extend(vars(item).values())


def _not_probabilities(path: Path, library: str, objective: str, accepted: tuple[str, ...]) -> ModelError:
    shown = objective if re.fullmatch(r"[A-Za-z0-9_:]{1,40}", objective) else "another objective"
    return ModelError(
        f"{_name(path)} is a {library} model trained with the objective {shown}, which gives no class "
        f"probabilities; the audit needs a classifier trained with one of {', '.join(accepted)}",
        code="not_a_classifier",
    )


def _load_xgboost(path: Path, data: bytes) -> tuple[Any, int]:
    import xgboost

    model = xgboost.XGBClassifier()
    model.load_model(bytearray(data))
    saved = json.loads(bytes(model.get_booster().save_raw("json")))
    learner = saved["learner"]
    objective = str(learner["objective"]["name"])
    if objective not in _XGBOOST_PROBABILITIES:
        raise _not_probabilities(path, "XGBoost", objective, _XGBOOST_PROBABILITIES)
    booster = learner["gradient_booster"]
    if booster.get("name") != "gbtree":
        raise ModelError(
            f"{_name(path)} is an XGBoost {booster.get('name') == 'dart' and 'dart' or 'linear'} model; the audit "
            "reads tree boosters (gbtree) from native files; save it with pickle instead",
            code="unsupported_model_format",
        )
    count = max(int(learner["learner_model_param"]["num_class"]), 2)
    trees = booster["model"]["trees"]
    per_round = (1 if count == 2 else count) * max(
        int(booster["model"]["gbtree_model_param"]["num_parallel_tree"]), 1
    )
    depth = max((_tree_depth(tree["left_children"], tree["right_children"]) for tree in trees), default=1)
    rounds = max(len(trees) // per_round, 1)
    # base_score is fitted, not chosen: a refit estimates its own
    model.set_params(n_estimators=rounds, max_depth=max(depth, 1), objective=objective, base_score=None)
    return model, count


def _tree_depth(left: list[int], right: list[int]) -> int:
    """Depth of a tree given as child index lists (-1 for none), root at 0; loops count once."""
    depth, level, seen = 0, [0], {0}
    while level:
        following = [
            c for node in level for c in (left[node], right[node]) if 0 <= c < len(left) and c not in seen
        ]
        seen.update(following)
        depth, level = depth + (1 if following else 0), following
    return depth


def _load_lightgbm(path: Path, data: bytes) -> tuple[Any, int]:
    import lightgbm
    from sklearn.preprocessing import LabelEncoder

    text = data.decode("utf-8")
    # LightGBM's parser aborts the process (std::terminate) on some files cut short; a whole model file
    # has its end marker, so a cut one is refused before the library sees it.
    if "\nend of trees" not in text or ("\nparameters:" in text and "\nend of parameters" not in text):
        raise ModelError(
            f"{_name(path)} is a LightGBM model cut short (no end of trees / parameters); upload the whole "
            "file booster.save_model writes",
            code="corrupt_model",
        )
    booster = lightgbm.Booster(model_str=text)
    saved = booster.params or {}
    objective = str(saved.get("objective", ""))
    if objective not in _LIGHTGBM_PROBABILITIES:
        raise _not_probabilities(path, "LightGBM", objective, _LIGHTGBM_PROBABILITIES)
    count = max(int(saved.get("num_class", 1)), 2)
    params: dict[str, Any] = {"n_estimators": max(booster.current_iteration(), 1), "verbose": -1}
    for key, (name, kind) in _LIGHTGBM_PARAMETERS.items():
        value = saved.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            params[name] = kind(value)
    model = lightgbm.LGBMClassifier(**params)
    if count > 2:
        model.set_params(objective=objective)
    # What LGBMClassifier.fit leaves behind, for a booster fitted elsewhere (predict_proba reads these).
    indices = np.arange(count)
    model._Booster, model.fitted_, model._objective, model._class_map = booster, True, objective, None
    model._n_features = model._n_features_in = booster.num_feature()
    names = booster.feature_name()  # LightGBM names unnamed columns Column_0, Column_1, ...
    model._fitted_with_feature_names = names != [f"Column_{i}" for i in range(len(names))]
    model._n_classes, model._classes, model._le = count, indices, LabelEncoder().fit(indices)
    return model, count


def _load_catboost(path: Path, data: bytes) -> tuple[Any, int]:
    import catboost

    model = catboost.CatBoostClassifier()
    model.load_model(blob=data)
    restore_feature_count(model)
    saved = model.get_all_params()
    objective = str(saved.get("loss_function", "Logloss"))
    if objective.split(":")[0] not in _CATBOOST_PROBABILITIES:
        raise _not_probabilities(path, "CatBoost", objective, _CATBOOST_PROBABILITIES)
    kept = {key: value for key, value in saved.items() if key in _CATBOOST_PARAMETERS}
    # Parameters CatBoost refuses together: each bootstrap and grow policy takes only its own.
    kept.pop("subsample" if kept.get("bootstrap_type") == "Bayesian" else "bagging_temperature", None)
    if kept.get("grow_policy") != "Lossguide":
        kept.pop("max_leaves", None)
    if kept.get("grow_policy", "SymmetricTree") == "SymmetricTree":
        kept.pop("min_data_in_leaf", None)
    model._init_params = {**kept, "allow_writing_files": False, "verbose": False}
    return model, len(model.classes_)
