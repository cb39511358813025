"""The gate between a pickle stream and admitted code: every call the allowlist admits is checked before
it runs, and so is every ``BUILD`` of a numpy array or dtype.

* Globals go through :func:`.policy._resolve`; a refused one becomes :class:`_Refused`, which does
  nothing, so unpickling can go on to name every refused global without running any of them.
* ``BUILD`` is refused on a class, function or module, and on one of numpy's shared built-in dtypes (it
  would change scikit-learn or numpy itself for every later audit in the process); ``SETITEM`` /
  ``APPEND`` / ``ADDITEMS`` on anything but a dict, list or set.
* No array of Python objects (``dtype=object``, a structured dtype with an object field, numpy's
  ``StringDType``) is ever made from raw bytes, each element of which would be whatever lies at an
  address the file chooses: not through ``numpy.ndarray(shape, dtype, buffer)``, ``ndarray.__setstate__``,
  ``_frombuffer``, ``scalar`` nor joblib's ``NumpyArrayWrapper``. Object arrays are built only from their
  objects: the list numpy pickles them as (exactly one object per element; a short list would leave
  garbage pointers). A dtype rebuilt by ``BUILD`` must be the one numpy's own constructor makes from its
  fields (a forged flag that hides an object field, or object fields overlapping others, would let raw
  bytes through as pointers).
* What each call would build is charged to the load's memory budget (:mod:`.budget`) by a rule chosen by
  what is called (:func:`_rule_for`). ``bytes`` / ``bytearray`` of an integer size, ``str()`` of an
  object, shapes whose size overflows and strided views (zero, overlapping or non-contiguous strides) are
  refused outright.
* ``_sklearn_version`` is noted from each ``BUILD`` state before scikit-learn removes it (and replaced
  when it does not look like a version, so scikit-learn's warning never quotes the file).
"""

from __future__ import annotations

import contextlib
import copyreg
import importlib
import inspect
import math
import pickle
import types
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsafeModelError
from .budget import (
    _CONTAINERS,
    _LEGACY_KINDS,
    _MAX_INTP,
    _SCALAR_TYPES,
    _Budget,
    _contiguous_strides,
    _dtype_problem,
    _flat_size,
    _index,
    _items,
    _layout_problem,
    _range_length,
    _raw_safe,
    _shape,
    _shared_dtype,
)
from .messages import _clean, _shown, _unsafe, _version_or_none
from .policy import _Disallowed, _resolve


class _Refused:
    """Stand-in returned for a refused global so unpickling can go on to name every refused global.

    It does nothing when called or built, so the refused code never runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


# Rules for what a call would build, keyed by what is called. Each takes the gate, the callable and its
# arguments, and raises or charges the gate's budget; none calls anything from the file.
_Rule = Callable[["_Gate", Any, tuple, dict], None]


def _rule_nested(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """Default: whatever is passed may be expanded all the way down (``numpy.array(nested_list)``)."""
    for value in (*args, *kwargs.values()):
        gate.budget.charge(gate.nested_size(value), "the arguments of a constructor call")


def _bind(names: tuple[str, ...], args: tuple, kwargs: dict) -> dict[str, Any] | None:
    """Arguments by parameter name, or ``None`` when the callee would refuse them (too many)."""
    if len(args) > len(names):
        return None
    bound = dict(zip(names, args, strict=False))
    bound.update(kwargs)
    return bound


def _rule_ndarray(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``numpy.ndarray(shape, dtype, buffer, offset, strides, order)``: raw buffers only for plain numbers,
    strides only contiguous ones, size charged."""
    bound = _bind(("shape", "dtype", "buffer", "offset", "strides", "order"), args, kwargs)
    if bound is None or "shape" not in bound:
        return  # numpy refuses the call itself
    shape, dtype = _shape(bound["shape"]), gate.dtype(bound.get("dtype"))
    if bound.get("buffer") is not None and not _raw_safe(dtype):
        raise gate.unsafe(
            "builds an array of Python objects from raw bytes (each element would be whatever lies at an "
            "address the file chooses)"
        )
    strides = bound.get("strides")
    if strides is not None and not _contiguous_strides(shape, dtype.itemsize, strides):
        raise gate.unsafe("builds a strided view of memory (zero, overlapping or non-contiguous strides)")
    gate.charge_array(shape, dtype)


def _rule_reconstruct(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``_reconstruct(subtype, shape, dtype)``: an empty array numpy then fills with ``__setstate__``."""
    bound = _bind(("subtype", "shape", "dtype"), args, kwargs)
    if bound is not None and "shape" in bound and "dtype" in bound:
        gate.charge_array(_shape(bound["shape"]), gate.dtype(bound["dtype"]))


def _rule_mareconstruct(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``_mareconstruct(subtype, baseclass, baseshape, basetype)``: data and a mask of that shape."""
    bound = _bind(("subtype", "baseclass", "baseshape", "basetype"), args, kwargs)
    if bound is not None and "baseshape" in bound and "basetype" in bound:
        gate.charge_array(_shape(bound["baseshape"]), gate.dtype(bound["basetype"]), extra_per_item=1)


def _rule_frombuffer(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``_frombuffer(buffer, dtype, shape, order)`` (protocol 5): a view of bytes, so plain numbers only."""
    bound = _bind(("buf", "dtype", "shape", "order", "axis_order"), args, kwargs)
    if bound is None or "dtype" not in bound or "shape" not in bound:
        return
    dtype = gate.dtype(bound["dtype"])
    if not _raw_safe(dtype):
        raise gate.unsafe("builds an array of Python objects from raw bytes")
    gate.charge_array(_shape(bound["shape"]), dtype)


def _rule_scalar(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``scalar(dtype, bytes)``: a numpy scalar read from bytes, so plain numbers only."""
    bound = _bind(("dtype", "obj"), args, kwargs)
    if bound is None or "dtype" not in bound:
        return
    dtype = gate.dtype(bound["dtype"])
    if not _raw_safe(dtype):
        raise gate.unsafe("builds a numpy scalar holding Python objects from raw bytes")
    gate.budget.charge(dtype.itemsize, "a numpy scalar")


def _rule_masked(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``MaskedArray(data, mask, dtype, ...)``: data and mask are expanded like ``numpy.array`` does."""
    if "dtype" in kwargs or len(args) > 2:
        gate.dtype(kwargs["dtype"] if "dtype" in kwargs else args[2])
    _rule_nested(gate, func, args, kwargs)


def _rule_dtype(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``numpy.dtype(spec, align, copy)`` allocates nothing; a dtype passed in must be sound."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, np.dtype):
            gate.dtype(value)


def _rule_void(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``numpy.void(n)`` is ``n`` zero bytes; ``numpy.void(data, dtype)`` reads data as that dtype."""
    if "dtype" in kwargs or len(args) > 1:
        dtype = gate.dtype(kwargs["dtype"] if "dtype" in kwargs else args[1])
        if not _raw_safe(dtype):
            raise gate.unsafe("builds a numpy scalar holding Python objects from raw bytes")
    size = _index(args[0]) if args else None
    if size is not None:  # an int, a numpy integer or a 0-d integer array: a size
        gate.budget.charge(max(size, 0), "a numpy void scalar")
    else:
        _rule_nested(gate, func, args, kwargs)


def _rule_bytes(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``bytes`` / ``bytearray``: from text, bytes or a list of ints, never from an integer size."""
    source = args[0] if args else kwargs.get("source", kwargs.get("string", b""))
    if not isinstance(source, (str, bytes, bytearray, list, tuple)):
        what = "an integer size" if _index(source) is not None else _shown(source)
        raise gate.unsafe(f"builds {_clean(func.__name__)} from {what}")
    gate.budget.charge(_flat_size(source), f"a {_clean(func.__name__)}")


def _rule_str(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``str``: only text or decoded bytes; ``str(obj)`` of an object (its repr) is refused."""
    source = args[0] if args else kwargs.get("object", "")
    if not isinstance(source, (str, bytes, bytearray)):
        raise gate.unsafe("turns an object into text with str()")
    gate.budget.charge(len(source), "a string")


def _rule_range(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``range`` allocates nothing, but whatever walks it does: charged as if expanded."""
    bounds = [_index(arg) for arg in args]
    if args and not kwargs and None not in bounds:
        with contextlib.suppress(TypeError, ValueError):
            gate.budget.charge(_range_length(range(*bounds)) * 8, "a range")


def _rule_container(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``list``, ``tuple``, ``set``, ``dict`` and kin copy what they are given one level deep."""
    per_item = 8 if func in (list, tuple) else 64  # hash tables take several slots per entry
    values = [*args, *kwargs.values()]
    if func is defaultdict and args:
        values = values[1:]  # the default factory
    for value in values:
        if isinstance(value, (str, bytes, bytearray, *_CONTAINERS)):
            count = len(value)
        elif isinstance(value, range):
            count = _range_length(value)
        elif isinstance(value, np.ndarray):
            count = value.size
        else:
            count = 0  # an admitted object iterates what it holds, which is already built
        gate.budget.charge(count * per_item, f"a {func.__name__} of {count:,} items")


def _rule_sparse(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """scipy sparse classes allocate index pointers by the shape they are given."""
    shapes = [kwargs.get("shape"), *args[:2]]
    for shape in shapes:
        if isinstance(shape, tuple) and 1 <= len(shape) <= 2:
            with contextlib.suppress(TypeError, ValueError):
                gate.budget.charge((sum(_shape(shape)) + 2) * 8, "the index of a sparse matrix")
    _rule_nested(gate, func, args, kwargs)


def _rule_tree(gate: _Gate, func: Any, args: tuple, kwargs: dict) -> None:
    """``Tree(n_features, n_classes, n_outputs)`` allocates per output."""
    if len(args) == 3 and isinstance(args[2], (int, np.integer)):
        gate.budget.charge(max(int(args[2]), 0) * 16, "a decision tree's outputs")
    _rule_nested(gate, func, args, kwargs)


_CLASS_RULES: tuple[tuple[type, _Rule], ...] = (
    (np.ma.MaskedArray, _rule_masked),
    (np.ndarray, _rule_ndarray),
    (np.dtype, _rule_dtype),
    (np.void, _rule_void),
    (np.generic, _rule_nested),
    (bytes, _rule_bytes),
    (bytearray, _rule_bytes),
    (str, _rule_str),
    (range, _rule_range),
)
_EXACT_CONTAINERS = (list, tuple, set, frozenset, dict, OrderedDict, defaultdict)
_FUNCTION_RULES: list[tuple[Any, _Rule]] | None = None


def _function_rules() -> list[tuple[Any, _Rule]]:
    """numpy's reconstruction helpers (by identity: numpy.core names are shims for numpy._core ones)."""
    global _FUNCTION_RULES
    if _FUNCTION_RULES is None:
        rules = []
        for modules, name, rule in (
            (("numpy._core.multiarray", "numpy.core.multiarray"), "_reconstruct", _rule_reconstruct),
            (("numpy._core.multiarray", "numpy.core.multiarray"), "scalar", _rule_scalar),
            (("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer", _rule_frombuffer),
            (("numpy.ma.core",), "_mareconstruct", _rule_mareconstruct),
        ):
            for module in modules:
                with contextlib.suppress(ImportError, AttributeError):
                    rules.append((getattr(importlib.import_module(module), name), rule))
                    break
        _FUNCTION_RULES = rules
    return _FUNCTION_RULES


def _rule_for(func: Any) -> _Rule:
    for builder, rule in _function_rules():
        if func is builder:
            return rule
    if isinstance(func, type):
        for base, rule in _CLASS_RULES:
            if issubclass(func, base):
                return rule
        if func in _EXACT_CONTAINERS:
            return _rule_container
        module = getattr(func, "__module__", None)
        if isinstance(module, str) and module.startswith("scipy.sparse"):
            return _rule_sparse
        if module == "sklearn.tree._tree" and func.__name__ == "Tree":
            return _rule_tree
    return _rule_nested


class _Gate:
    """What one file may do: the allowlist for globals, refused names, saved versions, and the checks on
    what admitted code builds for it (pointers, memory budget, layout).

    Parameters
    ----------
    name:
        The model file's name, cleaned, for messages.
    max_bytes:
        The memory budget of the load (see :class:`_Budget`).
    """

    def __init__(self, name: str = "the model file", max_bytes: int | None = None) -> None:
        self.name = name
        self.budget = _Budget(max_bytes, name)
        self.refused: list[str] = []
        self.versions: list[tuple[Any, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _resolve(module, name)
        except _Disallowed:
            label = _clean(f"{module}.{name}")
            if label not in self.refused:
                self.refused.append(label)
            if len(self.refused) >= 20:  # enough to name; no point reading on
                raise
            return _Refused

    def unsafe(self, what: str) -> UnsafeModelError:
        return _unsafe(self.name, what)

    def dtype(self, value: Any) -> np.dtype:
        """``value`` as a dtype (``None`` is float64, as for numpy), refused unless sound."""
        dtype = value if isinstance(value, np.dtype) else np.dtype(value)
        problem = _dtype_problem(dtype)
        if problem is not None:
            raise self.unsafe(f"describes a numpy dtype that {problem}")
        return dtype

    def charge_array(self, shape: tuple[int, ...], dtype: np.dtype, extra_per_item: int = 0) -> None:
        count = math.prod(shape)
        nbytes = count * (max(dtype.itemsize, 1) + extra_per_item)
        if nbytes > _MAX_INTP:
            raise self.unsafe("asks for an array whose size overflows")
        self.budget.charge(nbytes, f"an array of {count:,} elements")

    def nested_size(self, value: Any) -> int:
        """Bytes ``value`` takes when expanded all the way down, as ``numpy.array`` or a repr would.

        A container reached twice counts twice (expanding it twice costs that), but is sized once, so a
        list nested through shared references (a few bytes of pickle for 10^9 elements) is sized at once.
        A container that holds itself is refused.
        """
        if not isinstance(value, _CONTAINERS):
            return _flat_size(value)
        sizes: dict[int, int] = {}
        path: set[int] = set()
        stack: list[tuple[Any, list[Any] | None, int]] = [(value, None, 0)]
        while stack:
            item, nested, own = stack.pop()
            key = id(item)
            if nested is None:
                if key in sizes:
                    continue
                if key in path:
                    raise self.unsafe("passes a container that holds itself to a constructor")
                inner = _items(item)
                self.budget.examine(len(inner))
                nested = [entry for entry in inner if isinstance(entry, _CONTAINERS)]
                own = _flat_size(item) + sum(
                    _flat_size(entry)
                    for entry in inner
                    if type(entry) not in _SCALAR_TYPES and not isinstance(entry, _CONTAINERS)
                )
                path.add(key)
                stack.append((item, nested, own))
                stack.extend((entry, None, 0) for entry in nested)
            else:
                path.discard(key)
                sizes[key] = own + sum(sizes[id(entry)] for entry in nested)
        return sizes[id(value)]

    def check_call(self, func: Any, args: Any, kwargs: Any = None) -> None:
        """Refuse, or charge for, what ``func(*args, **kwargs)`` would build, before it is called.

        Used for every opcode that calls (``REDUCE``, ``NEWOBJ``, ``NEWOBJ_EX``, ``INST``, ``OBJ``). copyreg's
        helpers call ``base.__new__`` / ``cls.__new__`` for the file, so the rules of that class apply.
        """
        if type(args) is not tuple or (kwargs is not None and type(kwargs) is not dict):
            raise pickle.UnpicklingError("constructor arguments that are not a tuple")
        kwargs = kwargs or {}
        if func is _Refused or isinstance(func, _Refused):
            return
        if func is copyreg._reconstructor:
            if len(args) == 3 and args[1] is not object:
                self.check_call(args[1], (args[2],))
            return
        if func is copyreg.__newobj__:
            if args:
                self.check_call(args[0], args[1:])
            return
        if func is copyreg.__newobj_ex__:
            if len(args) == 3:
                self.check_call(*args)
            return
        _rule_for(func)(self, func, args, kwargs)

    def check_built(self, obj: Any) -> Any:
        """Refuse a just-built array whose elements overlap, or a dtype numpy would not have made."""
        if isinstance(obj, np.ndarray):
            for array in (obj, getattr(obj, "_mask", None)) if isinstance(obj, np.ma.MaskedArray) else (obj,):
                if isinstance(array, np.ndarray):
                    problem = _layout_problem(array)
                    if problem is not None:
                        raise self.unsafe(problem)
        elif isinstance(obj, np.dtype):
            self.dtype(obj)
        return obj

    def check_fill(self, target: Any, kinds: type | tuple[type, ...], opcode: str) -> bool:
        """Whether ``SETITEM`` / ``APPEND`` / ``ADDITEMS`` may fill ``target`` (only the container types
        pickle itself fills; not, say, ``ndarray.__setitem__``); ``False`` for a refused stand-in."""
        if target is _Refused or isinstance(target, _Refused):
            return False
        if not isinstance(target, kinds):
            raise pickle.UnpicklingError(f"{opcode} on an object that is not a container")
        return True

    def check_build(self, inst: Any, state: Any) -> None:
        """Before ``BUILD`` sets ``state`` on ``inst``: refuse it on classes, functions, modules and numpy's
        shared dtypes; check array and dtype state; note ``_sklearn_version`` before sklearn pops it."""
        if inst is _Refused or isinstance(inst, _Refused):
            return
        if isinstance(inst, (type, types.ModuleType)) or inspect.isroutine(inst) or _is_ufunc(inst):
            label = _clean(
                f"setting attributes of {getattr(inst, '__module__', '?')}.{getattr(inst, '__name__', '?')}"
            )
            if label not in self.refused:
                self.refused.append(label)
            raise _Disallowed
        booster_problem = _booster_state_problem(inst, state)
        if booster_problem is not None:
            raise self.unsafe(booster_problem)
        if isinstance(inst, np.dtype):
            if _shared_dtype(inst) or inst.kind not in _LEGACY_KINDS:
                raise self.unsafe(f"rewrites numpy's built-in dtype {_clean(inst.str)} for the whole process")
        elif isinstance(inst, np.ndarray):
            self._check_array_state(inst, state)
        if isinstance(state, dict):
            version = state.get("_sklearn_version")
            if isinstance(version, str):
                if _version_or_none(version) is None:
                    # sklearn would warn with this text; what reaches a terminal must not come from the file
                    state["_sklearn_version"] = "unknown"
                else:
                    self.versions.append((inst, version))

    def _check_array_state(self, inst: np.ndarray, state: Any) -> None:
        """``ndarray.__setstate__((version, shape, dtype, fortran, data))`` and the masked array's 7-tuple:
        object dtypes only from a list of exactly one object per element (a short list leaves garbage
        pointers, raw bytes are taken as pointers), size charged."""
        masked = isinstance(inst, np.ma.MaskedArray)
        if not isinstance(state, tuple) or len(state) not in ((7,) if masked else (4, 5)):
            return  # numpy refuses it
        shape, dtype, raw = (state[1], state[2], state[4]) if masked else (state[-4], state[-3], state[-1])
        if not isinstance(dtype, np.dtype):
            return  # numpy refuses it
        shape, dtype = _shape(shape), self.dtype(dtype)
        if not _raw_safe(dtype):
            if not isinstance(raw, list):
                raise self.unsafe(
                    "fills an array of Python objects from raw bytes (each element would be whatever lies "
                    "at an address the file chooses)"
                )
            if len(raw) != math.prod(shape):
                raise self.unsafe("fills an array of Python objects from a list of the wrong length")
        self.charge_array(shape, dtype, extra_per_item=1 if masked else 0)

    def check_wrapper(self, wrapper: Any) -> None:
        """joblib's ``NumpyArrayWrapper`` reads ``shape`` x ``dtype`` raw bytes that follow it; its fields
        come from the file. Object dtypes are read as a nested pickle through this gate instead."""
        fields = vars(wrapper)
        dtype = fields.get("dtype")
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("an array wrapper without a dtype")
        dtype, shape = self.dtype(dtype), _shape(fields.get("shape"))
        if fields.get("order") not in ("C", "F"):
            raise pickle.UnpicklingError("an array wrapper with an unknown order")
        if dtype.hasobject:
            return
        if not _raw_safe(dtype):
            raise self.unsafe("builds an array of Python objects from raw bytes")
        self.charge_array(shape, dtype)


# What each boosting class's own ``__getstate__`` writes for its saved model, which its ``__setstate__``
# hands to the library's C++ loader: (state key, the one type it may have, keys that must be absent).
# XGBoost's Booster: the model as a bytearray (XGBoosterUnserializeFromBuffer); LightGBM's: the model text
# (LGBM_BoosterLoadModelFromString; ``handle`` is an older spelling it would read instead); CatBoost's
# wrapper: the model as bytes (its _deserialize_model), never evaluation sets to load into the C++ object.
_BOOSTER_STATE: dict[tuple[str, str], tuple[str, type, tuple[str, ...]]] = {
    ("xgboost.core", "Booster"): ("handle", bytearray, ()),
    ("lightgbm.basic", "Booster"): ("_handle", str, ("handle",)),
    ("catboost.core", "CatBoostClassifier"): ("__model", bytes, ("_test_eval", "_test_evals")),
}


def _booster_state_problem(inst: Any, state: Any) -> str | None:
    """Why ``state`` is not what the boosting class ``inst`` saves (``None`` when it is, or ``inst`` is not
    one): the saved model must reach the library's C++ loader as the type its own pickling writes."""
    kind = type(inst)
    expected = _BOOSTER_STATE.get((getattr(kind, "__module__", ""), getattr(kind, "__name__", "")))
    if expected is None:
        return None
    key, model_type, absent = expected
    if type(state) is not dict or not all(type(name) is str for name in state):
        return f"gives a {_clean(kind.__name__)} a state that is not a dict of names"
    if key not in state and kind.__name__ == "Booster":
        return f"gives a {_clean(kind.__name__)} no saved model"
    if key in state and type(state[key]) is not model_type and state[key] is not None:
        return f"gives a {_clean(kind.__name__)} a saved model that is not {model_type.__name__}"
    if any(name in state for name in absent):
        return f"gives a {_clean(kind.__name__)} state its own pickling never writes"
    return None


def _is_ufunc(obj: Any) -> bool:
    import numpy

    return isinstance(obj, numpy.ufunc)
