"""The recipe of a fitted model, made safe to retrain (for the reference-model attacks).

A fitted model file holds more than its fitted state: the hyperparameters a refit would use. Those are the
file's choices too, so they pass the same gate as the model itself (:func:`contained_clone`): a search is
refit from its ``best_estimator_``, never from its grid; caching, worker pools and printing are off at
every depth; every class and function the recipe's parameters reach must pass the loader's allowlist; and
size parameters are capped at what the fitted model shows it was trained with.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import json
import operator
import sys
import types
from collections.abc import Callable, Iterator
from typing import TypeVar

import numpy as np
from sklearn.base import BaseEstimator, clone
from sklearn.ensemble import (
    AdaBoostClassifier,
    AdaBoostRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.model_selection._search import BaseSearchCV
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.preprocessing import PolynomialFeatures

from . import boosting
from .dense_fit import with_dense_fit
from .errors import ModelError, UnsafeModelError, quoted_name
from .loading.policy import NUMPY_UFUNCS, is_allowed
from .recipe_spec import build_recipe

# Values that are data, never code: no type check or walk needed (exact types; subclasses are gated).
_PLAIN = frozenset({bool, int, float, complex, str, bytes})

# Most objects a recipe's parameters, or a fitted model's object graph, may reach before the audit gives up
# checking them (an honest model reaches thousands; a forest of 10,000 trees about 200,000).
_MAX_RECIPE_OBJECTS = 2_000_000
# Deepest nesting of searches and meta-estimators followed.
_MAX_NESTING = 50

# Early stopping (or a solver's convergence test) may honestly end a fit well before the declared size,
# and a refit on other rows may run longer than the target did. Such a refit may run up to this many
# times the fitted count (plus a few rounds), and is never capped below scikit-learn's default.
_EARLY_STOPPING_HEADROOM = 4
_EARLY_STOPPING_SLACK = 10


def _qualified(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if not isinstance(name, str):
        return "?"
    return quoted_name(f"{module}.{name}" if isinstance(module, str) else name)


def _where(path: str) -> str:
    return f"the parameter {quoted_name(path)}" if path else "the model itself"


def _join(path: str, key: object) -> str:
    key = key if isinstance(key, str) else "?"
    return f"{path}__{key}" if path else key


def _recipe_error(message: str, code: str, kind: type[ModelError] = ModelError) -> ModelError:
    return kind(f"{message}; or drop lira / rmia from attack_models", code=code)


def _search_not_refit(search: object, path: str) -> ModelError:
    where = f"the model's recipe holds at {quoted_name(path)}" if path else "the model is"
    return _recipe_error(
        f"{where} a {quoted_name(type(search).__name__)} that keeps no fitted best_estimator_ (it was fitted "
        "with refit=False, or its owner fits copies of it), so there is no chosen recipe to retrain and the "
        "reference-model attacks do not re-run searches; save search.best_estimator_ (fitted with "
        "refit=True) as the model",
        "search_not_refit",
    )


def _too_large(what: str) -> ModelError:
    return _recipe_error(
        f"the model's {what} is too large or too deeply nested for the reference-model attacks to check "
        "before retraining it; audit a simpler model",
        "recipe_too_large",
    )


@functools.lru_cache(maxsize=1024)
def _admitted_class(cls: type) -> bool:
    """Whether the loader's allowlist admits ``cls`` under the name it gives itself (and that name is it)."""
    if cls is boosting.NamedClasses:  # our own: a native booster with the class names config.json gives
        return True
    module, name = getattr(cls, "__module__", None), getattr(cls, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)) or not is_allowed(module, name):
        return False
    return vars(sys.modules[module]).get(name) is cls  # a class that only claims an allowed name is refused


def _admitted_function(fn: object) -> bool:
    """Whether ``fn`` is a module-level function the allowlist admits (never a method bound to an object)."""
    if type(fn) is types.MethodType:
        return False
    owner = getattr(fn, "__self__", None)
    if owner is not None and type(owner) is not types.ModuleType:  # a builtin bound to an object: [].append
        return False
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not (isinstance(module, str) and isinstance(name, str)) or not is_allowed(module, name):
        return False
    return vars(sys.modules[module]).get(name) is fn  # a lambda renamed numpy.log1p is not numpy.log1p


def _not_admitted(value: object) -> str | None:
    """What ``value`` is, when the allowlist does not admit it; ``None`` when it does."""
    kind = type(value)
    if issubclass(kind, type):
        return None if _admitted_class(value) else f"the class {_qualified(value)}"
    if issubclass(kind, np.ufunc):
        name = getattr(value, "__name__", None)
        admitted = isinstance(name, str) and name in NUMPY_UFUNCS and getattr(np, name, None) is value
        return None if admitted else f"the numpy function {quoted_name(name)}"
    if inspect.isroutine(value):
        if _admitted_function(value):
            return None
        owner = getattr(value, "__self__", None)
        if owner is not None and type(owner) is not types.ModuleType:
            return f"a method bound to a {quoted_name(type(owner).__name__)}"
        return f"the function {_qualified(value)}"
    return None if _admitted_class(kind) else f"an object of class {_qualified(kind)}"


def _named_entries(value: object) -> bool:
    """A list of ``(name, estimator, ...)`` tuples: a Pipeline's steps, a stack's estimators, transformers."""
    return (
        type(value) in (list, tuple)
        and len(value) > 0
        and all(type(entry) is tuple and entry and type(entry[0]) is str for entry in value)
    )


Entry = TypeVar("Entry")


def _unseen(
    todo: list[Entry], seen: set[int], what: str, value: Callable[[Entry], object] = lambda entry: entry
) -> Iterator[Entry]:
    """Pop entries off ``todo`` until it is empty and yield each whose ``value`` was not seen before (its
    id goes into ``seen``) and is neither ``None`` nor of a plain type; the caller pushes what the value
    holds onto ``todo`` meanwhile. Refuses ``what`` once it holds more than ``_MAX_RECIPE_OBJECTS``."""
    while todo:
        entry = todo.pop()
        item = value(entry)
        if item is None or type(item) in _PLAIN or id(item) in seen:
            continue
        seen.add(id(item))
        if len(seen) > _MAX_RECIPE_OBJECTS:
            raise _too_large(what)
        yield entry


def _gate_recipe(root: object, named: bool = False) -> list[tuple[BaseEstimator, str]]:
    """Pass every value the recipe's parameters reach through the loader's allowlist.

    Walks each estimator's ``get_params(deep=False)`` (and its metadata-routing requests, which ``clone``
    copies too), lists, tuples, dicts, sets, object arrays and the attributes of other scikit-learn objects
    (scorers, kernels, column selectors), so a recipe nested at any depth - a Pipeline inside a
    StackingClassifier inside a BaggingClassifier - is covered. A value's class must be admitted; a class
    or function must be what the allowlist admits under its own name (numpy ufuncs: those in
    ``NUMPY_UFUNCS``); other callables - lambdas, ``os.system``, ``eval``, bound methods,
    ``functools.partial`` - are refused. A text vectorizer must read its input as content, as the loader
    demands. Nothing found is called before it is admitted.

    ``named``: ``root`` is config.json's ``reference_recipe`` (errors say to change it, not the model).

    Returns the estimators found, with their parameter paths (``step__param``, as ``set_params`` names them).
    """
    estimators: list[tuple[BaseEstimator, str]] = []
    todo: list[tuple[object, str]] = [(root, "")]
    for value, path in _unseen(todo, set(), "recipe", value=operator.itemgetter(0)):
        kind = type(value)
        refused = _not_admitted(value)
        if refused is not None:
            raise _recipe_error(
                f"the model's recipe sets {_where(path)} to {refused}, which is not allowed in a model; the "
                "reference-model attacks retrain the recipe and would call it. Use scikit-learn estimators "
                "and the numpy functions the loader admits",
                "unsafe_recipe",
                UnsafeModelError,
            )
        if issubclass(kind, (type, np.ufunc)) or inspect.isroutine(value):
            continue
        if issubclass(kind, BaseEstimator) or boosting.wrapper_name(kind) is not None:
            estimators.append((value, path))
            params = value.get_params(deep=False)
            reader = boosting.reads_files(params)
            if reader is not None:
                whose, fix = (
                    ("config.json's reference_recipe", "Remove it from the reference_recipe's params")
                    if named
                    else (
                        "the model's recipe",
                        "Re-save the model without it, or name a reference_recipe in config.json",
                    )
                )
                raise _recipe_error(
                    f"{whose} sets {_where(reader if named else _join(path, reader))}, which makes the library "
                    f"read a file or open network connections when it is retrained. {fix}",
                    "unsafe_recipe",
                    UnsafeModelError,
                )
            source = params.get("input", "content")
            if not (type(source) is str and source == "content"):
                raise _recipe_error(
                    f"the model's recipe has a {quoted_name(kind.__name__)} at {_where(path)} whose input is not "
                    "'content': retrained, it would read files named by the data. Re-save it with "
                    "input='content'",
                    "unsafe_recipe",
                    UnsafeModelError,
                )
            for key, item in params.items():
                if _named_entries(item):  # each part takes its entry's name, as in set_params
                    todo += [(part, _join(path, entry[0])) for entry in item for part in entry[1:]]
                else:
                    todo.append((item, _join(path, key)))
            todo.append((vars(value).get("_metadata_request"), path))
        elif issubclass(kind, dict):
            todo += [(part, path) for pair in dict.items(value) for part in pair]
            if issubclass(kind, collections.defaultdict):
                todo.append((value.default_factory, path))
        elif kind in (list, tuple, set, frozenset):
            todo += [(item, path) for item in value]
        elif kind in (np.ndarray, np.ma.MaskedArray):
            if value.dtype.hasobject:
                todo += [(item, path) for item in value.ravel().tolist()]
        elif kind.__module__.startswith("sklearn.") and hasattr(value, "__dict__"):
            todo += [(item, _join(path, key)) for key, item in vars(value).items()]
    return estimators


def _is_search(obj: object) -> bool:
    """A hyper-parameter search (refitting it would re-run its grid), by class or by its fitted result."""
    return issubclass(type(obj), BaseSearchCV) or (
        issubclass(type(obj), BaseEstimator) and "best_estimator_" in vars(obj)
    )


def _recipe(fitted: object, path: str, depth: int) -> BaseEstimator:
    """An unfitted clone of ``fitted``'s recipe in which every search is its best_estimator_'s recipe.

    A search is refit from its ``best_estimator_``'s parameters, never from its grid: the grid is the
    file's to choose (its entries may set ``memory`` or ``n_jobs``, or anything the fitted model does not
    show), and the chosen candidate is what produced the model being audited. Everything ``clone`` will
    copy passes the allowlist first.
    """
    while _is_search(fitted):
        best = vars(fitted).get("best_estimator_")
        if best is None:
            raise _search_not_refit(fitted, path)
        fitted, depth = best, depth + 1
        if depth > _MAX_NESTING:
            raise _too_large("recipe")
    _gate_recipe(fitted)
    return _swap_searches(clone(fitted), fitted, path, "", depth + 1)


def _swap_searches(template: object, fitted: object, path: str, owner: str, depth: int) -> object:
    """``template`` (part of a clone of ``fitted``) with each search in it replaced by its chosen recipe.

    The fitted search sits at the same place in ``fitted`` when its owner fits its parts in place (a
    Pipeline's steps); where the owner fits copies instead (a StackingClassifier's ``estimators``), the
    search there was never fitted and is refused.
    """
    if depth > _MAX_NESTING:
        raise _too_large("recipe")
    if template is fitted:  # clone kept the model's own object (a FrozenEstimator): never refit, left alone
        return template
    if issubclass(type(template), BaseEstimator):
        if _is_search(template) or _is_search(fitted):
            if not _is_search(fitted):
                raise _search_not_refit(template, path)
            return _recipe(fitted, path, depth + 1)
        counterparts = fitted.get_params(deep=False) if type(fitted) is type(template) else {}
        changes = {}
        for key, value in template.get_params(deep=False).items():
            swapped = _swap_searches(value, counterparts.get(key), _join(path, key), path, depth + 1)
            if swapped is not value:
                changes[key] = swapped
        if changes:
            template.set_params(**changes)
        return template
    if type(template) in (list, tuple):
        same = type(fitted) is type(template) and len(fitted) == len(template)
        items = []
        for item, counterpart in zip(template, fitted if same else [None] * len(template), strict=True):
            named = type(item) is tuple and item and type(item[0]) is str
            sub = _join(owner, item[0]) if named and _named_entries(template) else path
            items.append(_swap_searches(item, counterpart, sub, owner, depth + 1))
        if any(new is not old for new, old in zip(items, template, strict=True)):
            return type(template)(items)
    return template


def _fitted_graph(model: object) -> tuple[dict[type, list[object]], set[int]]:
    """The fitted model's scikit-learn estimators by class, and the ids of every object it holds.

    Their fitted attributes (``estimators_``, ``n_iter_``, ``coefs_``) are the evidence of how large the
    recipe was when it produced the model, wherever they sit: a Pipeline's fitted steps, a search's
    best_estimator_, a StackingClassifier's ``estimators_``, a calibrator's fitted classifiers.
    """
    found: dict[type, list[object]] = {}
    seen: set[int] = set()
    todo: list[object] = [model]
    for obj in _unseen(todo, seen, "fitted model"):
        kind = type(obj)
        if issubclass(kind, dict):
            todo += dict.values(obj)
        elif kind in (list, tuple, set, frozenset):
            todo += obj
        elif kind in (np.ndarray, np.ma.MaskedArray):
            if obj.dtype.hasobject:
                todo += obj.ravel().tolist()
        elif boosting.wrapper_name(kind) is not None:
            found.setdefault(kind, []).append(obj)  # its fitted state is a booster, sized by boosting.py
        elif kind is boosting.NamedClasses or (
            isinstance(kind.__module__, str) and kind.__module__.startswith("sklearn.")
        ):
            if issubclass(kind, BaseEstimator):
                found.setdefault(kind, []).append(obj)
            todo += vars(obj).values() if hasattr(obj, "__dict__") else ()
    return found, seen


def _whole(value: object) -> int | None:
    """``value`` as an int when it is one (not a bool), else ``None`` (left to scikit-learn to reject)."""
    return int(value) if type(value) is int or isinstance(value, np.integer) else None


def _whole_numbers(value: object) -> tuple[int, ...] | None:
    """An int, or a list / tuple / array of ints, as a tuple of ints; ``None`` for anything else."""
    if _whole(value) is not None:
        return (_whole(value),)
    if type(value) in (list, tuple, np.ndarray):
        items = [_whole(item) for item in (value.ravel().tolist() if type(value) is np.ndarray else value)]
        if items and None not in items:
            return tuple(items)
    return None


def _distinct_rounds(members: object) -> int | None:
    """Rounds in a fitted list (or rounds x classes array) of sub-models, counting each object once.

    Once, because a pickle may repeat one tree a million times for the price of one: a length made that
    way is no evidence of a fitted size.
    """
    if type(members) in (list, tuple):
        return len({id(member) for member in members})
    if type(members) is np.ndarray and members.dtype.hasobject and members.ndim in (1, 2):
        per_round = members.shape[1] if members.ndim == 2 and members.shape[1] else 1
        return -(-len({id(member) for member in members.ravel().tolist()}) // per_round)
    return None


def _ensemble_size(fitted: object) -> int | None:
    """Rounds a fitted ensemble holds (forests, extra trees, bagging, AdaBoost, gradient boosting)."""
    size = _distinct_rounds(vars(fitted).get("estimators_"))
    stages = _whole(vars(fitted).get("n_estimators_"))  # gradient boosting: stages run before early stopping
    return min(size, stages) if size is not None and stages is not None else size


def _ensemble_stops_early(fitted: object) -> bool:
    if isinstance(fitted, (AdaBoostClassifier, AdaBoostRegressor)):  # stops at a perfect fit
        return True
    return isinstance(fitted, (GradientBoostingClassifier, GradientBoostingRegressor)) and (
        vars(fitted).get("n_iter_no_change") is not None
    )


def _iterations(fitted: object) -> int | None:
    """Iterations a fitted iterative model ran (``n_iter_``; per class or fold, the most)."""
    if isinstance(fitted, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        # One list of trees per iteration; its n_iter_ is only the length of that list.
        predictors = vars(fitted).get("_predictors")
        if type(predictors) is not list or not all(type(trees) is list for trees in predictors):
            return None
        per_round = max((len(trees) for trees in predictors), default=1) or 1
        return -(-len({id(tree) for trees in predictors for tree in trees}) // per_round)
    ran = vars(fitted).get("n_iter_")
    if type(ran) is np.ndarray and ran.size and ran.dtype.kind in "iu":
        ran = ran.max()
    return _whole(ran)


def _iterations_stop_early(fitted: object) -> bool:
    if isinstance(fitted, (HistGradientBoostingClassifier, HistGradientBoostingRegressor)):
        return vars(fitted).get("do_early_stopping_") is True
    return True  # solvers (MLP, logistic regression, SGD, SVMs) stop when they converge


# A size parameter; the size a fitted instance shows (None when it is not fitted); whether fewer fitted
# rounds than declared can be honest.
_SIZE_RULES: tuple[tuple[str, Callable[[object], int | None], Callable[[object], bool]], ...] = (
    ("n_estimators", _ensemble_size, _ensemble_stops_early),
    ("max_iter", _iterations, _iterations_stop_early),
)


def _default(kind: type, name: str) -> object:
    try:
        return inspect.signature(kind).parameters[name].default
    except (KeyError, TypeError, ValueError):
        return None


def _size_limit(kind: type, name: str, fitted: list[object], size, stops_early) -> int | None:
    """The most ``name`` may be in a refit of a ``kind``: what its fitted instances show, else the default."""
    default = _whole(_default(kind, name))
    default = default if default is not None and default > 0 else None
    limits = []
    for instance in fitted:
        shown = size(instance)
        if shown is None:
            continue
        if stops_early(instance):
            shown = max(_EARLY_STOPPING_HEADROOM * shown + _EARLY_STOPPING_SLACK, default or 0)
        limits.append(shown)
    return max(max(limits), 1) if limits else default


def _hidden_layer_changes(params: dict, fitted: list[object]) -> dict:
    """An MLP refit with no more weights than the largest fitted one of its class (from ``coefs_``)."""
    declared = _whole_numbers(params.get("hidden_layer_sizes"))
    largest: list[np.ndarray] | None = None
    for instance in fitted:
        coefs = vars(instance).get("coefs_")
        if not (type(coefs) is list and coefs and all(type(c) is np.ndarray and c.ndim == 2 for c in coefs)):
            continue
        if largest is None or sum(c.size for c in coefs) > sum(c.size for c in largest):
            largest = coefs
    if declared is None or largest is None:
        return {}
    widths = (largest[0].shape[0], *declared, largest[-1].shape[1])
    if sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True)) <= sum(c.size for c in largest):
        return {}
    return {"hidden_layer_sizes": tuple(c.shape[1] for c in largest[:-1])}


def _degree_changes(params: dict, fitted: list[object]) -> dict:
    """PolynomialFeatures' output width grows as features ** degree: no higher than the fitted degree."""
    declared = _whole_numbers(params.get("degree"))  # an int or a (min, max) pair
    shown = [
        (_whole(vars(instance).get("_min_degree")), _whole(vars(instance).get("_max_degree")))
        for instance in fitted
    ]
    shown = [pair for pair in shown if None not in pair]
    if declared is None or not shown or declared[-1] <= max(high for _, high in shown):
        return {}
    low, high = max(shown, key=lambda pair: pair[1])
    return {"degree": high if low == 0 else (low, high)}


def _cost_changes(node: BaseEstimator, params: dict, fitted: list[object]) -> dict:
    """Size parameters capped at what the fitted model shows its recipe was trained with.

    Capped rather than refused: the fitted model is what the audit measures, and its fitted size is the
    size its recipe produced. A declared size it never reached is a file edited after fitting (a forest of
    one tree declaring a million) or warm-start bookkeeping, and either way reference models as large as
    the fitted one are the faithful ones; refusing would fail honest audits and buy nothing, since a capped
    refit costs about what the fitted model did. Where fewer fitted rounds than declared can be honest
    (early stopping, a solver's convergence) the refit keeps headroom above the fitted count
    (``_EARLY_STOPPING_HEADROOM``) and is never capped below scikit-learn's default; where the model holds
    no fitted instance of the class to size it by (a SequentialFeatureSelector keeps none), the default
    is the cap. Counts come from distinct fitted sub-models, which cost the file their size, not from
    lengths a pickle can repeat for free. ``n_iter_`` is only a number the file states: a file that
    states a large one keeps a large ``max_iter`` (the server's time limit bounds that).
    """
    kind = type(node)
    changes: dict = {}
    for name, size, stops_early in _SIZE_RULES:
        declared = _whole(params.get(name))
        if declared is None or declared <= 0:  # absent, invalid, or SVC's -1 (its solver's own limit)
            continue
        limit = _size_limit(kind, name, fitted, size, stops_early)
        if limit is not None and declared > limit:
            changes[name] = limit
    if isinstance(node, (MLPClassifier, MLPRegressor)):
        changes.update(_hidden_layer_changes(params, fitted))
    if isinstance(node, PolynomialFeatures):
        changes.update(_degree_changes(params, fitted))
    # libsvm's kernel cache, in MB per fit and per worker: it changes speed, never the result.
    cache, default_cache = params.get("cache_size"), _default(kind, "cache_size")
    if type(cache) in (int, float) and type(default_cache) in (int, float) and cache > default_cache:
        changes["cache_size"] = default_cache
    return changes


def _neutral_changes(params: dict) -> dict:
    """No cache folder, no worker pools, no printing: none of them changes what a refit learns."""
    changes: dict = {}
    if params.get("memory") is not None:
        changes["memory"] = None
    if "n_jobs" in params and _whole(params["n_jobs"]) != 1:
        changes["n_jobs"] = 1
    verbose = params.get("verbose")
    if type(verbose) in (bool, np.bool_):
        if verbose:
            changes["verbose"] = False  # bool-only parameters (Pipeline, MLP) refuse 0
    elif (type(verbose) in (int, float) or isinstance(verbose, np.number)) and verbose != 0:
        changes["verbose"] = 0
    return changes


def has_recipe(model: object) -> bool:
    """Whether ``model`` is an estimator whose recipe can be retrained: a scikit-learn estimator, a boosting
    library's wrapper, or a native booster with class names (an ONNX graph's adapter is none of them)."""
    kind = type(model)
    return issubclass(kind, BaseEstimator) or boosting.wrapper_name(kind) is not None


def contained_clone(target: object, recipe: dict | None = None) -> BaseEstimator:
    """An unfitted recipe of ``target`` that is safe to retrain, and as large as what was fitted.

    ``recipe``, when given, is the bundle's ``reference_recipe`` (``{"estimator", "params"}``): it is
    retrained instead of ``target``'s own, through the same gate and with the same neutral changes (its
    sizes are the user's choice, so not capped by the model's).

    * A search (GridSearchCV, RandomizedSearchCV, the halving searches, anything with ``best_estimator_``)
      is retrained from its ``best_estimator_``, at the top or nested in place (a Pipeline step); one
      without (``refit=False``) is refused (``search_not_refit``).
    * Every value the recipe's parameters reach passes the loader's allowlist (``unsafe_recipe``), see
      :func:`_gate_recipe`.
    * Every estimator at any depth gets ``memory=None``, ``n_jobs=1`` and no ``verbose``.
    * Size parameters are capped at what the fitted model shows, see :func:`_cost_changes`; the boosting
      libraries' rounds at what their boosters hold, and their own neutral changes (one thread, no
      printing, no files), see :mod:`.boosting`.
    * A pipeline ending in trees fits them on a dense matrix, see :mod:`.dense_fit`.

    Errors are :class:`ModelError` with those codes; their messages name classes and parameter paths
    (sanitised) but never quote the model's values.
    """
    if recipe is None:
        template = _recipe(target, "", 0)
    elif type(target) is boosting.NamedClasses:  # the labels are the class names config.json gives
        template = boosting.NamedClasses(build_recipe(recipe), target.classes)
    else:
        template = build_recipe(recipe)
    estimators = _gate_recipe(
        template, named=recipe is not None
    )  # the swapped-in recipes too: what is fitted
    fitted, held = _fitted_graph(target) if recipe is None else ({}, set())
    for node, _ in estimators:
        if id(node) in held:  # the model's own (clone keeps a FrozenEstimator): never refit, left alone
            continue
        params = node.get_params(deep=False)
        if boosting.wrapper_name(type(node)) is not None:
            changes = boosting.neutral_changes(type(node), params)
            changes |= boosting.size_changes(type(node), params, fitted.get(type(node), []))
        elif recipe is not None:
            changes = _neutral_changes(params)
        else:
            changes = _neutral_changes(params) | _cost_changes(node, params, fitted.get(type(node), []))
        if changes:
            node.set_params(**changes)
    return with_dense_fit(template)  # refits the same trees, several times faster on one-hot input


def seed_unset_random_states(model: object, seed: int, k: int) -> None:
    """Give every unset ``random_state`` of the unfitted ``model`` a seed: refit ``k``'s of the audit's ``seed``.

    The reference stage and the what-if seed their ``k``-th refit alike, so the same recipe on the same rows
    is the same model in both (and a recipe without seeds gives the same report on every run).
    """
    unset = [
        name
        for name, value in model.get_params(deep=True).items()
        if name.endswith("random_state") and value is None
    ]
    if unset:
        state = int(np.random.default_rng([seed, 7411, k]).integers(2**31 - 1))
        model.set_params(**dict.fromkeys(unset, state))


def refit_key(recipe: dict | None, seed: int, k: int, rows: np.ndarray) -> str:
    """What makes two refits the same model: the recipe (``None``: the model's own), the seed of refit ``k``
    (:func:`seed_unset_random_states`) and its training ``rows`` (``(n,)`` booleans over the audited rows)."""
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode())
    digest.update(f"|{seed}|{k}|{len(rows)}|".encode())
    digest.update(np.packbits(np.asarray(rows, dtype=bool)).tobytes())
    return digest.hexdigest()
