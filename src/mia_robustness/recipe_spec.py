"""A recipe named in ``config.json`` (``reference_recipe``): a classifier class and its parameters.

For a model that carries no recipe (ONNX, a label-only model) or, when the user prefers, in place of the
model's own, the reference attacks and the what-if retrain the recipe the bundle names:

    {"reference_recipe": {"estimator": "XGBClassifier", "params": {"n_estimators": 200, "max_depth": 4}}}

The class is named as scikit-learn or a boosting library exports it (``RandomForestClassifier``,
``LGBMClassifier``), or with its module (``sklearn.ensemble.RandomForestClassifier``); only classes of
:data:`RECIPE_MODULES` are looked up, only scikit-learn classifiers and the three boosting wrappers are
built (the name is resolved outside the sandbox), and what is built then passes the refit gate like any recipe
(:func:`~mia_robustness.recipe.contained_clone`). Parameters are plain JSON values.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from .errors import ModelError, quoted_name
from .json_config import shown

#: Modules a named recipe's class is looked up in (the classifiers' public homes), in this order.
RECIPE_MODULES = (
    "sklearn.ensemble",
    "sklearn.tree",
    "sklearn.linear_model",
    "sklearn.svm",
    "sklearn.neighbors",
    "sklearn.naive_bayes",
    "sklearn.neural_network",
    "sklearn.discriminant_analysis",
    "xgboost",
    "lightgbm",
    "catboost",
)
_CLASS_NAME = re.compile(r"(?:([A-Za-z_][A-Za-z0-9_.]*)\.)?([A-Za-z_][A-Za-z0-9_]*)\Z")
# The boosting libraries' classifiers a recipe may name, and the modules that define them. Nothing else of
# theirs is looked up or built: the name comes from the bundle's config.json and is resolved in the
# unsandboxed audit process, so their boosters, datasets, Dask / Spark estimators and test helpers (whose
# modules import more, and whose constructors do more) stay out of reach.
_BOOSTING_CLASSIFIERS = {
    "XGBClassifier": "xgboost.sklearn",
    "LGBMClassifier": "lightgbm.sklearn",
    "CatBoostClassifier": "catboost.core",
}
_NAMEABLE = "a scikit-learn classifier (as sklearn.ensemble and its siblings export it), XGBClassifier, LGBMClassifier or CatBoostClassifier"


def _bad(message: str) -> ModelError:
    return ModelError(f"config.json's reference_recipe {message}", code="bad_reference_recipe")


def recipe_class(name: str) -> type:
    """The classifier class ``name`` names (see the module docstring), or a ``bad_reference_recipe`` error.

    Only :data:`RECIPE_MODULES` (and the boosting wrappers' own modules) are imported, and only a
    scikit-learn classifier or one of :data:`_BOOSTING_CLASSIFIERS` is ever built."""
    match = _CLASS_NAME.match(name)
    if match is None:
        raise _bad(f"names {quoted_name(name)}, not a class name such as RandomForestClassifier")
    module, short = match.groups()
    if module is not None and module not in (*RECIPE_MODULES, *_BOOSTING_CLASSIFIERS.values()):
        raise _bad(f"names a class in {quoted_name(module)}; name {_NAMEABLE}")
    for candidate in (module,) if module is not None else RECIPE_MODULES:
        try:
            found = getattr(importlib.import_module(candidate), short, None)
        except ImportError:
            continue
        if isinstance(found, type):
            home = _BOOSTING_CLASSIFIERS.get(found.__name__)
            if home is not None and found.__module__ == home:
                return found
            if candidate.startswith("sklearn.") and not short.startswith("_") and _is_classifier(found):
                return found
            raise _bad(
                f"names {quoted_name(short)}, which is not a classifier the audit retrains; name {_NAMEABLE}"
            )
    raise _bad(
        f"names {quoted_name(name)}, which is no scikit-learn, XGBoost, LightGBM or CatBoost classifier"
    )


def _is_classifier(kind: type) -> bool:
    """A scikit-learn classifier class: built (bare) only once it is a ``ClassifierMixin``."""
    from sklearn.base import ClassifierMixin, is_classifier

    if not issubclass(kind, ClassifierMixin):
        return False
    try:
        return bool(is_classifier(kind()))
    except Exception:  # noqa: BLE001 - a class that needs arguments is not one a recipe can name bare
        return False


def build_recipe(spec: Mapping[str, Any]) -> Any:
    """An unfitted classifier from ``spec`` (``{"estimator": name, "params": {...}}``, as the option's
    ``to_dict`` gives it); the refit gate checks it afterwards."""
    kind = recipe_class(str(spec.get("estimator", "")))
    params = dict(spec.get("params") or {})
    try:
        model = kind()
        known = model.get_params()
    except Exception as exc:  # noqa: BLE001 - a class that cannot be built bare is no recipe
        raise _bad(
            f"names {quoted_name(kind.__name__)}, which cannot be built ({type(exc).__name__})"
        ) from None
    takes_any = kind.__module__.split(".")[0] in ("xgboost", "lightgbm", "catboost")  # booster params too
    unknown = [key for key in params if key not in known and not takes_any]
    if unknown:
        raise _bad(
            f"gives {quoted_name(kind.__name__)} the parameter {quoted_name(unknown[0])}, which it does not "
            "have; use the names of its get_params()"
        )
    try:
        model.set_params(**{key: tuple(v) if isinstance(v, list) else v for key, v in params.items()})
    except Exception as exc:  # noqa: BLE001 - a value the class refuses
        raise _bad(f"has a parameter {quoted_name(kind.__name__)} refuses ({type(exc).__name__})") from None
    _check_values(model, params)
    return model


# scikit-learn's own words for a refused value: "The 'max_depth' parameter of RandomForestClassifier must be
# an int in the range [1, inf) or None. Got 'deep' instead."
_REFUSED = re.compile(
    r"The '([A-Za-z0-9_]+)' parameter of [A-Za-z0-9_]+ must be (.{1,300}?)\. Got .* instead\.", re.S
)


def _check_values(model: Any, params: Mapping[str, Any]) -> None:
    """Refuse a parameter value ``model``'s class would refuse at fit time, now, before the audit starts.

    set_params takes any value; scikit-learn checks them against the class's ``_parameter_constraints``
    only in ``fit``, which for a recipe happens in the sandbox, deep into the audit. Its own check runs here
    on the unfitted estimator (nothing is fitted, nothing of the bundle is imported). The boosting wrappers
    declare no constraints: their values are still checked only when they train."""
    if not isinstance(getattr(type(model), "_parameter_constraints", None), dict):
        return
    try:
        model._validate_params()
    except Exception as exc:  # noqa: BLE001 - InvalidParameterError, or any other refusal of a value
        found = _REFUSED.match(str(exc))
        name = found.group(1) if found else None
        kind = quoted_name(type(model).__name__)
        if name not in params:
            raise _bad(f"gives {kind} a parameter value it refuses ({type(exc).__name__})") from None
        raise _bad(
            f"gives {kind} the parameter {quoted_name(name)} the value {shown(params[name])}, which it refuses: "
            f"it must be {found.group(2)}; fix the value, or leave the parameter out for its default"
        ) from None
