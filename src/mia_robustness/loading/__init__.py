"""Load a classifier from a model file without running code the file brings with it.

A pickle is a program: every global it names is imported and may be called with arguments the file
chooses. ``pickle.load`` and ``joblib.load`` therefore run whatever an uploaded model file says. This
module loads ``.pkl`` / ``.pickle`` / ``.joblib`` files (kind found by content: plain pickle, joblib's
format, compressed with zlib, gzip, bz2, lzma or xz) with an unpickler whose ``find_class`` admits only
an allowlist, and ``.skops`` files (zip archives, also found by content) with ``skops.io.load`` after every
type the file names has passed the same allowlist.

Admitted (everything else is refused before it is imported or called):

* scikit-learn: classes defined in ``sklearn`` modules (the *resolved* object's ``__module__`` is checked,
  so names re-exported from elsewhere are refused); no class or function from test helpers, ``datasets``
  (file and network I/O), ``externals``, ``utils.parallel`` / ``_joblib`` / ``fixes`` / ``deprecation`` /
  ``_testing`` / ``_mocking`` / ``discovery``, ``callback`` (sockets), ``_config``, ``experimental``,
  ``tree._export`` (writes files). Functions only where estimators store them: Cython pickling helpers
  (``__pyx_unpickle_*``, ``newObj``), score functions of ``feature_selection`` and the metric functions
  of ``metrics._classification`` / ``_ranking`` / ``_regression`` (for scorers), a few kernels.
* numpy: array, dtype, scalar and masked-array reconstruction, scalar types (``numpy.float64``), the
  ``RandomState`` / ``Generator`` / bit-generator pickling helpers, and the elementwise ufuncs in
  :data:`NUMPY_UFUNCS` (for ``FunctionTransformer(func=numpy.log1p)``). Never ``numpy.load`` (it
  unpickles) nor any other numpy function.
* scipy: sparse matrix / array classes and ``interpolate.BSpline`` (``SplineTransformer``). Not
  ``scipy.stats`` frozen distributions (their ``__setstate__`` runs ``exec``): save
  ``search.best_estimator_`` rather than a ``RandomizedSearchCV`` holding them.
* builtins containers and scalars (``set``, ``frozenset``, ``slice``, ``range``, ``complex``, ``bytearray``,
  ``int``, ``float``, ``str``, ``bytes``, ``bool``, ``list``, ``dict``, ``tuple``, ``object``),
  ``collections.OrderedDict`` / ``defaultdict``, ``copyreg``'s object-rebuilding helpers (whose class
  arguments must themselves pass the gate), joblib's ``NumpyArrayWrapper``.
* Not pandas, xgboost or lightgbm (no common scikit-learn estimator stores pandas objects; the boosting
  libraries are not installed here), not joblib's pre-0.10 ``NDArrayWrapper`` format (it reads companion
  files with ``numpy.load(allow_pickle=True)``), no dotted names (``Class.method``).

Also refused: the ``BUILD`` opcode on a class, function or module, or on one of numpy's shared built-in
dtypes (it would change scikit-learn or numpy itself for every later audit in the process), ``SETITEM`` /
``APPEND`` / ``ADDITEMS`` on anything but a dict, list or set, and text vectorizers that read files named
by the data (``input="filename"`` / ``"file"``).

Admitted code fed hostile data. Every call the allowlist admits is checked before it runs, and so is
every ``BUILD`` of a numpy array or dtype:

* No array of Python objects (``dtype=object``, a structured dtype with an object field, numpy's
  ``StringDType``) is ever made from raw bytes, each element of which would be whatever lies at an
  address the file chooses: not through ``numpy.ndarray(shape, dtype, buffer)``, ``ndarray.__setstate__``,
  ``_frombuffer``, ``scalar``, joblib's ``NumpyArrayWrapper`` nor a skops node. Object arrays are built
  only from their objects: the list numpy pickles them as (exactly one object per element; a short list
  would leave garbage pointers), or skops' list of items. A dtype rebuilt by ``BUILD``
  must be the one numpy's own constructor makes from its fields (a forged flag that hides an object
  field, or object fields overlapping others, would let raw bytes through as pointers).
* Memory is counted as it is built, not only as bytes read: arrays (shape x itemsize), strings, buffers,
  ranges and containers a call would make are charged, before the call, to one budget of ``max_bytes``
  for the whole load, so a file of a few bytes cannot build gigabytes. ``bytes`` / ``bytearray`` of an
  integer size, ``str()`` of an object, shapes whose size overflows and strided views (zero, overlapping
  or non-contiguous strides) are refused outright.
* skops files are checked from their schema before skops builds anything: numpy, builtin and sparse
  objects only through the node skops itself writes for them, arrays sized from their ``.npy`` headers,
  bytes and arrays charged to the same budget, ids shared by nodes naming one and the same node.

After loading, every object reachable from the model is checked (containers, dict keys as well as
values, object and masked arrays, slices, and the attributes of every admitted object, scikit-learn's or
not). A model with more than a few million objects to check is refused rather than passed half checked.

Errors never repeat text that came from the file: a file that fails to load is reported with the
exception's class only (the exception itself is logged at debug level on ``mia_robustness.loading``),
refused global names are stripped of control characters and shortened, and the scikit-learn version a
model was saved with is returned only when it looks like a version.

Not protected: admitted scikit-learn code fed hostile state. A crafted but well-typed ``Tree`` or
``KDTree`` (child or index arrays out of range; trees are checked after loading, ``KDTree`` is not) can
crash the process or read out of bounds in native code, and slow calls can exhaust time. Run audits of
untrusted models in a separate process with memory and time limits (the server does).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import copyreg
import importlib
import inspect
import io
import json
import logging
import math
import operator
import pickle
import re
import sys
import types
import zipfile
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LimitError, MiaError, ModelError, UnsafeModelError

_LOG = logging.getLogger("mia_robustness.loading")

MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib", ".skops")

#: Largest number of bytes a model file may expand to when read (after decompression), and, counted
#: separately, largest number of bytes of arrays, buffers and containers loading it may build.
DEFAULT_MAX_MODEL_BYTES = 4 * 1024**3

#: numpy ufuncs a ``FunctionTransformer`` may name as ``func`` / ``inverse_func``: elementwise, no I/O.
NUMPY_UFUNCS = frozenset(
    {
        "log",
        "log1p",
        "log2",
        "log10",
        "exp",
        "expm1",
        "exp2",
        "sqrt",
        "cbrt",
        "square",
        "absolute",
        "fabs",
        "sign",
        "negative",
        "reciprocal",
        "tanh",
        "arcsinh",
        "sinh",
        "cosh",
        "arctan",
        "rint",
        "floor",
        "ceil",
        "trunc",
        "isnan",
        "isfinite",
    }
)

_FIX_HINT = (
    "only scikit-learn estimators, numpy and scipy data are. If you trust this "
    "file, load it where you trust it and re-save the estimator with skops (skops.io.dump) or with "
    "joblib.dump after replacing custom classes and functions with scikit-learn ones."
)

# Exact (module, name) pairs outside scikit-learn. Their modules are trusted, so getattr (which may go
# through a module __getattr__ shim such as numpy.core's) is used to resolve them.
_EXACT = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.ma", "MaskedArray"),
        ("numpy.ma.core", "MaskedArray"),
        ("numpy.ma.core", "_mareconstruct"),
        ("numpy.random._pickle", "__randomstate_ctor"),
        ("numpy.random._pickle", "__bit_generator_ctor"),
        ("numpy.random._pickle", "__generator_ctor"),
        ("numpy.random.mtrand", "RandomState"),
        ("numpy.random._generator", "Generator"),
        ("numpy.random._mt19937", "MT19937"),
        ("numpy.random._pcg64", "PCG64"),
        ("numpy.random._pcg64", "PCG64DXSM"),
        ("numpy.random._philox", "Philox"),
        ("numpy.random._sfc64", "SFC64"),
        ("numpy.random.bit_generator", "SeedSequence"),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence"),
        ("scipy.interpolate._bsplines", "BSpline"),
        ("scipy._lib.array_api_compat.numpy._aliases", "asarray"),  # BSpline keeps it as _asarray
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("copyreg", "_reconstructor"),
        ("copyreg", "__newobj__"),
        ("copyreg", "__newobj_ex__"),
    }
)

_BUILTINS = frozenset(
    {
        "set",
        "frozenset",
        "slice",
        "range",
        "complex",
        "bytearray",
        "bytes",
        "int",
        "float",
        "str",
        "bool",
        "list",
        "dict",
        "tuple",
        "object",
    }
)

# Modules (and their submodules) of scikit-learn whose classes and functions are never admitted.
_SKLEARN_DENIED = (
    "sklearn.utils._testing",
    "sklearn.utils.estimator_checks",
    "sklearn.utils._test_common",
    "sklearn.utils._mocking",
    "sklearn.utils.parallel",
    "sklearn.utils._joblib",
    "sklearn.utils.fixes",
    "sklearn.utils.deprecation",
    "sklearn.utils._show_versions",
    "sklearn.utils.discovery",
    "sklearn.utils._optional_dependencies",
    "sklearn.externals",
    "sklearn.datasets",
    "sklearn._config",
    "sklearn._build_utils",
    "sklearn.__check_build",
    "sklearn._min_dependencies",
    "sklearn._distributor_init",
    "sklearn.conftest",
    "sklearn.experimental",
    "sklearn.callback",
    "sklearn.tree._export",
)

# Modules whose public functions an estimator may hold (score functions, scorer metrics, kernels).
_SKLEARN_FUNCTION_MODULES = {
    "sklearn.feature_selection._univariate_selection": None,
    "sklearn.feature_selection._mutual_info": None,
    "sklearn.metrics._classification": None,
    "sklearn.metrics._ranking": None,
    "sklearn.metrics._regression": None,
    "sklearn.metrics.pairwise": frozenset(
        {
            "linear_kernel",
            "polynomial_kernel",
            "rbf_kernel",
            "sigmoid_kernel",
            "laplacian_kernel",
            "chi2_kernel",
            "additive_chi2_kernel",
            "cosine_similarity",
            "euclidean_distances",
            "manhattan_distances",
            "cosine_distances",
        }
    ),
}

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Refused:
    """Stand-in returned for a refused global so unpickling can go on to name every refused global.

    It does nothing when called or built, so the refused code never runs.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


class _Disallowed(Exception):
    """Internal: a global the allowlist does not admit."""


def _sklearn_module_denied(module: str) -> bool:
    parts = module.split(".")
    if any(part == "tests" or part.startswith("test_") or part == "conftest" for part in parts):
        return True
    return any(module == denied or module.startswith(denied + ".") for denied in _SKLEARN_DENIED)


#: Most objects (containers and instances; numbers and strings are not counted) the check after loading
#: visits. A model holding more is refused: a check that stopped early would pass what it did not see.
_MAX_CHECKED_OBJECTS = 3_000_000

#: Most container elements examined in one load when sizing what constructor calls would build, so that
#: sizing (of a list nested through shared references, say) cannot itself become the slow path.
_MAX_EXAMINED = 20_000_000

_MAX_INTP = 2**63 - 1  # numpy's largest array size in bytes (npy_intp on 64-bit platforms)

# What a saved version looks like ("1.5.2", "1.6.dev0", "1.4.1.post1", "1.3+local"); anything else is
# text from the file that must not reach a terminal.
_VERSION = re.compile(r"[0-9A-Za-z.+\-_]{1,40}")

# C0 and C1 controls (ANSI escapes, newlines), zero-width and bidirectional-override characters.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _clean(text: str, limit: int = 100) -> str:
    """``text`` that came from a model file, safe to show: control characters removed, ``limit`` long at most."""
    text = _CONTROL.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shown(value: Any) -> str:
    """A value from a model file for a message: cleaned if it is text, else only its type's name."""
    return _clean(value) if isinstance(value, str) else f"a {_clean(type(value).__name__)}"


def _version_or_none(value: Any) -> str | None:
    """``value`` if it looks like a version string, else ``None`` (it came from the file)."""
    return value if isinstance(value, str) and _VERSION.fullmatch(value) else None


def _import(module: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.startswith("sklearn"):
            import sklearn

            raise ModelError(
                f"the model file refers to the module {_clean(module)}, which scikit-learn "
                f"{sklearn.__version__} does not have; it was probably saved with another scikit-learn "
                f"version. Re-save it with scikit-learn {sklearn.__version__}.",
                code="incompatible_model",
            ) from None
        raise _Disallowed from exc


def _safe_ufunc_reconstruct(module: str, name: str) -> Any:
    """numpy 1.x pickles ufuncs as ``_ufunc_reconstruct(module, name)``, an import of any module."""
    if not (isinstance(module, str) and module == "numpy" and isinstance(name, str) and name in NUMPY_UFUNCS):
        raise UnsafeModelError(
            f"the model file refers to {_shown(module)}.{_shown(name)} (as a numpy ufunc), which is not "
            f"allowed: {_FIX_HINT}",
            code="unsafe_model",
        )
    import numpy

    return getattr(numpy, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as ``_codecs.encode(text, "latin1")``; admit only that codec."""
    if not (isinstance(encoding, str) and encoding in ("latin1", "latin-1") and isinstance(text, str)):
        raise UnsafeModelError(
            f"the model file uses _codecs.encode with codec {_shown(encoding)}; only latin1 is allowed: "
            f"{_FIX_HINT}",
            code="unsafe_model",
        )
    return text.encode("latin1")


def _resolve(module: str, name: str) -> Any:
    """The object ``module.name`` if the allowlist admits it, else raise :class:`_Disallowed`.

    Names are checked before any module is imported, so refusing never imports a new module outside
    scikit-learn's allowed subpackages.
    """
    if not (isinstance(module, str) and isinstance(name, str)):
        raise _Disallowed
    if not _MODULE_NAME.match(module) or not _NAME.match(name):  # no dotted names: no Class.method
        raise _Disallowed
    if module == "builtins":
        if name in _BUILTINS:
            import builtins

            return getattr(builtins, name)
        raise _Disallowed
    if (module, name) in _EXACT:
        return getattr(_import(module), name)
    if module in ("numpy.core", "numpy._core") and name == "_ufunc_reconstruct":
        return _safe_ufunc_reconstruct
    if (module, name) == ("_codecs", "encode"):
        return _latin1_encode
    if module == "joblib.numpy_pickle" and name == "NumpyArrayWrapper":
        return _safe_array_wrapper()
    if module in ("numpy", "numpy.dtypes"):
        import numpy

        obj = vars(_import(module)).get(name)
        if isinstance(obj, type) and issubclass(obj, (numpy.generic, numpy.dtype)):
            return obj
        if module == "numpy" and name in NUMPY_UFUNCS and isinstance(obj, numpy.ufunc):
            return obj
        raise _Disallowed
    if module == "scipy.sparse" or module.startswith("scipy.sparse."):
        import scipy.sparse

        obj = vars(_import(module)).get(name)
        if isinstance(obj, type) and issubclass(obj, (scipy.sparse.spmatrix, scipy.sparse.sparray)):
            return obj
        raise _Disallowed
    if module == "sklearn" or module.startswith("sklearn."):
        return _resolve_sklearn(module, name)
    raise _Disallowed


def _resolve_sklearn(module: str, name: str) -> Any:
    if _sklearn_module_denied(module):
        raise _Disallowed
    # vars(), not getattr: a module-level __getattr__ (sklearn's lazy submodule loader) must not run.
    obj = vars(_import(module)).get(name)
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str) or not owner.startswith("sklearn.") or _sklearn_module_denied(owner):
        raise _Disallowed  # a module, a constant, or something re-exported from outside scikit-learn
    if isinstance(obj, type):
        return obj
    if not callable(obj) or getattr(obj, "__name__", None) != name:
        raise _Disallowed
    # Cython's pickling helpers rebuild the extension type of their own module from checked state.
    if name == "newObj" or name.startswith("__pyx_unpickle_"):
        return obj
    if inspect.isfunction(obj) and not name.startswith("_") and owner in _SKLEARN_FUNCTION_MODULES:
        names = _SKLEARN_FUNCTION_MODULES[owner]
        if names is None or name in names:
            return obj
    raise _Disallowed


def is_allowed(module: str, name: str) -> bool:
    """Whether the allowlist admits the global ``module.name`` (imports allowed scikit-learn modules)."""
    try:
        _resolve(module, name)
    except (_Disallowed, ModelError):
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# What admitted constructors may build: pointers, memory, layout


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if nbytes >= scale:
            return f"{nbytes / scale:,.1f} {unit}"
    return f"{nbytes} bytes"


def _unsafe(name: str, what: str) -> UnsafeModelError:
    return UnsafeModelError(
        f"{name} {what}, which no saved scikit-learn model does: the file was crafted or damaged, and it "
        "was refused before that was built. Re-save the fitted estimator with joblib.dump or skops.io.dump",
        code="unsafe_model",
    )


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


def _is_ufunc(obj: Any) -> bool:
    import numpy

    return isinstance(obj, numpy.ufunc)


def _python3_names(proto: int, module: str, name: str) -> tuple[str, str]:
    """Protocols 0-2 write Python 2 names (``__builtin__``, ``copy_reg``); map them as pickle does."""
    if proto < 3 and isinstance(module, str) and isinstance(name, str):
        if (module, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(module, name)]
        return _compat_pickle.IMPORT_MAPPING.get(module, module), name
    return module, name


def _make_unpicklers() -> tuple[type, type]:
    from joblib.numpy_pickle import NumpyUnpickler

    class GateMixin:
        """What both unpicklers share: globals through the gate, no persistent ids, every call and
        ``BUILD`` checked before it runs and its result after, containers filled only when they are
        containers."""

        _gate: _Gate
        stack: list[Any]

        def find_class(self, module: str, name: str) -> Any:
            return self._gate.find_class(*_python3_names(self.proto, module, name))

        def persistent_load(self, pid: Any) -> Any:
            raise pickle.UnpicklingError("persistent ids are not allowed in a model file")

        def gated_build(self, build: Any) -> None:
            inst = self.stack[-2]
            self._gate.check_build(inst, self.stack[-1])
            if isinstance(inst, _Refused) or inst is _Refused:
                self.stack.pop()
                return
            build(self)
            self._gate.check_built(inst)
            if self.stack[-1] is not inst:  # joblib replaced its array wrapper by the array it read
                self._gate.check_built(self.stack[-1])

        def load_reduce(self) -> None:
            stack = self.stack
            args = stack.pop()
            func = stack[-1]
            self._gate.check_call(func, args)
            stack[-1] = self._gate.check_built(func(*args))

        def load_newobj(self) -> None:
            args = self.stack.pop()
            cls = self.stack.pop()
            self._gate.check_call(cls, args)
            self.append(self._gate.check_built(cls.__new__(cls, *args)))

        def load_newobj_ex(self) -> None:
            kwargs = self.stack.pop()
            args = self.stack.pop()
            cls = self.stack.pop()
            self._gate.check_call(cls, args, kwargs)
            self.append(self._gate.check_built(cls.__new__(cls, *args, **kwargs)))

        def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ
            args = tuple(args)
            self._gate.check_call(klass, args)
            if args or not isinstance(klass, type) or hasattr(klass, "__getinitargs__"):
                value = klass(*args)
            else:
                value = klass.__new__(klass)
            self.append(self._gate.check_built(value))

        def load_setitem(self) -> None:
            value = self.stack.pop()
            key = self.stack.pop()
            if self._gate.check_fill(self.stack[-1], dict, "SETITEM"):
                self.stack[-1][key] = value

        def load_setitems(self) -> None:
            items = self.pop_mark()
            target = self.stack[-1]
            if self._gate.check_fill(target, dict, "SETITEMS"):
                for index in range(0, len(items), 2):
                    target[items[index]] = items[index + 1]

        def load_append(self) -> None:
            value = self.stack.pop()
            if self._gate.check_fill(self.stack[-1], list, "APPEND"):
                self.stack[-1].append(value)

        def load_appends(self) -> None:
            items = self.pop_mark()
            if self._gate.check_fill(self.stack[-1], list, "APPENDS"):
                self.stack[-1].extend(items)

        def load_additems(self) -> None:
            items = self.pop_mark()
            if self._gate.check_fill(self.stack[-1], set, "ADDITEMS"):
                self.stack[-1].update(items)

    def gated_dispatch(base: dict[int, Any], build: Any) -> dict[int, Any]:
        dispatch = base.copy()
        dispatch[pickle.BUILD[0]] = build
        for opcode, method in (
            (pickle.REDUCE, GateMixin.load_reduce),
            (pickle.NEWOBJ, GateMixin.load_newobj),
            (pickle.NEWOBJ_EX, GateMixin.load_newobj_ex),
            (pickle.SETITEM, GateMixin.load_setitem),
            (pickle.SETITEMS, GateMixin.load_setitems),
            (pickle.APPEND, GateMixin.load_append),
            (pickle.APPENDS, GateMixin.load_appends),
            (pickle.ADDITEMS, GateMixin.load_additems),
        ):
            dispatch[opcode[0]] = method
        return dispatch

    class HardenedUnpickler(
        GateMixin, pickle._Unpickler
    ):  # the pure-Python unpickler: its opcodes can be checked one by one
        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__(file)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(pickle._Unpickler.load_build)

        dispatch = gated_dispatch(pickle._Unpickler.dispatch, load_build)

    class HardenedNumpyUnpickler(GateMixin, NumpyUnpickler):
        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__("", file, ensure_native_byte_order=True, mmap_mode=None)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(NumpyUnpickler.load_build)  # replaces NumpyArrayWrapper by the array it reads

        dispatch = gated_dispatch(NumpyUnpickler.dispatch, load_build)

    return HardenedUnpickler, HardenedNumpyUnpickler


_UNPICKLERS: tuple[type, type] | None = None
_ARRAY_WRAPPER: type | None = None


def _unpicklers() -> tuple[type, type]:
    global _UNPICKLERS
    if _UNPICKLERS is None:
        _UNPICKLERS = _make_unpicklers()
    return _UNPICKLERS


def _safe_array_wrapper() -> type:
    """joblib's NumpyArrayWrapper, its fields checked before it reads, object arrays' nested pickle read
    through the same gate."""
    global _ARRAY_WRAPPER
    if _ARRAY_WRAPPER is None:
        from joblib.numpy_pickle import NumpyArrayWrapper
        from joblib.numpy_pickle_utils import _ensure_native_byte_order

        class SafeNumpyArrayWrapper(NumpyArrayWrapper):
            def read_array(self, unpickler: Any, ensure_native_byte_order: bool) -> Any:
                unpickler._gate.check_wrapper(self)
                if not self.dtype.hasobject:
                    return super().read_array(unpickler, ensure_native_byte_order)
                # joblib's own code reads this nested stream with a plain Unpickler whose opcodes are
                # unchecked; ours checks them and shares the outer file's gate and budget.
                inner = _unpicklers()[0](unpickler.file_handle, unpickler._gate)
                array = inner.load()
                return _ensure_native_byte_order(array) if ensure_native_byte_order else array

            def read_mmap(self, unpickler: Any) -> Any:
                raise pickle.UnpicklingError("memory-mapped arrays are not supported")

        _ARRAY_WRAPPER = SafeNumpyArrayWrapper
    return _ARRAY_WRAPPER


class _LimitedReader:
    """File-like view that refuses to read more than ``limit`` bytes (decompression bombs)."""

    def __init__(self, raw: Any, limit: int | None, name: str) -> None:
        self._raw = raw
        self._left = limit
        self._name = name

    def _take(self, data: bytes) -> bytes:
        if self._left is not None:
            self._left -= len(data)
            if self._left < 0:
                raise LimitError(
                    f"{self._name} expands to more than the allowed model size when read; "
                    "use a smaller model or raise the limit",
                    code="model_too_large",
                )
        return data

    def _cap(self, size: int) -> int:
        if self._left is None:
            return size
        return self._left + 1 if size is None or size < 0 or size > self._left + 1 else size

    def read(self, size: int = -1) -> bytes:
        return self._take(self._raw.read(self._cap(size)))

    def readline(self, size: int = -1) -> bytes:
        return self._take(self._raw.readline(self._cap(size)))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def peek(self, size: int = 0) -> bytes:
        return self._raw.peek(size)


def _name(path: Path) -> str:
    """The file's name for messages (a bundle member's name comes from the uploader too)."""
    return _clean(path.name)


def _refusal(path: Path, refused: list[str]) -> UnsafeModelError:
    shown = [_clean(label) for label in refused[:20]]
    what = ", ".join(shown) + (f" and {len(refused) - len(shown)} more" if len(refused) > len(shown) else "")
    noun = "which is" if len(refused) == 1 else "which are"
    hint = _FIX_HINT
    if any(label.startswith("scipy.stats.") for label in shown):
        hint = (
            "a fitted RandomizedSearchCV keeps scipy.stats distributions: save its best_estimator_ instead; "
            + hint
        )
    return UnsafeModelError(
        f"{_name(path)} refers to {what}, {noun} not allowed in a model file: {hint}", code="unsafe_model"
    )


def _corrupt(path: Path, exc: BaseException, stage: str) -> ModelError:
    """A file that failed to load, named by the exception's class only: its text may come from the file
    (a ``__setstate__`` raising attacker-chosen words, a repr with a memory address). The exception is
    logged at debug level for whoever runs the tool."""
    _LOG.debug("model file %r could not be read (%s)", path.name, stage, exc_info=exc)
    kind = _clean(type(exc).__name__, 60)
    return ModelError(
        f"{_name(path)} is not a readable model file ({kind} while {stage}); save the fitted classifier "
        "with joblib.dump, pickle.dump or skops.io.dump and upload that file unchanged",
        code="corrupt_model",
    )


def _load_pickle(path: Path, max_bytes: int | None) -> tuple[Any, list[tuple[Any, str]]]:
    """The object a pickle or joblib file holds, and the (object, saved scikit-learn version) pairs noted
    from its ``BUILD`` states before scikit-learn removed them."""
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    gate = _Gate(_name(path), max_bytes)
    with open(path, "rb") as handle:
        try:
            with _validate_fileobject_and_memmap(handle, str(path), None) as (fileobj, _):
                if isinstance(fileobj, str):  # joblib < 0.10 "zfile" format: arrays in companion files
                    raise ModelError(
                        f"{_name(path)} was saved by joblib older than 0.10, a format that is not supported; "
                        "re-save it with a current joblib.dump",
                        code="unsupported_model_format",
                    )
                unpickler = _unpicklers()[1](_LimitedReader(fileobj, max_bytes, _name(path)), gate)
                model = unpickler.load()
        except MiaError:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise
        except _Disallowed:
            raise _refusal(path, gate.refused) from None
        except MemoryError:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise LimitError(
                f"{_name(path)} needs more memory than is available to load", code="model_too_large"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any failure of a hostile stream is a bad file, not a crash
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise _corrupt(path, exc, "unpickling") from None
    if gate.refused:
        raise _refusal(path, gate.refused)
    return model, gate.versions


# ---------------------------------------------------------------------------------------------------
# skops


def _skops_types(node: Any, found: set[tuple[str, str]], depth: int = 0) -> None:
    """Every (module, class-or-function) pair a skops schema names."""
    if depth > 200:
        raise ModelError("the skops file's schema is nested too deeply", code="corrupt_model")
    if isinstance(node, dict):
        module, name = node.get("__module__"), node.get("__class__")
        if module is not None or name is not None:
            found.add((str(module), str(name)))
        for value in node.values():
            _skops_types(value, found, depth + 1)
    elif isinstance(node, list):
        for value in node:
            _skops_types(value, found, depth + 1)


def _skops_type_allowed(module: str, name: str) -> bool:
    if module == "builtins" and name == "NoneType":
        return True
    return is_allowed(module, name)


def _npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of a ``.npy`` stream, read without reading the data."""
    from numpy.lib import format as npy

    version = npy.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = npy.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = npy.read_array_header_2_0(handle)
    else:
        shape, _, dtype = npy._read_array_header(handle, version)
    return _shape(shape), dtype, handle.tell()


# Dict key types a skops DictNode may rebuild keys with (JSON keys are text: int("3"), numpy.int64("3")).
_SKOPS_KEY_TYPES = (str, int, float, bool, complex, np.number, np.bool_, np.str_, np.bytes_)
# Classes that only their own skops node may build: an ObjectNode making one calls its __new__ and
# __setstate__ with state skops never writes for it.
_SKOPS_DATA_TYPES = (np.ndarray, np.generic, np.dtype, bytes, bytearray, str, range, list, tuple, set)
_SKOPS_DATA_TYPES += (frozenset, dict, int, float, complex, slice)


class _SkopsCheck:
    """Checks a skops schema before skops builds anything from it.

    Every node may build only the classes skops writes that node for (an ``NdArrayNode`` an array from a
    ``.npy`` file, a ``ListNode`` a list, ...), so numpy, builtin and sparse objects come only from their
    own nodes, never from a constructor node called with the file's arguments. Arrays are sized from
    their ``.npy`` headers (never objects, never more than the data present), and every array, buffer and
    container is charged to the load's budget.

    skops builds the first node it meets with a given ``__id__`` and reuses it for later nodes with that
    id (a legitimate file repeats an object's node, with ids of temporaries inside that differ). So every
    node is checked, a reference is checked against every node with its id, sizes take the largest of
    them, and values read from them must agree.

    Parameters
    ----------
    name:
        The file's name, cleaned, for messages.
    archive:
        The open skops zip archive.
    budget:
        The load's memory budget.
    """

    def __init__(self, name: str, archive: zipfile.ZipFile, budget: _Budget) -> None:
        self.name = name
        self.archive = archive
        self.budget = budget
        self.occurrences: dict[Any, list[dict[str, Any]]] = {}
        self.charged: dict[Any, int] = {}
        self.headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.sizes: dict[int, int] = {}
        self.path: set[int] = set()

    def unsafe(self, what: str) -> UnsafeModelError:
        return _unsafe(self.name, what)

    def run(self, schema: Any) -> None:
        nodes: list[dict[str, Any]] = []
        todo = [schema]
        while todo:
            item = todo.pop()
            if isinstance(item, dict):
                if isinstance(item.get("__loader__"), str) and self._distinct(item):
                    nodes.append(item)
                todo.extend(item.values())
            elif isinstance(item, list):
                todo.extend(item)
        self.budget.examine(len(nodes))
        for node in nodes:
            self._check(node)

    def _distinct(self, node: dict[str, Any]) -> bool:
        """Note ``node`` under its id; whether it is one to check (not a reference, not a repeat)."""
        node_id = node.get("__id__")
        if node["__loader__"] == "CachedNode":
            return False
        if not node_id:
            return True
        known = self.occurrences.setdefault(node_id, [])
        self.budget.examine(len(known))
        if any(other == node for other in known):
            return False
        known.append(node)
        return True

    def _candidates(self, node: Any) -> list[dict[str, Any]]:
        """The nodes skops may build for ``node``: every node with its id, if it has one."""
        if not isinstance(node, dict):
            raise ValueError("a skops node that is not an object")
        node_id = node.get("__id__")
        return self.occurrences.get(node_id) or [node] if node_id else [node]

    def _charge(self, node: dict[str, Any], nbytes: int, what: str) -> None:
        """Charge what ``node`` builds once per id (skops builds an id once), the most any node with it asks."""
        node_id = node.get("__id__")
        key = ("id", node_id) if node_id else ("node", id(node))
        before = self.charged.get(key, 0)
        if nbytes > before:
            self.charged[key] = nbytes
            self.budget.charge(nbytes - before, what)

    def _class(self, node: dict[str, Any]) -> Any:
        with contextlib.suppress(_Disallowed, ModelError):
            return _resolve(str(node.get("__module__")), str(node.get("__class__")))
        return None

    def _label(self, node: dict[str, Any]) -> str:
        return _clean(f"{node.get('__module__')}.{node.get('__class__')}")

    def _check(self, node: dict[str, Any]) -> None:
        loader = node["__loader__"]
        if loader in ("TypeNode", "FunctionNode", "JsonNode", "SliceNode", "DefaultDictNode"):
            return  # references to admitted names, JSON values, or a dict checked as its own node
        checks = {
            "NdArrayNode": self._ndarray,
            "DTypeNode": self._dtype,
            "MaskedArrayNode": self._masked,
            "ObjectNode": self._object,
            "ConstructorFromReduceNode": self._constructor,
            "TreeNode": self._tree,
            "LossNode": self._loss,
            "ListNode": lambda node, cls: self._container(node, cls, list),
            "TupleNode": lambda node, cls: self._container(node, cls, tuple),
            "SetNode": lambda node, cls: self._container(node, cls, (set, frozenset)),
            "DictNode": self._dict,
            "BytesNode": lambda node, cls: self._bytes(node, 1),
            "BytearrayNode": lambda node, cls: self._bytes(node, 9),  # built through a list of ints
            "SparseMatrixNode": self._sparse,
            "RandomStateNode": lambda node, cls: self._is(node, cls, np.random.RandomState),
            "RandomGeneratorNode": self._generator,
        }
        if loader not in checks:
            raise self.unsafe(f"uses the skops node type {_clean(loader)}, which is not loaded here")
        checks[loader](node, self._class(node))

    def _is(self, node: dict[str, Any], cls: Any, base: type | tuple[type, ...]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise self.unsafe(f"builds {self._label(node)} through a skops {_clean(node['__loader__'])}")

    def _member(self, member: Any) -> zipfile.ZipInfo:
        if not isinstance(member, str):
            raise ValueError("a skops node without a file name")
        return self.archive.getinfo(member)

    def _npy(self, member: Any) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of an ``.npy`` member from its header: plain numbers, and no more data than
        the member holds."""
        info = self._member(member)
        if member not in self.headers:
            with self.archive.open(info) as handle:
                shape, dtype, header = _npy_header(handle)
            self._raw_array(shape, dtype, info.file_size - header)
            self.headers[member] = (shape, dtype)
        return self.headers[member]

    def _raw_array(self, shape: tuple[int, ...], dtype: np.dtype, available: int) -> None:
        if not _raw_safe(dtype):
            raise self.unsafe("stores an array of Python objects as raw bytes")
        nbytes = math.prod(shape) * max(dtype.itemsize, 1)
        if nbytes > _MAX_INTP:
            raise self.unsafe("asks for an array whose size overflows")
        if math.prod(shape) * dtype.itemsize > available:
            raise ValueError("an array whose data is shorter than its header says")

    def _ndarray(self, node: dict[str, Any], cls: Any) -> None:
        kind = node.get("type")
        if kind == "numpy":
            shape, dtype = self._npy(node.get("file"))
            if cls is not np.ndarray and not (isinstance(cls, type) and dtype.type is cls):
                raise self.unsafe(f"builds {self._label(node)} from an array of another type")
            count = math.prod(shape)
            read = self._member(node.get("file")).file_size
            self._charge(node, read + count * max(dtype.itemsize, 1), f"an array of {count:,} elements")
        elif kind == "json":
            self._is(node, cls, np.ndarray)
            if not isinstance(node.get("content"), list):
                raise ValueError("an object array without items")
            self._charge(node, self._nested(node), "an array of Python objects")

    def _dtype(self, node: dict[str, Any], cls: Any) -> None:
        for content in self._candidates(node.get("content")):
            if content.get("__loader__") != "NdArrayNode" or content.get("type") != "numpy":
                raise self.unsafe("builds a dtype from something other than an array header")

    def _masked(self, node: dict[str, Any], cls: Any) -> None:
        content = node.get("content")
        if not isinstance(content, dict):
            raise ValueError("a masked array without content")
        for part in ("data", "mask"):
            if any(item.get("__loader__") != "NdArrayNode" for item in self._candidates(content.get(part))):
                raise self.unsafe("builds a masked array from something other than arrays")

    def _object(self, node: dict[str, Any], cls: Any) -> None:
        if not isinstance(cls, type) or issubclass(cls, _SKOPS_DATA_TYPES):
            raise self.unsafe(f"builds {self._label(node)} through a skops ObjectNode")

    def _constructor(self, node: dict[str, Any], cls: Any) -> None:
        """``cls(*args)``: skops writes it only for a few builtins (a range, a frozenset, a complex)."""
        if cls not in (range, frozenset, complex):
            raise self.unsafe(f"calls {self._label(node)} with arguments from the file")
        content = node.get("content")
        if cls is range:
            args = self._static(content)
            if not (isinstance(args, list) and all(type(arg) is int for arg in args)):
                raise self.unsafe("builds a range from something other than integers")
            with contextlib.suppress(TypeError, ValueError):
                self._charge(node, _range_length(range(*args)) * 8, "a range")
        else:
            self._charge(node, self._nested(content) * 8, f"a {cls.__name__}")

    def _tree(self, node: dict[str, Any], cls: Any) -> None:
        reduce = node.get("__reduce__")
        args = reduce.get("args") if isinstance(reduce, dict) else None
        values = self._static(args)
        outputs = values[2] if isinstance(values, list) and len(values) == 3 else None
        outputs = max(outputs, 0) if type(outputs) is int else 0
        self._charge(node, outputs * 16 + self._nested(args), "a decision tree's outputs")

    def _loss(self, node: dict[str, Any], cls: Any) -> None:
        """A loss is built by calling its class (the node's own class) with the file's arguments."""
        if not (isinstance(cls, type) and cls.__module__.startswith("sklearn.")):
            raise self.unsafe(f"calls {self._label(node)} with arguments from the file")
        reduce = node.get("__reduce__")
        self._charge(node, self._nested(reduce.get("args") if isinstance(reduce, dict) else None), "a loss")

    def _container(self, node: dict[str, Any], cls: Any, base: type | tuple[type, ...]) -> None:
        self._is(node, cls, base)
        self._charge(node, self._nested(node), f"a {_clean(str(node.get('__class__')))}")

    def _dict(self, node: dict[str, Any], cls: Any) -> None:
        self._is(node, cls, dict)
        for key_types in self._candidates(node.get("key_types")):
            entries = key_types.get("content")
            if key_types.get("__loader__") != "ListNode" or not isinstance(entries, list):
                raise ValueError("a dict without key types")
            for entry in entries:
                for candidate in self._candidates(entry):
                    key_type = self._class(candidate)
                    if candidate.get("__loader__") != "TypeNode" or not (
                        isinstance(key_type, type) and issubclass(key_type, _SKOPS_KEY_TYPES)
                    ):
                        raise self.unsafe(f"rebuilds dict keys with {self._label(candidate)}")
        self._charge(node, self._nested(node), "a dict")

    def _bytes(self, node: dict[str, Any], factor: int) -> None:
        size = self._member(node.get("file")).file_size
        self._charge(node, size * (1 + factor), "a bytes object")

    def _sparse(self, node: dict[str, Any], cls: Any) -> None:
        """``scipy.sparse.load_npz`` of a member: plain-number arrays, charged, and the index its shape
        asks for."""
        import scipy.sparse

        self._is(node, cls, (scipy.sparse.spmatrix, scipy.sparse.sparray))
        info = self._member(node.get("file"))
        total = info.file_size
        with zipfile.ZipFile(io.BytesIO(self.archive.read(info))) as inner:
            for entry in inner.infolist():
                with inner.open(entry) as handle:
                    shape, dtype, header = _npy_header(handle)
                    self._raw_array(shape, dtype, entry.file_size - header)
                    total += math.prod(shape) * max(dtype.itemsize, 1)
                    if entry.filename == "shape.npy" and dtype.kind in "iu" and math.prod(shape) <= 2:
                        dims = np.frombuffer(handle.read(math.prod(shape) * dtype.itemsize), dtype=dtype)
                        total += (sum(_shape(dims.tolist())) + 2) * 8  # index pointers, one per row or column
        self._charge(node, total, "a sparse matrix")

    def _generator(self, node: dict[str, Any], cls: Any) -> None:
        """numpy's ``SeedSequence(pool_size=n)`` allocates and mixes ``n`` words."""
        self._is(node, cls, np.random.Generator)
        content = node.get("content")
        for seed in self._candidates(content.get("seed_seq") if isinstance(content, dict) else None):
            entries = seed.get("content")
            if isinstance(entries, dict) and "pool_size" in entries:
                pool = self._static(entries["pool_size"])
                if type(pool) is not int or not 0 <= pool <= 2**16:
                    raise self.unsafe("asks for a random seed pool of a size numpy never saves")
                self._charge(seed, pool * 4, "a random seed pool")

    def _static(self, node: Any, depth: int = 0) -> Any:
        """What a node of JSON values, lists and tuples holds (``None`` for anything else); nodes sharing
        its id must hold the same."""
        values = [self._static_one(candidate, depth) for candidate in self._candidates(node)]
        if any(value != values[0] for value in values[1:]):
            raise self.unsafe("gives two different values the same id")
        return values[0]

    def _static_one(self, node: dict[str, Any], depth: int) -> Any:
        loader, content = node.get("__loader__"), node.get("content")
        if loader == "JsonNode" and isinstance(content, str):
            return json.loads(content)
        if loader in ("ListNode", "TupleNode") and isinstance(content, list) and depth < 50:
            return [self._static(item, depth + 1) for item in content]
        return None

    def _nested(self, node: Any, depth: int = 0) -> int:
        """Bytes a node takes when built and expanded all the way down (``numpy.array`` of nested lists):
        a node reached twice counts twice but is sized once; of nodes sharing an id, the largest."""
        if node is None:
            return 0
        if depth > 400:
            raise ValueError("skops nodes nested too deeply")
        return max(self._nested_one(candidate, depth) for candidate in self._candidates(node))

    def _nested_one(self, node: dict[str, Any], depth: int) -> int:
        key = id(node)
        if key in self.sizes:
            return self.sizes[key]
        if key in self.path:
            raise self.unsafe("holds a container that contains itself")
        loader, content = node.get("__loader__"), node.get("content")
        self.path.add(key)
        if loader in ("ListNode", "TupleNode", "SetNode") or (
            loader == "NdArrayNode" and node.get("type") == "json"
        ):
            items = content if isinstance(content, list) else []
            self.budget.examine(len(items))
            size = 8 * len(items) + sum(self._nested(item, depth + 1) for item in items)
        elif loader == "DictNode":
            items = list(content.values()) if isinstance(content, dict) else []
            self.budget.examine(len(items))
            size = 16 * len(items) + sum(self._nested(item, depth + 1) for item in items)
        elif loader == "NdArrayNode" and node.get("type") == "numpy":
            shape, dtype = self._npy(node.get("file"))
            size = math.prod(shape) * max(dtype.itemsize, 8)
        elif loader == "JsonNode":
            size = len(content) if isinstance(content, str) else 0
        elif loader in ("BytesNode", "BytearrayNode"):
            size = self._member(node.get("file")).file_size
        else:
            size = 0  # objects are referenced, not expanded
        self.path.discard(key)
        self.sizes[key] = size
        return size


def _load_skops(path: Path, max_bytes: int | None) -> tuple[Any, list[tuple[Any, str]]]:
    """The object a skops file holds, and the (object, saved scikit-learn version) pair of its top-level
    object when the schema has one that looks like a version."""
    import skops.io as sio

    budget = _Budget(max_bytes, _name(path))
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("schema.json")
            total = sum(member.file_size for member in archive.infolist())
            if max_bytes is not None and total > max_bytes:
                raise LimitError(
                    f"{_name(path)} expands to more than the allowed model size", code="model_too_large"
                )
            budget.charge(
                info.file_size * 8, "the skops file's schema"
            )  # parsed JSON takes several times its text
            schema = json.loads(archive.read(info))
            found: set[tuple[str, str]] = set()
            _skops_types(schema, found)
            refused = sorted(
                f"{module}.{name}" for module, name in found if not _skops_type_allowed(module, name)
            )
            if refused:
                raise _refusal(path, refused)
            _SkopsCheck(_name(path), archive, budget).run(schema)
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "reading the skops archive") from None
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "reading the skops archive") from None
    for label in untrusted:
        module, _, name = label.rpartition(".")
        if not _skops_type_allowed(module, name) and label not in refused:
            refused.append(label)
    if refused:
        raise _refusal(path, refused)
    try:
        model = sio.load(path, trusted=untrusted)
    except MiaError:
        raise
    except MemoryError:
        raise LimitError(
            f"{_name(path)} needs more memory than is available to load", code="model_too_large"
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc, "loading the skops file") from None
    version = _skops_saved_version(schema)
    return model, [] if version is None else [(model, version)]


def _skops_saved_version(schema: Any) -> str | None:
    """The ``_sklearn_version`` stored in the top-level object's state of a skops schema, if it looks like a
    version (it is text from the file)."""
    content = schema.get("content") if isinstance(schema, dict) else None
    if isinstance(content, dict):
        content = content.get("content", content)
        entry = content.get("_sklearn_version") if isinstance(content, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            with contextlib.suppress(ValueError):
                return _version_or_none(json.loads(entry["content"]))  # a JsonNode holds the value's JSON
    return None


# ---------------------------------------------------------------------------------------------------
# After loading


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


@dataclass(frozen=True)
class LoadedModel:
    """What :func:`load_model` returns.

    Attributes
    ----------
    estimator:
        The loaded classifier; it has ``predict_proba``.
    saved_version:
        The scikit-learn version the model was saved with, or ``None`` when unknown or not a version.
        scikit-learn writes ``_sklearn_version`` into each estimator's saved state and removes it when
        loading, so the loaders note it as they go; the top-level estimator is consulted first, then, for
        a ``Pipeline``, its steps in order. The value comes from the file, so it is kept only if it looks
        like a version (``1.5.2``, ``1.6.dev0``): never text with escape sequences or newlines for a
        terminal.
    """

    estimator: Any
    saved_version: str | None


def load_model(path: Path, *, max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> LoadedModel:
    """Load a classifier from a model file, refusing any code the allowlist does not admit.

    Parameters
    ----------
    path:
        A ``.pkl`` / ``.pickle`` / ``.joblib`` file (plain pickle or joblib format, compressed or not) or
        a ``.skops`` file. The format is found from the content, not the name.
    max_bytes:
        Most bytes the file may expand to when read (after decompression), and, separately, most bytes
        of arrays, buffers and containers its loading may build; ``None`` for no limit.

    Returns
    -------
    The estimator (it has ``predict_proba``) and the scikit-learn version it was saved with, as a
    :class:`LoadedModel`.

    Raises
    ------
    UnsafeModelError
        ``unsafe_model``: the file names globals outside the allowlist (named in the message), or asks
        admitted code to build what no saved model does (an object array from raw bytes, a forged dtype,
        a strided view, bytes of an integer size); nothing it refers to was imported or run, nothing
        it asked for was built.
    ModelError
        ``missing_model``, ``corrupt_model`` (unreadable, truncated, not a pickle, a damaged tree),
        ``unsupported_model_format``, ``incompatible_model`` (saved with a scikit-learn that had other
        modules), ``not_a_classifier`` (no ``predict_proba``).
    LimitError
        ``model_too_large``: more than ``max_bytes`` when read or built, more memory than is available,
        or more objects than the check after loading visits.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"model file {_name(path)} does not exist or is not a file; add it to the bundle",
            code="missing_model",
        )
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise ModelError(
            f"{_name(path)} is empty; save the fitted classifier into it with joblib.dump",
            code="corrupt_model",
        )
    is_zip = head == b"PK\x03\x04"  # skops files are zip archives; pickles never start like that
    model, noted = _load_skops(path, max_bytes) if is_zip else _load_pickle(path, max_bytes)
    try:
        _check_loaded(path, model)
        has_proba = hasattr(model, "predict_proba")
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001 - hostile state in admitted classes fails here, not later
        raise _corrupt(path, exc, "checking the loaded model") from None
    if not has_proba:
        name = type(model).__name__
        hint = " (for SVC, fit it with probability=True)" if name in ("SVC", "NuSVC") else ""
        raise ModelError(
            f"{_name(path)} holds a {_clean(f'{type(model).__module__}.{name}')}, which has no predict_proba"
            f"{hint}; the audit needs a fitted classifier that gives class probabilities",
            code="not_a_classifier",
        )
    return LoadedModel(model, _saved_version(model, noted))


def _saved_version(model: Any, noted: list[tuple[Any, str]]) -> str | None:
    """The scikit-learn version ``model`` was saved with (see :attr:`LoadedModel.saved_version`).

    Parameters
    ----------
    model:
        The loaded object.
    noted:
        (object, version) pairs the loader noted before scikit-learn removed them (a later pair for the
        same object wins). An object without one is looked up in its own attributes, where classes
        that do not remove the version keep it.
    """
    by_object = {id(obj): version for obj, version in noted}  # ``noted`` keeps the objects alive
    candidates = [model]
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        candidates += [step[1] for step in steps if isinstance(step, tuple) and len(step) == 2]
    for candidate in candidates:
        version = by_object.get(id(candidate))
        if version is None:
            attributes = getattr(candidate, "__dict__", None)
            version = attributes.get("_sklearn_version") if isinstance(attributes, dict) else None
        if isinstance(version, str):
            return _version_or_none(version)
    return None
