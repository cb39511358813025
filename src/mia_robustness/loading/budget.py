"""What admitted constructors may build, measured before they build it: memory, pointers, layout.

Memory is counted as it is built, not only as bytes read: arrays (shape x itemsize), strings, buffers,
ranges and containers a call would make are charged, before the call, to one :class:`_Budget` of
``max_bytes`` for the whole load, so a file of a few bytes cannot build gigabytes. The same budget
serves the pickle gate (:mod:`.gate`) and the skops schema check (:mod:`.skops_files`).

The helpers here tell a dtype numpy's own constructor would make from one it would not
(:func:`_dtype_problem`), dtypes that may be filled from raw bytes (no object pointers inside), shapes
from a file, contiguous strides from strided views, and how much a value takes when copied or expanded.
"""

from __future__ import annotations

import contextlib
import operator
from typing import Any

import numpy as np

from ..errors import LimitError

#: Most container elements examined in one load when sizing what constructor calls would build, so that
#: sizing (of a list nested through shared references, say) cannot itself become the slow path.
_MAX_EXAMINED = 20_000_000

_MAX_INTP = 2**63 - 1  # numpy's largest array size in bytes (npy_intp on 64-bit platforms)


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} bytes"


class _Budget:
    """Memory one load may build, charged before each array, buffer or container is made.

    Parameters
    ----------
    limit:
        Most bytes over the whole load (the same figure as the limit on bytes read); ``None`` for no
        limit (the pointer and layout checks apply regardless).
    name:
        The model file's name, cleaned, for messages.
    """

    def __init__(self, limit: int | None, name: str) -> None:
        self.limit = limit
        self.name = name
        self.used = 0
        self.examined = 0

    def charge(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` about to be built for ``what``; refuse when the load's total passes the limit."""
        self.used += nbytes
        if self.limit is not None and self.used > self.limit:
            raise LimitError(
                f"{self.name} would build {what} ({_size(nbytes)}), more memory than the allowed model size "
                f"({_size(self.limit)}); a small crafted file can ask for far more than it holds. If the "
                "model is genuine, use a smaller one or raise the limit",
                code="model_too_large",
            )

    def examine(self, count: int) -> None:
        """Count container elements looked at while sizing; refuse past :data:`_MAX_EXAMINED`."""
        self.examined += count
        if self.examined > _MAX_EXAMINED:
            raise LimitError(
                f"{self.name} passes more than {_MAX_EXAMINED:,} nested values to constructors, far more "
                "than a saved scikit-learn model does; re-save the fitted estimator with joblib.dump",
                code="model_too_large",
            )


# Dtype kinds numpy can fill from raw bytes (no pointers inside); "O" (objects) is the other legacy kind.
_RAW_KINDS = frozenset("biufcmMSUV")
_LEGACY_KINDS = _RAW_KINDS | {"O"}
# Dtype flags numpy derives from the fields (object refcounting, list pickling, needs-init, ...); the
# 0x80 flag (aligned struct) is the saver's choice.
_DERIVED_FLAGS = 0x7F


def _dtype_problem(dtype: np.dtype, depth: int = 0) -> str | None:
    """What is wrong with ``dtype``, or ``None`` when it is exactly what numpy's constructor makes.

    ``dtype.__setstate__`` (the ``BUILD`` of a pickled dtype) takes flags, fields and item size as given.
    Flags that deny an object field make numpy treat that field's pointers as plain bytes, and fields
    past the item read beyond it, so a dtype is rebuilt from its fields by the public constructor (which
    refuses overlapping object fields) and must come out the same.
    """
    if depth > 32:
        return "nests fields too deeply"
    if dtype.kind not in _LEGACY_KINDS:
        return None  # e.g. StringDType: only made by its own constructor (BUILD on it is refused)
    try:
        if dtype.names is not None:
            names, formats, offsets, titles = list(dtype.names), [], [], []
            for name in names:
                field = dtype.fields[name]
                inner, offset = field[0], field[1]
                problem = _dtype_problem(inner, depth + 1)
                if problem is not None:
                    return problem
                if offset < 0 or offset + inner.itemsize > dtype.itemsize:
                    return "has a field outside its items"
                formats.append(inner)
                offsets.append(offset)
                titles.append(field[2] if len(field) > 2 else None)
            spec: dict[str, Any] = {"names": names, "formats": formats, "offsets": offsets}
            spec["itemsize"] = dtype.itemsize
            if any(title is not None for title in titles):
                spec["titles"] = titles
            canonical = np.dtype(spec)
        elif dtype.subdtype is not None:
            inner, shape = dtype.subdtype
            problem = _dtype_problem(inner, depth + 1)
            if problem is not None:
                return problem
            canonical = np.dtype((inner, shape))
        else:
            canonical = np.dtype(dtype.str)
    except (TypeError, ValueError):
        return "has fields numpy itself refuses (object fields overlapping others)"
    if canonical.itemsize != dtype.itemsize or (canonical.flags ^ dtype.flags) & _DERIVED_FLAGS:
        return "has flags that do not match its fields"
    return None


def _raw_safe(dtype: np.dtype) -> bool:
    """Whether an array of ``dtype`` may be filled from raw bytes: no object pointer anywhere in its items
    (``dtype`` has passed :func:`_dtype_problem`, so ``hasobject`` tells the truth)."""
    return not dtype.hasobject and dtype.kind in _RAW_KINDS


def _shared_dtype(dtype: np.dtype) -> bool:
    """Whether ``dtype`` is one of numpy's built-in dtype objects, shared by every array in the process."""
    for code in (dtype.char, dtype.str, dtype.name):
        with contextlib.suppress(Exception):
            if np.dtype(code) is dtype:
                return True
    with contextlib.suppress(Exception):
        return type(dtype)() is dtype  # numpy.dtypes.Float64DType() is numpy's float64
    return False


def _shape(value: Any) -> tuple[int, ...]:
    """A shape from a model file as a tuple of sizes (an int is a one-axis shape).

    Raises ``TypeError`` / ``ValueError`` (a corrupt file) for anything else, a negative size or more
    than numpy's 64 axes.
    """
    if isinstance(value, (int, np.integer)):
        value = (value,)
    if not isinstance(value, (tuple, list)) or len(value) > 64:
        raise TypeError("an array shape that is not a tuple of sizes")
    dims = tuple(operator.index(dim) for dim in value)
    if any(dim < 0 for dim in dims):
        raise ValueError("an array shape with a negative size")
    return dims


def _contiguous_strides(shape: tuple[int, ...], itemsize: int, strides: Any) -> bool:
    """Whether ``strides`` are those of a C- or Fortran-contiguous array of ``shape``."""
    if isinstance(strides, (int, np.integer)):
        strides = (strides,)
    if not isinstance(strides, (tuple, list)):
        return False
    given = tuple(operator.index(stride) for stride in strides)
    if len(given) != len(shape):
        return False
    c_order, f_order, step_c, step_f = [], [], itemsize, itemsize
    for dim_c, dim_f in zip(reversed(shape), shape, strict=True):
        c_order.append(step_c)
        f_order.append(step_f)
        step_c, step_f = step_c * dim_c, step_f * dim_f
    return given in (tuple(reversed(c_order)), tuple(f_order))


def _layout_problem(array: np.ndarray) -> str | None:
    """``None`` unless two elements of ``array`` share memory (zero or overlapping strides), which lets a
    few bytes pose as a huge array that anything iterating it would walk for ever."""
    if array.size == 0:
        return None
    span = array.itemsize
    for stride, size in sorted(
        (abs(stride), size) for stride, size in zip(array.strides, array.shape, strict=True) if size > 1
    ):
        if stride < span:
            return "builds an array whose elements overlap in memory (zero or overlapping strides)"
        span += stride * (size - 1)
    return None


def _range_length(value: range) -> int:
    try:
        return len(value)
    except OverflowError:
        return 2**64


_SCALAR_TYPES = frozenset({int, float, complex, bool, type(None)})
_CONTAINERS = (list, tuple, set, frozenset, dict)


def _flat_size(value: Any) -> int:
    """Bytes ``value`` takes when copied one level deep: a container's slots, a string's characters, an
    array's elements as Python references. Other objects count nothing (they are referenced, not copied)."""
    if type(value) in _SCALAR_TYPES:
        return 0
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, range):
        return _range_length(value) * 8
    if isinstance(value, np.ndarray):
        return value.size * max(value.itemsize, 8)
    if isinstance(value, dict):
        return len(value) * 16
    if isinstance(value, _CONTAINERS):
        return len(value) * 8
    return 0


def _index(value: Any) -> int | None:
    """``value`` as an integer if Python would take it as one (an int, a numpy integer, a 0-d integer
    array), else ``None``; text and bytes are never sizes."""
    if isinstance(value, (str, bytes, bytearray)):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _items(value: Any) -> list[Any]:
    return [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
