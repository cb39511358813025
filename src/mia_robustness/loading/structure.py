"""The check after loading: every object reachable from the model, before any of its methods is called.

It visits containers, dict keys as well as values, object and masked arrays, slices, and the attributes
of every admitted object, scikit-learn's or not, and refuses

* text vectorizers that read files named by the data (``input="filename"`` / ``"file"``);
* decision trees and histogram-boosting predictors whose node arrays point out of range (their native
  prediction loops trust these indices);
* a model with more than :data:`_MAX_CHECKED_OBJECTS` objects to check, rather than pass it half
  checked.

Not protected: other admitted scikit-learn code fed hostile state, such as a crafted but well-typed
``KDTree`` (index arrays out of range), which is not checked here.
"""

from __future__ import annotations

import ctypes
import inspect
import sys
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LimitError, ModelError, UnsafeModelError
from .budget import _CONTAINERS
from .messages import _clean, _name

#: Most objects (containers and instances; numbers and strings are not counted) the check after loading
#: visits. A model holding more is refused: a check that stopped early would pass what it did not see.
_MAX_CHECKED_OBJECTS = 3_000_000


def _damaged_tree(path: Path, owner: Any, detail: str) -> ModelError:
    return ModelError(
        f"{_name(path)} holds a {_clean(type(owner).__name__)} whose tree structure is damaged ({detail}); "
        "predicting with it would read outside its arrays. Re-save the model from the original fitted object",
        code="corrupt_model",
    )


def _check_child_links(path: Path, owner: Any, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> None:
    """Every internal node's children come after it and exist (scikit-learn numbers nodes depth first)."""
    nodes = np.arange(len(left))
    internal = ~leaf
    for child in (left, right):
        if ((child[internal] <= nodes[internal]) | (child[internal] >= len(left))).any():
            raise _damaged_tree(path, owner, "a child index out of range")


def _check_tree_structure(path: Path, obj: Any, tree_class: Any, hist_class: Any) -> None:
    """Refuse decision trees and histogram-boosting predictors whose node arrays point out of range.

    Their prediction loops are native code that trusts these indices; a damaged or crafted pickle of an
    allowlisted class would otherwise crash the process (found by fuzzing) or read foreign memory.
    """
    if tree_class is not None and isinstance(obj, tree_class) and hasattr(obj, "tree_"):
        tree = obj.tree_
        left, right, feature = tree.children_left, tree.children_right, tree.feature
        n = tree.node_count
        if not (len(left) == len(right) == len(feature) == n == tree.value.shape[0]) or n < 1:
            raise _damaged_tree(path, obj, "arrays of different lengths")
        leaf = left == -1
        if ((right == -1) != leaf).any():
            raise _damaged_tree(path, obj, "a node with one child")
        _check_child_links(path, obj, left, right, leaf)
        width = min(tree.n_features, getattr(obj, "n_features_in_", tree.n_features))
        if ((feature[~leaf] < 0) | (feature[~leaf] >= width)).any():
            raise _damaged_tree(path, obj, "a split on a feature that does not exist")
    if hist_class is not None and isinstance(obj, hist_class) and hasattr(obj, "_predictors"):
        width = int(getattr(obj, "n_features_in_", 0))
        for predictors in obj._predictors:
            for predictor in predictors:
                nodes = predictor.nodes
                leaf = nodes["is_leaf"].astype(bool)
                if len(nodes) < 1:
                    raise _damaged_tree(path, obj, "an empty tree")
                _check_child_links(
                    path, obj, nodes["left"].astype(np.int64), nodes["right"].astype(np.int64), leaf
                )
                feature = nodes["feature_idx"][~leaf].astype(np.int64)
                if ((feature < 0) | (feature >= width)).any():
                    raise _damaged_tree(path, obj, "a split on a feature that does not exist")


# Modules of the boosting libraries' compiled model objects (CatBoost's ``_CatBoost``): what they hold
# lives in C++, rebuilt from the saved bytes by the library itself, and is no Python object to walk.
_NATIVE_BOOSTER_MODULES = frozenset({"_catboost", "catboost._catboost"})

# Values that hold nothing else: never pushed, never counted. numpy's number, bool and text scalars too.
_LEAVES = frozenset(
    {str, bytes, bytearray, memoryview, int, float, complex, bool, type(None), range}
    | {kind for kind in np.sctypeDict.values() if not issubclass(kind, (np.void, np.object_))}
)


def _slot_values(obj: Any) -> list[Any]:
    values = []
    for kind in type(obj).__mro__:
        names = kind.__dict__.get("__slots__", ())
        for name in [names] if isinstance(names, str) else names:
            if not isinstance(name, str) or name in ("__dict__", "__weakref__"):
                continue
            if name.startswith("__") and not name.endswith("__"):
                name = f"_{kind.__name__.lstrip('_')}{name}"  # private names are mangled
            values.append(getattr(obj, name, None))
    return values


def _inner_objects(obj: Any, tree_class: Any) -> list[Any]:
    """Everything ``obj`` holds that could hold something else, so that a check sees all of a model."""
    found: list[Any] = []
    kind = type(obj)
    if isinstance(obj, (list, tuple, set, frozenset)):
        found += obj
    elif isinstance(obj, dict):
        found += [*obj.keys(), *obj.values()]
        if isinstance(obj, defaultdict):
            found.append(obj.default_factory)
    elif isinstance(obj, np.ndarray):
        if kind is not np.ndarray:  # a masked array: all of its data (masked too), then its fields
            found.append(obj.view(np.ndarray))
        elif obj.dtype.hasobject:
            found += obj.ravel().tolist()
        found.append(obj.base)
    elif isinstance(obj, np.generic):
        return [obj.item()] if obj.dtype.hasobject else []
    elif isinstance(obj, slice):
        return [item for item in (obj.start, obj.stop, obj.step) if type(item) not in _LEAVES]
    elif isinstance(obj, (type, types.ModuleType, np.dtype, np.ufunc)) or inspect.isroutine(obj):
        return []  # admitted code, not model data
    elif tree_class is not None and kind is tree_class:
        return []  # node and value arrays of plain numbers, checked by _check_tree_structure
    elif isinstance(obj, ctypes._SimpleCData) or kind.__module__ in _NATIVE_BOOSTER_MODULES:
        return []  # a booster's handle into its library's C++ model, built by the library's own loader
    if kind not in (list, tuple, set, frozenset, dict, np.ndarray):  # subclasses and objects: their fields
        attributes = getattr(obj, "__dict__", None)
        slots = _slot_values(obj)
        if isinstance(attributes, dict):
            found += attributes.values()
        found += slots
        if attributes is None and not slots and not isinstance(obj, _CONTAINERS + (np.ndarray,)):
            # An extension (Cython) object: its contents are what it pickles to.
            reduced = obj.__reduce_ex__(4)
            if isinstance(reduced, tuple):
                found += reduced[1:3]
                found += [list(part) for part in reduced[3:5] if part is not None]
    return [item for item in found if type(item) not in _LEAVES]


def _check_loaded(path: Path, model: Any) -> None:
    """Refuse allowlisted objects configured to read files named by the data they are given, and trees
    whose node arrays point out of range, anywhere in the model; refuse a model too big to check."""
    text = sys.modules.get("sklearn.feature_extraction.text")
    mixin = text._VectorizerMixin if text is not None else ()
    tree_module = sys.modules.get("sklearn.tree")
    tree_class = tree_module.BaseDecisionTree if tree_module is not None else None
    tree_internal = sys.modules.get("sklearn.tree._tree")
    tree_cython = tree_internal.Tree if tree_internal is not None else None
    hist_module = sys.modules.get("sklearn.ensemble._hist_gradient_boosting.gradient_boosting")
    hist_class = hist_module.BaseHistGradientBoosting if hist_module is not None else None
    seen: dict[int, Any] = {}  # keeps every visited object alive, so no id is reused during the walk
    todo = [model]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if len(seen) > _MAX_CHECKED_OBJECTS:
            raise LimitError(
                f"{_name(path)} holds more than {_MAX_CHECKED_OBJECTS:,} objects, too many to check that none "
                "reads files or holds a damaged tree; save a smaller model",
                code="model_too_large",
            )
        if isinstance(obj, mixin):
            value = getattr(obj, "input", "content")
            if not (isinstance(value, str) and str.__eq__(value, "content")):
                known = isinstance(value, str) and str(value) in ("filename", "file")
                shown = f"input={str(value)!r}" if known else "an input other than 'content'"
                raise UnsafeModelError(
                    f"{_name(path)} holds a {_clean(type(obj).__name__)} with {shown}, which would read files "
                    "named by the data; re-save it with input='content'",
                    code="unsafe_model",
                )
        _check_tree_structure(path, obj, tree_class, hist_class)
        todo.extend(_inner_objects(obj, tree_cython))
