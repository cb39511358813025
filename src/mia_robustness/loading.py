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

Also refused: the ``BUILD`` opcode on a class, function or module (it would overwrite attributes of
scikit-learn itself for every later audit in the process), and text vectorizers that read files named by
the data (``input="filename"`` / ``"file"``).

Not protected: allowlisted code fed hostile state. A crafted but well-typed ``Tree`` or ``KDTree`` (child
or index arrays out of range) can crash the process or read out of bounds in native code, and huge
arrays or slow calls can exhaust memory or time. Run audits of untrusted models in a separate process
with memory and time limits (the server does).
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import importlib
import inspect
import json
import pickle
import re
import sys
import types
import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LimitError, MiaError, ModelError, UnsafeModelError

MODEL_SUFFIXES = (".pkl", ".pickle", ".joblib", ".skops")

#: Largest number of bytes a model file may expand to when read (after decompression).
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

# The scikit-learn version each loaded estimator was pickled with (sklearn's __setstate__ pops it).
_SAVED_VERSIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


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


def _import(module: str) -> types.ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if module.startswith("sklearn"):
            import sklearn

            raise ModelError(
                f"the model file refers to the module {module}, which scikit-learn {sklearn.__version__} "
                "does not have; it was probably saved with another scikit-learn version. Re-save it with "
                f"scikit-learn {sklearn.__version__}.",
                code="incompatible_model",
            ) from exc
        raise _Disallowed from exc


def _safe_ufunc_reconstruct(module: str, name: str) -> Any:
    """numpy 1.x pickles ufuncs as ``_ufunc_reconstruct(module, name)``, an import of any module."""
    if module != "numpy" or name not in NUMPY_UFUNCS:
        raise UnsafeModelError(
            f"the model file refers to {module}.{name} (as a numpy ufunc), which is not allowed: {_FIX_HINT}",
            code="unsafe_model",
        )
    import numpy

    return getattr(numpy, name)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as ``_codecs.encode(text, "latin1")``; admit only that codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafeModelError(
            f"the model file uses _codecs.encode with codec {encoding!r}; only latin1 is allowed: {_FIX_HINT}",
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


class _Gate:
    """The allowlist for one file: resolves admitted globals, records refused ones, keeps versions."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self.versions: list[tuple[Any, str]] = []

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _resolve(module, name)
        except _Disallowed:
            label = f"{module}.{name}"
            if label not in self.refused:
                self.refused.append(label)
            if len(self.refused) >= 20:  # enough to name; no point reading on
                raise
            return _Refused

    def check_build(self, inst: Any, state: Any) -> None:
        """Refuse BUILD on classes, functions and modules; note ``_sklearn_version`` before it is popped."""
        if inst is _Refused or isinstance(inst, _Refused):
            return
        if isinstance(inst, (type, types.ModuleType)) or inspect.isroutine(inst) or _is_ufunc(inst):
            label = (
                f"setting attributes of {getattr(inst, '__module__', '?')}.{getattr(inst, '__name__', '?')}"
            )
            if label not in self.refused:
                self.refused.append(label)
            raise _Disallowed
        if isinstance(state, dict):
            version = state.get("_sklearn_version")
            if isinstance(version, str):
                self.versions.append((inst, version))


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
        """What both unpicklers share: globals through the gate, no persistent ids, BUILD checked."""

        _gate: _Gate

        def find_class(self, module: str, name: str) -> Any:
            return self._gate.find_class(*_python3_names(self.proto, module, name))

        def persistent_load(self, pid: Any) -> Any:
            raise pickle.UnpicklingError("persistent ids are not allowed in a model file")

        def gated_build(self, build: Any) -> None:
            self._gate.check_build(self.stack[-2], self.stack[-1])
            if isinstance(self.stack[-2], _Refused) or self.stack[-2] is _Refused:
                self.stack.pop()
                return
            build(self)

    class HardenedUnpickler(
        GateMixin, pickle._Unpickler
    ):  # the pure-Python unpickler: its BUILD can be checked
        dispatch = pickle._Unpickler.dispatch.copy()

        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__(file)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(pickle._Unpickler.load_build)

        dispatch[pickle.BUILD[0]] = load_build

    class HardenedNumpyUnpickler(GateMixin, NumpyUnpickler):
        dispatch = NumpyUnpickler.dispatch.copy()

        def __init__(self, file: Any, gate: _Gate) -> None:
            super().__init__("", file, ensure_native_byte_order=True, mmap_mode=None)
            self._gate = gate

        def load_build(self) -> None:
            self.gated_build(NumpyUnpickler.load_build)  # replaces NumpyArrayWrapper by the array it reads

        dispatch[pickle.BUILD[0]] = load_build

    return HardenedUnpickler, HardenedNumpyUnpickler


_UNPICKLERS: tuple[type, type] | None = None
_ARRAY_WRAPPER: type | None = None


def _unpicklers() -> tuple[type, type]:
    global _UNPICKLERS
    if _UNPICKLERS is None:
        _UNPICKLERS = _make_unpicklers()
    return _UNPICKLERS


def _safe_array_wrapper() -> type:
    """joblib's NumpyArrayWrapper, reading object arrays' nested pickle through the same gate."""
    global _ARRAY_WRAPPER
    if _ARRAY_WRAPPER is None:
        from joblib.numpy_pickle import NumpyArrayWrapper
        from joblib.numpy_pickle_utils import _ensure_native_byte_order

        class SafeNumpyArrayWrapper(NumpyArrayWrapper):
            def read_array(self, unpickler: Any, ensure_native_byte_order: bool) -> Any:
                if not self.dtype.hasobject:
                    return super().read_array(unpickler, ensure_native_byte_order)
                # joblib's own code reads this nested stream with a plain Unpickler whose BUILD is
                # unchecked; ours checks it and shares the outer file's gate.
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


def _record_versions(gate: _Gate) -> None:
    for inst, version in gate.versions:
        with contextlib.suppress(TypeError):  # objects without weak-reference support keep no record
            _SAVED_VERSIONS[inst] = version


def _refusal(path: Path, refused: list[str]) -> UnsafeModelError:
    what = ", ".join(refused)
    noun = "which is" if len(refused) == 1 else "which are"
    hint = _FIX_HINT
    if any(label.startswith("scipy.stats.") for label in refused):
        hint = (
            "a fitted RandomizedSearchCV keeps scipy.stats distributions: save its best_estimator_ instead; "
            + hint
        )
    return UnsafeModelError(
        f"{path.name} refers to {what}, {noun} not allowed in a model file: {hint}", code="unsafe_model"
    )


def _corrupt(path: Path, exc: BaseException) -> ModelError:
    detail = f"{type(exc).__name__}: {exc}"[:300]
    return ModelError(
        f"{path.name} is not a readable model file ({detail}); save the fitted classifier with "
        "joblib.dump, pickle.dump or skops.io.dump and upload that file unchanged",
        code="corrupt_model",
    )


def _load_pickle(path: Path, max_bytes: int | None) -> Any:
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    gate = _Gate()
    with open(path, "rb") as handle:
        try:
            with _validate_fileobject_and_memmap(handle, str(path), None) as (fileobj, _):
                if isinstance(fileobj, str):  # joblib < 0.10 "zfile" format: arrays in companion files
                    raise ModelError(
                        f"{path.name} was saved by joblib older than 0.10, a format that is not supported; "
                        "re-save it with a current joblib.dump",
                        code="unsupported_model_format",
                    )
                unpickler = _unpicklers()[1](_LimitedReader(fileobj, max_bytes, path.name), gate)
                model = unpickler.load()
        except MiaError:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise
        except _Disallowed:
            raise _refusal(path, gate.refused) from None
        except MemoryError as exc:
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise LimitError(
                f"{path.name} needs more memory than is available to load", code="model_too_large"
            ) from exc
        except Exception as exc:  # noqa: BLE001 - any failure of a hostile stream is a bad file, not a crash
            if gate.refused:
                raise _refusal(path, gate.refused) from None
            raise _corrupt(path, exc) from exc
    if gate.refused:
        raise _refusal(path, gate.refused)
    _record_versions(gate)
    return model


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


def _load_skops(path: Path, max_bytes: int | None) -> Any:
    import skops.io as sio

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("schema.json")
            total = sum(member.file_size for member in archive.infolist())
            if max_bytes is not None and total > max_bytes:
                raise LimitError(
                    f"{path.name} expands to more than the allowed model size", code="model_too_large"
                )
            schema = json.loads(archive.read(info))
    except MiaError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc) from exc
    found: set[tuple[str, str]] = set()
    _skops_types(schema, found)
    refused = sorted(f"{module}.{name}" for module, name in found if not _skops_type_allowed(module, name))
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc) from exc
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
    except MemoryError as exc:
        raise LimitError(
            f"{path.name} needs more memory than is available to load", code="model_too_large"
        ) from exc
    except Exception as exc:  # noqa: BLE001
        raise _corrupt(path, exc) from exc
    version = _skops_saved_version(schema)
    if version is not None:
        with contextlib.suppress(TypeError):
            _SAVED_VERSIONS[model] = version
    return model


def _skops_saved_version(schema: Any) -> str | None:
    """The ``_sklearn_version`` stored in the top-level object's state of a skops schema."""
    content = schema.get("content") if isinstance(schema, dict) else None
    if isinstance(content, dict):
        content = content.get("content", content)
        entry = content.get("_sklearn_version") if isinstance(content, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            with contextlib.suppress(ValueError):
                version = json.loads(entry["content"])  # a JsonNode holds the JSON text of the value
                if isinstance(version, str):
                    return version
    return None


def _damaged_tree(path: Path, owner: Any, detail: str) -> ModelError:
    return ModelError(
        f"{path.name} holds a {type(owner).__name__} whose tree structure is damaged ({detail}); predicting with "
        "it would read outside its arrays. Re-save the model from the original fitted object",
        code="corrupt_model",
    )


def _check_child_links(path: Path, owner: Any, left: np.ndarray, right: np.ndarray, leaf: np.ndarray) -> None:
    """Every internal node's children come after it and exist (scikit-learn numbers nodes depth first)."""
    nodes = np.arange(len(left))
    internal = ~leaf
    for child in (left, right):
        if ((child[internal] <= nodes[internal]) | (child[internal] >= len(left))).any():
            raise _damaged_tree(path, owner, "a child index out of range")


def _check_tree_structure(path: Path, obj: Any) -> None:
    """Refuse decision trees and histogram-boosting predictors whose node arrays point out of range.

    Their prediction loops are native code that trusts these indices; a damaged or crafted pickle of an
    allowlisted class would otherwise crash the process (found by fuzzing) or read foreign memory.
    """
    tree_module = sys.modules.get("sklearn.tree")
    if tree_module is not None and isinstance(obj, tree_module.BaseDecisionTree) and hasattr(obj, "tree_"):
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
    hist_module = sys.modules.get("sklearn.ensemble._hist_gradient_boosting.gradient_boosting")
    if (
        hist_module is not None
        and isinstance(obj, hist_module.BaseHistGradientBoosting)
        and hasattr(obj, "_predictors")
    ):
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


def _check_loaded(path: Path, model: Any) -> None:
    """Refuse allowlisted objects configured to read files named by the data they are given, and trees
    whose node arrays point out of range."""
    text = sys.modules.get("sklearn.feature_extraction.text")
    mixin = text._VectorizerMixin if text is not None else ()
    seen: set[int] = set()
    todo = [model]
    while todo and len(seen) < 200_000:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, mixin) and getattr(obj, "input", "content") != "content":
            raise UnsafeModelError(
                f"{path.name} holds a {type(obj).__name__} with input={obj.input!r}, which would read files "
                "named by the data; re-save it with input='content'",
                code="unsafe_model",
            )
        _check_tree_structure(path, obj)
        if isinstance(obj, (list, tuple, set, frozenset)):
            todo.extend(obj)
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            todo.extend(obj.ravel().tolist())
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        elif type(obj).__module__.startswith("sklearn.") and hasattr(obj, "__dict__"):
            todo.extend(vars(obj).values())


def load_model(path: Path, *, max_bytes: int | None = DEFAULT_MAX_MODEL_BYTES) -> Any:
    """Load a classifier from a model file, refusing any code the allowlist does not admit.

    Parameters
    ----------
    path:
        A ``.pkl`` / ``.pickle`` / ``.joblib`` file (plain pickle or joblib format, compressed or not) or
        a ``.skops`` file. The format is found from the content, not the name.
    max_bytes:
        Most bytes the file may expand to when read (after decompression); ``None`` for no limit.

    Returns
    -------
    The estimator; it has ``predict_proba``.

    Raises
    ------
    UnsafeModelError
        ``unsafe_model``: the file names globals outside the allowlist (named in the message); nothing
        it refers to was imported or run.
    ModelError
        ``missing_model``, ``corrupt_model`` (unreadable, truncated, not a pickle),
        ``unsupported_model_format``, ``incompatible_model`` (saved with a scikit-learn that had other
        modules), ``not_a_classifier`` (no ``predict_proba``).
    LimitError
        ``model_too_large``: more than ``max_bytes`` when read, or more memory than is available.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(
            f"model file {path.name} does not exist or is not a file; add it to the bundle",
            code="missing_model",
        )
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise ModelError(
            f"{path.name} is empty; save the fitted classifier into it with joblib.dump", code="corrupt_model"
        )
    is_zip = head == b"PK\x03\x04"  # skops files are zip archives; pickles never start like that
    model = _load_skops(path, max_bytes) if is_zip else _load_pickle(path, max_bytes)
    _check_loaded(path, model)
    if not hasattr(model, "predict_proba"):
        hint = " (for SVC, fit it with probability=True)" if type(model).__name__ in ("SVC", "NuSVC") else ""
        raise ModelError(
            f"{path.name} holds a {type(model).__module__}.{type(model).__name__}, which has no predict_proba"
            f"{hint}; the audit needs a fitted classifier that gives class probabilities",
            code="not_a_classifier",
        )
    return model


def saved_sklearn_version(model: Any) -> str | None:
    """The scikit-learn version ``model`` was saved with, or ``None`` when unknown.

    Parameters
    ----------
    model:
        An estimator returned by :func:`load_model`. scikit-learn writes ``_sklearn_version`` into each
        estimator's pickled state and removes it when loading, so :func:`load_model` notes it; the
        top-level estimator is consulted first, then, for a ``Pipeline``, its steps in order.
    """
    candidates = [model]
    steps = getattr(model, "steps", None)
    if isinstance(steps, list):
        candidates += [step[1] for step in steps if isinstance(step, tuple) and len(step) == 2]
    for candidate in candidates:
        try:
            version = _SAVED_VERSIONS.get(candidate)
        except TypeError:
            version = None
        if version is None:
            version = getattr(candidate, "__dict__", {}).get("_sklearn_version")
        if isinstance(version, str):
            return version
    return None
